"""ASCEND (CAiRE/ASCEND): Mandarin-English code-switching conversations. Read from local parquet files
({data_dir}/{split}/*.parquet and similar) or, without data_dir, from the Hugging Face hub's parquet conversion."""
from __future__ import annotations

from .common import (
    ArrowSource, CorpusError, Entry, MissingDataError, arrow_entries, build_dataset, expand_path, hub_source,
)

ASCEND_LANGUAGE = {"zh": "zh", "en": "en", "mixed": "zh-en"}
ASCEND_URL = "https://huggingface.co/datasets/CAiRE/ASCEND"


def load_ascend(split: str, data_dir: str | None = None, limit: int | None = None,
                max_seconds: float | None = None, where: dict[str, str] | None = None):
    """ASCEND (Mandarin-English code-switching) `split` (train / validation / test).

    data_dir: parquet files at {data_dir}/{split}/*.parquet, {data_dir}/default/{split}/*.parquet or
    {data_dir}/*{split}*.parquet, columns id, path, audio, transcription, duration, language,
    original_speaker_id, session_id, topic. data_dir None: the hub (CAiRE/ASCEND, parquet conversion).
    language: "zh-en" for mixed rows, "zh" / "en" for monolingual ones; ASCEND's own tag is kept in `cs_label`.
    Audio formats: parquet only; the rows' embedded audio in any format libsndfile decodes (WAV in ASCEND)."""
    corpus = f"ASCEND {split}"
    how = (f"download it: `hf download CAiRE/ASCEND --repo-type dataset --revision refs/convert/parquet "
           f"--local-dir DIR` (or save `datasets.load_dataset('CAiRE/ASCEND', split=...)` with `.to_parquet(...)` "
           f"into DIR/{split}/), then pass data_dir=DIR; see {ASCEND_URL}")

    def make(row: dict) -> Entry:
        tag = str(row.get("language") or "").strip()
        if tag not in ASCEND_LANGUAGE:
            raise CorpusError(f"{corpus}: utterance {row.get('id')}: language {tag!r} is none of zh, en, mixed")
        spk = row.get("original_speaker_id")
        return Entry(f"ascend/{split}/{row.get('id')}", row.get("transcription") or "", ASCEND_LANGUAGE[tag],
                     str(spk) if spk is not None else "unknown", "", None, {"cs_label": tag})

    cols = (["audio", "id", "transcription", "language"], ["original_speaker_id"])
    if data_dir is None:
        src = hub_source("CAiRE/ASCEND", None, split, "refs/convert/parquet", corpus, how)
        return build_dataset(corpus, arrow_entries([src], *cols, make), limit, max_seconds, where, ("cs_label",))
    root = expand_path(data_dir)
    patterns = [f"{split}/*.parquet", f"default/{split}/*.parquet", f"*{split}*.parquet"]
    files = next((sorted(root.glob(p)) for p in patterns if sorted(root.glob(p))), [])
    if not files:
        raise MissingDataError(f"{corpus}: no parquet files under data_dir={root} (looked for "
                               f"{', '.join(str(root / p) for p in patterns)}). To get it, {how}; or leave data_dir "
                               f"unset to load the hub copy.")
    entries = arrow_entries([ArrowSource(str(f), parquet=f) for f in files], *cols, make)
    return build_dataset(corpus, entries, limit, max_seconds, where, ("cs_label",))
