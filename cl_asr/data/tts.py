"""Speech synthesis with espeak-ng, from the PyPI package espeakng-loader (no system install needed).

A minimal ctypes binding: espeak_Initialize in synchronous mode, a callback that collects the int16 samples,
SetVoiceByName / SetParameter / Synth. espeak-ng is not thread-safe (concurrent calls crash the process
with a double free; docs/whisper.md, "Synthetic speech: espeak-ng"), so every call goes through one
module-level lock. Output is 22,050 Hz; we resample to 16 kHz.
Some voice variants (f2 and f3: their `breath` line) mix in noise from espeak-ng's random generator, which it
seeds from the clock: the same text gave different audio on every synthesis, so a corpus made on another
machine differed and a run could not be resumed there. Each synthesis therefore seeds that generator
(espeak_ng_SetRandSeed) from the text and voice: the same (text, voice) gives the same audio in any process and
in any order, and different utterances still get different noise.
"""
from __future__ import annotations

import ctypes
import threading
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

SAMPLE_RATE = 16_000
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_EE_OK = 0

_lock = threading.Lock()
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class SynthesisError(RuntimeError):
    pass


@dataclass(frozen=True)
class Voice:
    """A synthetic speaker: an espeak-ng language voice, an optional variant, speaking rate and pitch."""

    language: str  # espeak-ng voice name, e.g. "en", "de", "eo", "ga"
    variant: str = ""  # a file under espeak-ng-data/voices/!v, e.g. "m3", "f2", "klatt"
    rate: int = 160  # words per minute (espeak default 175)
    pitch: int = 50  # 0..100

    @property
    def espeak_name(self) -> str:
        return f"{self.language}+{self.variant}" if self.variant else self.language

    @property
    def speaker_id(self) -> str:
        return f"{self.espeak_name}@r{self.rate}p{self.pitch}"


class _Engine:
    def __init__(self) -> None:
        import espeakng_loader

        self.data_path = Path(espeakng_loader.get_data_path())
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.lib.espeak_ng_SetRandSeed.restype = None
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        self.native_rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(), 0
        )
        if self.native_rate <= 0:
            raise SynthesisError(f"espeak_Initialize failed with data path {self.data_path}")
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, _events):
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _CALLBACK(collect)  # keep a reference: the C side holds only the pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    def synthesize(self, text: str, voice: Voice) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(voice.espeak_name.encode()) != _EE_OK:
            raise SynthesisError(f"espeak-ng has no voice {voice.espeak_name!r}")
        # Rate and pitch only after choosing the voice: choosing a voice resets them.
        self.lib.espeak_SetParameter(_ESPEAK_RATE, int(voice.rate), 0)
        self.lib.espeak_SetParameter(_ESPEAK_PITCH, int(voice.pitch), 0)
        self.lib.espeak_ng_SetRandSeed(noise_seed(text, voice))
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        status = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise SynthesisError(f"espeak_Synth failed (status {status}) for {voice.speaker_id}: {text!r}")
        self.lib.espeak_Synchronize()
        if not self._chunks:
            raise SynthesisError(f"espeak-ng produced no audio for {voice.speaker_id}: {text!r}")
        return np.concatenate(self._chunks)


def noise_seed(text: str, voice: Voice) -> int:
    """The seed of espeak-ng's noise for one utterance: a function of what is said and by whom, nothing else."""
    return zlib.crc32(f"{voice.speaker_id}\n{text}".encode())


@lru_cache(maxsize=1)
def _engine() -> _Engine:
    return _Engine()


def espeak_voice_variants() -> list[str]:
    return sorted(p.name for p in (_engine().data_path / "voices" / "!v").iterdir())


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """Speak `text` with `voice`; returns float32 mono audio at 16 kHz in [-1, 1]."""
    if not text.strip():
        raise SynthesisError("cannot synthesise empty text")
    with _lock:
        engine = _engine()
        pcm = engine.synthesize(text, voice)
        native = engine.native_rate
    audio = pcm.astype(np.float32) / 32768.0
    if native != SAMPLE_RATE:
        from math import gcd

        g = gcd(SAMPLE_RATE, native)
        audio = resample_poly(audio, SAMPLE_RATE // g, native // g).astype(np.float32)
    return np.clip(audio, -1.0, 1.0)
