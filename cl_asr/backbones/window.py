"""Encoder window truncation: an explicit speed setting, never a silent default.

Whisper's encoder always sees 30 s (3000 mel frames, 1500 positions). Short utterances are mostly padding,
so a shorter window (slice the positional embeddings AND set the shared `config.max_source_positions`,
which the encoder checks and `generate` uses to stay in short-form mode) makes every step several times
faster. It changes what the model sees, so it costs accuracy on some inputs (10 s raised zero-shot English
WER from 0.05 to 0.12 on whisper-base; 8 s broke English; docs/whisper.md, "Whisper inside transformers 5.x:
pitfalls"); runs record it and reports print it.
"""
from __future__ import annotations

import torch
from torch import nn

FULL_WINDOW_SECONDS = 30.0
FRAMES_PER_SECOND = 100  # mel frames; the encoder halves them into positions


def set_encoder_window(model: nn.Module, seconds: float) -> None:
    frames = int(round(seconds * FRAMES_PER_SECOND))
    positions = frames // 2
    full = model.model.encoder.embed_positions
    if frames % 2 or not 0 < positions <= full.num_embeddings:
        raise ValueError(
            f"encoder_window_seconds={seconds}: must be a multiple of 0.02 s between 0.02 and "
            f"{full.num_embeddings / 50:g} s"
        )
    if positions == full.num_embeddings:
        return
    emb = nn.Embedding(positions, full.embedding_dim, device=full.weight.device, dtype=full.weight.dtype)
    with torch.no_grad():
        emb.weight.copy_(full.weight[:positions])
    emb.requires_grad_(False)
    model.model.encoder.embed_positions = emb
    model.config.max_source_positions = positions  # shared by encoder (length check) and generate()


def window_feature_extractor(feature_extractor, seconds: float):
    """A feature extractor that pads/truncates to `seconds` instead of 30 s."""
    if seconds == feature_extractor.chunk_length:
        return feature_extractor
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(
        feature_size=feature_extractor.feature_size,
        sampling_rate=feature_extractor.sampling_rate,
        hop_length=feature_extractor.hop_length,
        chunk_length=int(seconds) if float(seconds).is_integer() else seconds,
        n_fft=feature_extractor.n_fft,
    )
    # padding lengths must be whole numbers of samples and frames (numpy.pad refuses floats)
    fe.n_samples = int(round(seconds * fe.sampling_rate))
    fe.nb_max_frames = fe.n_samples // fe.hop_length
    return fe
