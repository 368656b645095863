"""LibriSpeech-format directories (OpenSLR 12): one subset such as LibriSpeech/test-clean, {SPK}/{CHAPTER}/
*.flac + {SPK}-{CHAPTER}.trans.txt. Audio: FLAC only, as LibriSpeech ships it. The single-talker sources of the
LibriMix-style two-talker mixtures."""
from __future__ import annotations

import re

from .common import CorpusError, Entry, MissingDataError, build_dataset, expand_path

READS = "FLAC only ({SPK}-{CHAPTER}-{UTT}.flac next to {SPK}-{CHAPTER}.trans.txt, as LibriSpeech ships it)"


def load_librispeech_dir(root: str, limit: int | None = None, max_seconds: float | None = None,
                         where: dict[str, str] | None = None):
    """A LibriSpeech-format directory (one subset, e.g. LibriSpeech/test-clean): {root}/{SPK}/{CHAPTER}/
    {SPK}-{CHAPTER}-{UTT}.flac and {SPK}-{CHAPTER}.trans.txt ("SPK-CHAPTER-UTT TEXT" lines). language "en",
    speaker = the LibriSpeech speaker id. Two-talker mixtures are made from these with cl_asr.data.mixing.

    Audio formats: FLAC only (`{UTT}.flac`, any rate or channel count: resampled / down-mixed). A directory
    holding the utterances as .wav (or another format) instead is refused saying so, not as missing files.
    Everything below `root` is read, so `root` is one split: a scenario reading several gives "{split}" in it."""
    base = expand_path(root) if root else None
    how = ("download a subset (e.g. test-clean.tar.gz) from https://www.openslr.org/12/, extract it and pass the "
           "subset folder (LibriSpeech/test-clean)")
    if base is None or not base.is_dir():
        raise MissingDataError(f"LibriSpeech directory {base} not found. To get it, {how}.")
    transcripts = sorted(base.rglob("*.trans.txt"))
    if not transcripts:
        raise MissingDataError(f"{base}: no *.trans.txt transcript files below it (not a LibriSpeech-format "
                               f"directory). To get one, {how}.")
    entries = []
    for tr in transcripts:
        for n, line in enumerate(tr.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utt, _, text = line.strip().partition(" ")
            if not re.fullmatch(r"\d+-\d+-\d+", utt):
                raise CorpusError(f"{tr} line {n}: expected 'SPEAKER-CHAPTER-UTT TEXT', got {line[:60]!r}")
            path = tr.parent / f"{utt}.flac"
            entries.append(Entry(f"librispeech/{utt}", text, "en", utt.split("-")[0],
                                 f"{path} (listed in {tr} line {n})", path))
    return build_dataset(f"LibriSpeech {base.name}", entries, limit, max_seconds, where, reads=READS)
