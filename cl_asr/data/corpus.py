"""Synthetic speech corpora as Hugging Face datasets, cached on disk keyed by everything that made them.

Columns: id, audio {array (float32, 16 kHz), sampling_rate}, text, language, speaker, duration.
espeak-ng output is not bit-identical between calls in one process (FACTS §3), so a corpus is synthesised
once and then always read back from the cache: runs are reproducible and cheap to repeat.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .tts import SAMPLE_RATE, Voice, synthesize

CORPUS_FORMAT_VERSION = 1  # bump when the synthesis recipe changes, to invalidate old caches


@dataclass(frozen=True)
class CorpusSpec:
    name: str  # human-readable, e.g. "languages/eo/train"
    language: str  # ISO code written into the `language` column
    sentences: tuple[str, ...]
    voices: tuple[Voice, ...]  # utterance i is spoken by voices[i % len(voices)]
    silence_seconds: float = 0.3  # before and after the speech: Whisper drops words that start at sample 0

    def key(self) -> str:
        import espeakng_loader

        payload = {
            "format": CORPUS_FORMAT_VERSION,
            "espeak": Path(espeakng_loader.get_library_path()).resolve().name,
            **{k: v for k, v in asdict(self).items() if k != "name"},
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:20]


def corpus_cache_dir() -> Path:
    from ..backbones import cache_dir

    return cache_dir() / "corpora"


def _features():
    import datasets

    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "audio": {"array": datasets.List(datasets.Value("float32")), "sampling_rate": datasets.Value("int32")},
            "text": datasets.Value("string"),
            "language": datasets.Value("string"),
            "speaker": datasets.Value("string"),
            "duration": datasets.Value("float32"),
        }
    )


def synthesize_corpus(spec: CorpusSpec, progress: bool = True):
    """Return the corpus as a `datasets.Dataset` (numpy-formatted audio), synthesising it on first use."""
    import datasets

    if not spec.sentences:
        raise ValueError(f"corpus {spec.name}: no sentences")
    if not spec.voices:
        raise ValueError(f"corpus {spec.name}: no voices")
    target = corpus_cache_dir() / spec.key()
    if not (target / "dataset_info.json").exists():
        pad = np.zeros(int(round(spec.silence_seconds * SAMPLE_RATE)), dtype=np.float32)
        rows = {k: [] for k in ("id", "audio", "text", "language", "speaker", "duration")}
        it = tqdm(spec.sentences, desc=f"synthesising {spec.name}", unit="utt", disable=not progress, leave=False)
        for i, text in enumerate(it):
            voice = spec.voices[i % len(spec.voices)]
            audio = np.concatenate([pad, synthesize(text, voice), pad])
            rows["id"].append(f"{spec.name}/{i:05d}")
            rows["audio"].append({"array": audio, "sampling_rate": SAMPLE_RATE})
            rows["text"].append(text)
            rows["language"].append(spec.language)
            rows["speaker"].append(voice.speaker_id)
            rows["duration"].append(len(audio) / SAMPLE_RATE)
        ds = datasets.Dataset.from_dict(rows, features=_features())
        datasets.disable_progress_bars()  # our own bar already showed the work; saving is instant
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            ds.save_to_disk(str(tmp))
            (tmp / "SPEC.json").write_text(json.dumps({"name": spec.name, **asdict(spec)}, ensure_ascii=False))
            try:
                os.replace(tmp, target)  # atomic: a crash never leaves a half-written corpus
            except OSError:  # another process finished the same corpus first
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    ds = datasets.load_from_disk(str(target))
    return ds.with_format("numpy", columns=["audio"], output_all_columns=True)
