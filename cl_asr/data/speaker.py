"""Speaker embeddings for target-speaker ASR: resemblyzer's pretrained d-vector encoder (256 dimensions),
shipped inside its PyPI wheel, so nothing is downloaded (docs/whisper.md, "Speaker embeddings offline")."""
from __future__ import annotations

import threading
import warnings
from functools import lru_cache

import numpy as np

EMBEDDING_DIM = 256
_lock = threading.Lock()


@lru_cache(maxsize=1)
def _encoder():
    with warnings.catch_warnings():  # webrtcvad imports pkg_resources, which warns that it is deprecated
        warnings.simplefilter("ignore")
        from resemblyzer import VoiceEncoder

    return VoiceEncoder(device="cpu", verbose=False)


def speaker_embedding(audio: np.ndarray, sampling_rate: int = 16_000) -> np.ndarray:
    """L2-normalised d-vector of one utterance (float32, shape (256,))."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from resemblyzer import preprocess_wav

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or len(audio) < sampling_rate // 4:
        raise ValueError(f"speaker enrolment needs mono audio of at least 0.25 s, got shape {audio.shape}")
    import torch

    threads = torch.get_num_threads()
    with _lock:  # one encoder, used from one thread at a time
        # A small LSTM: one thread is fastest, and with two it took ~4 s instead of 0.14 s on a busy 2-core CPU.
        torch.set_num_threads(1)
        try:
            wav = preprocess_wav(audio, source_sr=sampling_rate)  # volume-normalised, long silences trimmed
            if len(wav) < sampling_rate // 4:  # trimming removed almost everything: embed the raw audio instead
                wav = audio
            return _encoder().embed_utterance(wav).astype(np.float32)
        finally:
            torch.set_num_threads(threads)
