"""Shared set-up of the speed benchmarks: the real whisper-base at the quick profile's settings, synthetic
speech, and the ratio table printed (and written) at the end of the session.

Run: `pytest benchmarks` (see README, "Speed"). Not part of the default test run (testpaths = tests).
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest
import torch

WINDOW = 10  # seconds, the quick profile's encoder window
RATIOS: dict[str, dict] = {}  # name -> {"reference": s, "optimised": s, "units": n, ...}
FIGURES: dict[str, str] = {}  # name -> a measured figure that is not a ratio (matmul rate, utilisation, checks)


@pytest.fixture(scope="session")
def whisper_base():
    from cl_asr.backbones import load_backbone
    from cl_asr.backbones.window import set_encoder_window, window_feature_extractor

    backbone = load_backbone("offline:whisper-base")
    set_encoder_window(backbone.model, WINDOW)
    backbone.feature_extractor = window_feature_extractor(backbone.feature_extractor, WINDOW)
    backbone.model.eval()
    return backbone


@pytest.fixture(scope="session")
def speech():
    """32 Esperanto utterances (espeak-ng, cached like every synthetic corpus)."""
    from cl_asr.data.corpus import CorpusSpec, synthesize_corpus
    from cl_asr.data.text_bank import load_sentences
    from cl_asr.data.tts import Voice

    sentences = tuple(load_sentences("eo")[:32])
    voices = (Voice("eo", "m1", 140, 45), Voice("eo", "f2", 150, 60))
    return synthesize_corpus(CorpusSpec("bench/eo", "eo", sentences, voices), progress=False)


@pytest.fixture(scope="session")
def train_speech(speech):
    """16 of them for training: 12 steps of batch 4 over 3 epochs."""
    return [speech[i] for i in range(16)]


def record(name: str, reference_s: float, optimised_s: float, units: int, unit: str, target: float | None):
    RATIOS[name] = {"reference_s": reference_s, "optimised_s": optimised_s, "units": units, "unit": unit,
                    "reference_per_s": units / reference_s, "optimised_per_s": units / optimised_s,
                    "ratio": reference_s / optimised_s, "target": target}


def record_figure(name: str, value: str):
    FIGURES[name] = value


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), {gpu}"


def pytest_terminal_summary(terminalreporter):
    if not RATIOS and not FIGURES:
        return
    lines = [f"Speed ratios measured in this run on: {machine()}", "",
             "| benchmark | peer | suite | speed-up | target |", "|---|---|---|---|---|"]
    for name, r in RATIOS.items():
        target = "" if r["target"] is None else (f">= {r['target']:g}x " + ("met" if r["ratio"] >= r["target"]
                                                                            else "NOT met"))
        lines.append(f"| {name} | {r['reference_per_s']:.2f} {r['unit']}/s | {r['optimised_per_s']:.2f} "
                     f"{r['unit']}/s | {r['ratio']:.2f}x | {target} |")
    if FIGURES:
        lines += ["", "| measured in the same run | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in FIGURES.items()]
    text = "\n".join(lines)
    terminalreporter.write_sep("=", "speed ratios")
    terminalreporter.write_line(text)
    out = os.environ.get("CL_ASR_BENCH_OUT")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n", encoding="utf-8")
        Path(out).with_suffix(".json").write_text(json.dumps({"machine": machine(), "ratios": RATIOS,
                                                                       "figures": FIGURES}, indent=1))
