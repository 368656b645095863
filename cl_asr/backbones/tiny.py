"""A tiny random Whisper for unit tests and the `micro` profile: real tokenizer, random weights, ~3.5M params.

The vocabulary is the real multilingual one (so language tokens, tokenisation and decoding prefixes behave
exactly as in whisper-base), while d_model 64 and 2+2 layers keep a forward pass in milliseconds.
"""
from __future__ import annotations

import torch


def tiny_whisper(seed: int = 0):
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from .offline import generation_config, whisper_tokenizer

    tokenizer = whisper_tokenizer()
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,  # the encoder insists on 3000 mel frames = 1500 positions
        max_target_positions=448,
        decoder_start_token_id=50258,
        pad_token_id=50257,
        bos_token_id=50257,
        eos_token_id=50257,
        begin_suppress_tokens=[220, 50257],
        suppress_tokens=[],
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(config)
    model.generation_config = generation_config(config, tokenizer)
    return model, tokenizer, WhisperFeatureExtractor(feature_size=80)
