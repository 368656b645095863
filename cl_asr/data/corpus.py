"""Synthetic speech corpora as Hugging Face datasets, cached on disk keyed by everything that made them.

Columns: id, audio {array (float32, 16 kHz), sampling_rate}, text, language, speaker, duration.
espeak-ng's output depends on the history of synthesis calls in its process (the same text and voice give a
different waveform as the second call than as the first; resetting its random seed or re-initialising it does
not help). So each corpus is synthesised in a fresh process of its own, which makes its audio a function of its
spec alone, whatever was synthesised or cached before; it is then cached and read back.

The cache is keyed by content (everything in the spec but its name), so scenarios that ask for the same audio
share one cached corpus (e.g. the languages and code_switching scenarios' English, German and Spanish test sets).
Utterance ids are the asking spec's name and the utterance's index, set on every read: they depend on the
scenario and the utterance only, never on which scenario first wrote the cache.
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

CORPUS_FORMAT_VERSION = 3  # bump when the synthesis recipe changes, to invalidate old caches
# 2: each corpus synthesised in a fresh process (version 1 audio depended on earlier calls in the process)
# 3: espeak-ng's noise seeded per utterance (tts.noise_seed): f2/f3 audio the same on every machine


# espeak-ng voice for a language code where the two differ
ESPEAK_VOICE = {"zh": "cmn"}


@dataclass(frozen=True)
class CorpusSpec:
    name: str  # human-readable, e.g. "languages/eo/train"
    language: str  # code written into the `language` column ("es-en" for a code-switched corpus)
    sentences: tuple[str, ...]
    voices: tuple[Voice, ...]  # utterance i is spoken by voices[i % len(voices)]
    silence_seconds: float = 0.3  # before and after the speech: Whisper drops words that start at sample 0
    # Code-switching: per sentence, its (language, text) segments, each spoken by the utterance's voice
    # variant in that language's espeak-ng voice and joined by `segment_gap_seconds` of silence.
    segments: tuple[tuple[tuple[str, str], ...], ...] | None = None
    segment_gap_seconds: float = 0.08

    def key(self) -> str:
        import espeakng_loader

        fields = asdict(self)
        if self.segments is None:  # corpora from before code-switching keep their cache keys
            fields.pop("segments"), fields.pop("segment_gap_seconds")
        payload = {
            "format": CORPUS_FORMAT_VERSION,
            "espeak": Path(espeakng_loader.get_library_path()).resolve().name,
            **{k: v for k, v in fields.items() if k != "name"},
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:20]


def corpus_cache_dir() -> Path:
    from ..backbones import cache_dir

    return cache_dir() / "corpora"


def dataset_features(extra: dict | None = None):
    """The datasets schema of an utterance table (id, audio, text, language, ...), plus `extra` columns."""
    import datasets

    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "audio": {"array": datasets.List(datasets.Value("float32")), "sampling_rate": datasets.Value("int32")},
            "text": datasets.Value("string"),
            "language": datasets.Value("string"),
            "speaker": datasets.Value("string"),
            "duration": datasets.Value("float32"),
            **(extra or {}),
        }
    )


# An item is spoken as its parts, in order, joined by `gap` seconds of silence (one part unless code-switched).
SpeechItem = tuple[tuple[tuple[str, Voice], ...], float]


def _speak_all(items: list) -> list[np.ndarray]:
    out = []
    for item in items:
        if isinstance(item[0], str):  # (text, voice)
            out.append(synthesize(*item))
            continue
        parts, gap = item
        pad = np.zeros(int(round(gap * SAMPLE_RATE)), dtype=np.float32)
        pieces = []
        for i, (text, voice) in enumerate(parts):
            pieces += ([pad] if i else []) + [synthesize(text, voice)]
        out.append(np.concatenate(pieces))
    return out


def speak_in_fresh_process(items: list) -> list[np.ndarray]:
    """Synthesise `items` ((text, voice) pairs or SpeechItems) in order in a new process (spawned, so
    espeak-ng starts from its initial state)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_speak_all, items).result()


