"""Multilingual LibriSpeech (MLS, OpenSLR 94): audiobooks in 8 languages. Read from MLS' original layout
({root}/mls_{language}[_opus]/{split}/transcripts.txt + audio/{SPK}/{BOOK}/*.flac|.opus) or, without root, from
the Hugging Face hub (facebook/multilingual_librispeech, no English)."""
from __future__ import annotations

from pathlib import Path

from .common import (
    CorpusError, Entry, MissingDataError, arrow_entries, build_dataset, expand_path, hub_source, read_tsv,
)

MLS_LANGUAGES = {"english": "en", "german": "de", "dutch": "nl", "french": "fr", "spanish": "es", "italian": "it",
                 "portuguese": "pt", "polish": "pl"}
MLS_URL = "https://www.openslr.org/94/"


def load_mls(language: str, split: str, root: str | None = None, limit: int | None = None,
             max_seconds: float | None = None, where: dict[str, str] | None = None):
    """Multilingual LibriSpeech `language` ("german" or "de") `split` (train / dev / test).

    root given: MLS' original layout {root}/mls_{language}/{split}/transcripts.txt (lines "SPK_BOOK_UTT<TAB>text")
    with audio at {split}/audio/{SPK}/{BOOK}/{SPK}_{BOOK}_{UTT}.flac (or mls_{language}_opus/ with .opus).
    root None: the hub copy facebook/multilingual_librispeech (config = language name; no English there).
    Audio formats: FLAC or Opus files (MLS' two releases); the hub copy's embedded audio, any format libsndfile
    decodes. A transcript line whose audio is there only in another format is refused saying so."""
    by_code = {v: k for k, v in MLS_LANGUAGES.items()}
    name = by_code.get(language, language)
    if name not in MLS_LANGUAGES:
        raise ValueError(f"MLS has no language {language!r}; it has {', '.join(MLS_LANGUAGES)} (or their ISO codes)")
    code = MLS_LANGUAGES[name]
    corpus = f"MLS {name}/{split}"
    prefix = f"mls/{name}/{split}"
    how = (f"download mls_{name}.tar.gz (FLAC) or mls_{name}_opus.tar.gz from {MLS_URL}, extract it into DIR "
           f"and pass root=DIR")
    if root is None or str(root).strip() == "":
        if name == "english":
            raise MissingDataError(f"{corpus}: facebook/multilingual_librispeech on the hub has no English; "
                                   f"{how}.")

        def make(row: dict) -> Entry:
            utt = row.get("id") or Path(str(row.get("file") or row.get("original_path") or "")).stem
            spk = row.get("speaker_id")
            spk = str(spk) if spk is not None else str(utt).split("_")[0]
            return Entry(f"{prefix}/{utt}", row.get("transcript") or "", code, spk, "", None)

        src = hub_source("facebook/multilingual_librispeech", name, split, None, corpus, how)
        entries = arrow_entries([src], ["audio", "transcript"], ["id", "file", "original_path", "speaker_id"], make)
        return build_dataset(corpus, entries, limit, max_seconds, where)

    base = expand_path(root)
    candidates = [base / f"mls_{name}" / split, base / f"mls_{name}_opus" / split, base / split]
    split_dir = next((c for c in candidates if (c / "transcripts.txt").is_file()), None)
    if split_dir is None:
        looked = ", ".join(str(c / "transcripts.txt") for c in candidates)
        raise MissingDataError(f"{corpus}: transcripts not found (looked for {looked}). To get it, {how}.")
    tr = split_dir / "transcripts.txt"
    entries = []
    for n, cols in read_tsv(tr):
        if len(cols) < 2 or len(cols[0].split("_")) != 3:
            raise CorpusError(f"{tr} line {n}: expected 'SPEAKER_BOOK_UTT<TAB>transcript'")
        spk, book, _ = cols[0].split("_")
        stem = split_dir / "audio" / spk / book / cols[0]
        path = next((p for p in (stem.with_suffix(".flac"), stem.with_suffix(".opus")) if p.is_file()),
                    stem.with_suffix(".flac"))
        entries.append(Entry(f"{prefix}/{cols[0]}", cols[1], code, spk, f"{path} (listed in {tr} line {n})", path))
    return build_dataset(corpus, entries, limit, max_seconds, where,
                         reads="FLAC or Opus only ({SPK}_{BOOK}_{UTT}.flac or .opus under audio/{SPK}/{BOOK}/)")
