"""Overlapped multi-talker mixtures made on the fly (LibriMix-style), for target-speaker ASR (TS-Whisper).

A mixture is the target utterance plus one or more interfering utterances, each shifted so that it covers a
chosen share of the target (the overlap ratio), scaled to a signal-to-interference ratio (SIR) against the
target, optionally with white noise at a signal-to-noise ratio (SNR). Whether an interferer starts before or
after the target is drawn at random, so "transcribe whoever speaks first" is no shortcut; at 0 dB SIR neither is
"transcribe the louder one". Levels are measured as mean power over each utterance's active samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MixSpec:
    overlap: float = 0.5  # share of the target's duration covered by each interferer, in [0, 1]
    sir_db: float = 0.0  # target power over each interferer's power
    noise_snr_db: float | None = None  # None: no noise
    max_seconds: float | None = None  # interferers are cut (never the target) so the mixture fits

    def __post_init__(self):
        if not 0.0 <= self.overlap <= 1.0:
            raise ValueError(f"overlap must be in [0, 1], got {self.overlap}")


def active_power(x: np.ndarray, floor_db: float = -40.0) -> float:
    """Mean power over samples within `floor_db` of the peak (silence padding does not dilute it)."""
    x = np.asarray(x, dtype=np.float64)
    if not len(x) or not np.any(x):
        raise ValueError("cannot measure the level of a silent or empty signal")
    peak = np.max(np.abs(x))
    active = x[np.abs(x) >= peak * 10 ** (floor_db / 20)]
    return float(np.mean(active**2))


def mix(target: np.ndarray, interferers: list[np.ndarray], spec: MixSpec, rng: np.random.Generator,
        sampling_rate: int = 16_000) -> tuple[np.ndarray, dict]:
    """Return (mixture, facts) where facts records each interferer's offset (samples, relative to the target's
    start; negative = starts before it), the realised overlap ratio and the gains applied."""
    target = np.asarray(target, dtype=np.float32)
    p_target = active_power(target)
    t_len = len(target)
    placed = []  # (offset, scaled signal)
    facts = {"offsets": [], "overlap": [], "gains": []}
    for interferer in interferers:
        x = np.asarray(interferer, dtype=np.float32)
        gain = float(np.sqrt(p_target / (active_power(x) * 10 ** (spec.sir_db / 10))))
        covered = int(round(spec.overlap * t_len))
        if rng.random() < 0.5:  # starts before the target, overlapping its first `covered` samples
            offset = covered - len(x)
        else:  # starts inside the target, overlapping its last `covered` samples
            offset = t_len - covered
        placed.append((offset, gain * x))
        ov = max(0, min(t_len, offset + len(x)) - max(0, offset))
        facts["offsets"].append(int(offset))
        facts["overlap"].append(round(ov / t_len, 3))
        facts["gains"].append(round(gain, 4))
    start = min([0] + [o for o, _ in placed])
    end = max([t_len] + [o + len(x) for o, x in placed])
    out = np.zeros(end - start, dtype=np.float64)
    out[-start:-start + t_len] += target
    for o, x in placed:
        out[o - start:o - start + len(x)] += x
    if spec.noise_snr_db is not None:
        noise_power = p_target / 10 ** (spec.noise_snr_db / 10)
        out += rng.normal(0.0, np.sqrt(noise_power), size=out.shape)
    t0 = -start  # where the target starts in `out`
    if spec.max_seconds is not None and len(out) > spec.max_seconds * sampling_rate:
        # Keep the mixture inside the encoder window: crop interferers' outer parts, never the target.
        limit = int(spec.max_seconds * sampling_rate)
        if limit < t_len:
            raise ValueError(f"target of {t_len / sampling_rate:.2f} s is longer than max_seconds={spec.max_seconds}")
        centred = t0 - (limit - t_len) // 2  # target in the middle of the window, then pushed inside `out`
        lo = min(max(centred, 0, t0 + t_len - limit), t0, len(out) - limit)
        out, t0 = out[lo:lo + limit], t0 - lo
        facts["cropped_to_seconds"] = spec.max_seconds
    facts["target_start"] = int(t0)
    peak = np.max(np.abs(out))
    if peak > 0.99:  # rescale rather than clip: clipping would add distortion the clean sources never had
        out *= 0.99 / peak
        facts["rescaled"] = round(float(0.99 / peak), 4)
    return out.astype(np.float32), facts