def synthesize_corpus(spec: CorpusSpec, progress: bool = True):
    """Return the corpus as a `datasets.Dataset` (numpy-formatted audio), synthesising it on first use."""
    import datasets

    if not spec.sentences:
        raise ValueError(f"corpus {spec.name}: no sentences")
    if not spec.voices:
        raise ValueError(f"corpus {spec.name}: no voices")
    blank = [i for i, text in enumerate(spec.sentences) if not str(text).strip()]
    if blank:
        raise ValueError(f"corpus {spec.name}: sentence {blank[0]} is empty or whitespace-only "
                         f"({len(blank)} such of {len(spec.sentences)}): there is nothing to transcribe")
    target = corpus_cache_dir() / spec.key()
    if not (target / "dataset_info.json").exists():
        pad = np.zeros(int(round(spec.silence_seconds * SAMPLE_RATE)), dtype=np.float32)
        rows = {k: [] for k in ("id", "audio", "text", "language", "speaker", "duration")}
        items = [(text, spec.voices[i % len(spec.voices)]) for i, text in enumerate(spec.sentences)]
        speak = items
        if spec.segments is not None:
            if len(spec.segments) != len(spec.sentences):
                raise ValueError(f"corpus {spec.name}: {len(spec.segments)} segment lists for "
                                 f"{len(spec.sentences)} sentences")
            rows["segments"] = [json.dumps(seg, ensure_ascii=False) for seg in spec.segments]
            speak = [(tuple((text, Voice(ESPEAK_VOICE.get(lang, lang), v.variant, v.rate, v.pitch))
                            for lang, text in seg), spec.segment_gap_seconds)
                     for seg, (_, v) in zip(spec.segments, items)]
        with tqdm(total=len(items), desc=f"synthesising {spec.name}", unit="utt", disable=not progress,
                  leave=False) as bar:
            speech = speak_in_fresh_process(speak)
            bar.update(len(items))
        for i, ((text, voice), spoken) in enumerate(zip(items, speech)):
            audio = np.concatenate([pad, spoken, pad])
            rows["id"].append(f"{spec.name}/{i:05d}")  # as corpus_ids; replaced on every read
            rows["audio"].append({"array": audio, "sampling_rate": SAMPLE_RATE})
            rows["text"].append(text)
            rows["language"].append(spec.language)
            rows["speaker"].append(voice.speaker_id)
            rows["duration"].append(len(audio) / SAMPLE_RATE)
        extra = {"segments": datasets.Value("string")} if "segments" in rows else None
        ds = datasets.Dataset.from_dict(rows, features=dataset_features(extra))
        datasets.disable_progress_bars()  # our own bar already showed the work; saving is instant
        tmp = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            ds.save_to_disk(str(tmp))
            (tmp / "SPEC.json").write_text(json.dumps({"name": spec.name, **asdict(spec)}, ensure_ascii=False))
            try:
                os.replace(tmp, target)  # atomic: a crash never leaves a half-written corpus
            except OSError:
                if not (target / "dataset_info.json").exists():
                    raise
                # else another process finished the same corpus first
        except OSError as exc:  # full disk, unwritable cache: say where (the cause may not)
            raise OSError(exc.errno, f"cannot write corpus {spec.name} to the cache {target} "
                          f"({exc.strerror or exc}; set CL_ASR_CACHE to a writable directory with space)") from exc
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
    fingerprint = hashlib.sha256(f"{target.name}\n{spec.name}".encode()).hexdigest()[:16]  # content and ids
    ds = with_ids(datasets.load_from_disk(str(target)), spec.name, fingerprint=fingerprint)
    return ds.with_format("numpy", columns=["audio"], output_all_columns=True)


def corpus_ids(name: str, n: int) -> list[str]:
    """The ids of a corpus's utterances: its name and each utterance's index."""
    return [f"{name}/{i:05d}" for i in range(n)]


def with_ids(ds, name: str, fingerprint: str | None = None):
    """`ds` with its `id` column replaced by corpus_ids(name) (the cached ids are those of whichever spec first
    wrote the corpus). Nothing is decoded: the other columns stay memory-mapped. Columns, their order, the schema
    and the id column's chunks are kept. Done on every read, whatever name the cache was written under, so a set's
    arrow batches, and Scenario.checksums, do not depend on the cache's history; for a corpus of one chunk (up to
    1,000 rows: every profile's) they are also byte for byte those read before ids were set on read."""
    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable, concat_tables

    ids, at, chunks = corpus_ids(name, len(ds)), 0, []
    for chunk in ds.data.column("id").chunks:
        chunks.append(pa.array(ids[at:at + len(chunk)], type=pa.string()))
        at += len(chunk)
    column = InMemoryTable(pa.table({"id": pa.chunked_array(chunks, type=pa.string())}))
    table = concat_tables([column, ds.data.drop(["id"])], axis=1)
    out = datasets.Dataset(table, info=ds.info.copy(), split=ds.split, fingerprint=fingerprint)
    return out if out.column_names == ds.column_names else out.select_columns(ds.column_names)
