"""FLEURS (google/fleurs): 102 languages of read Wikipedia sentences. Read from a local copy, either the hub's
parquet conversion ({data_dir}/{config}/{split}/*.parquet) or FLEURS' original layout ({data_dir}/{config}/
{split}.tsv + audio/{split}/*.wav), or, without data_dir, from the Hugging Face hub's parquet conversion."""
from __future__ import annotations

from pathlib import Path

from .common import (
    ArrowSource, CorpusError, Entry, MissingDataError, arrow_entries, build_dataset, expand_path, hub_source, read_tsv,
)

FLEURS_URL = "https://huggingface.co/datasets/google/fleurs"
# FLEURS codes for languages Whisper knows under another code (the part of the config before "_" otherwise).
FLEURS_TO_WHISPER = {"cmn": "zh", "nb": "no", "fil": "tl", "yue": "yue"}
# FLEURS' dev split is "dev" in its original layout (dev.tsv, audio/dev/) and "validation" in the hub's parquet
# conversion (and in `datasets`): either name reads it, in whichever layout the copy has.
DEV_NAMES = ("dev", "validation")


def fleurs_language(config: str) -> str:
    code = config.split("_")[0]
    return FLEURS_TO_WHISPER.get(code, code)


def load_fleurs(config: str, split: str, data_dir: str | None = None, limit: int | None = None,
                max_seconds: float | None = None, where: dict[str, str] | None = None,
                text_field: str = "raw_transcription"):
    """FLEURS `config` (e.g. "ast_es") `split` (train / dev / test; "dev" and "validation" both name the dev
    split: the original layout calls it dev, the parquet conversion validation; ids keep the name asked for).

    data_dir None: the hub's parquet conversion (google/fleurs, revision refs/convert/parquet). Otherwise a
    local copy, either parquet files at {data_dir}/{config}/{split}/*.parquet (the hub conversion's layout) or
    FLEURS' original layout {data_dir}/{config}/{split}.tsv + {data_dir}/{config}/audio/{split}/*.wav
    (header-less TSV: id, file name, raw transcription, transcription, characters, num_samples, gender).
    FLEURS publishes no speaker ids: speaker is "unknown". Utterance ids are the audio file names (several
    speakers read each sentence, so the sentence id is not unique).
    Audio formats: parquet / hub rows' embedded audio, any format libsndfile decodes (WAV in FLEURS); the
    original layout, the files the TSV names under audio/{split}/ (FLEURS' WAV files), under those names.
    """
    if text_field not in ("raw_transcription", "transcription"):
        raise ValueError(f"text_field must be 'raw_transcription' or 'transcription', got {text_field!r}")
    corpus = f"FLEURS {config}/{split}"
    language = fleurs_language(config)
    prefix = f"fleurs/{config}/{split}"
    # the split's names, the asked-for one first; the hub conversion's name; FLEURS' original layout's name
    names = (split, *(n for n in DEV_NAMES if n != split)) if split in DEV_NAMES else (split,)
    pq_name, tsv_name = ("validation", "dev") if split in DEV_NAMES else (split, split)
    how = (f"download it: `hf download google/fleurs --repo-type dataset --revision "
           f"refs/convert/parquet --include '{config}/{pq_name}/*' --local-dir DIR` (parquet), or from {FLEURS_URL}"
           f"/tree/main/data/{config} take {tsv_name}.tsv and audio/{tsv_name}.tar.gz, extract the archive to "
           f"DIR/{config}/audio/{tsv_name}/ and put the TSV at DIR/{config}/{tsv_name}.tsv; then pass data_dir=DIR")

    def make(row: dict) -> Entry:
        name = row.get("path") or str(row.get("id"))
        text = row.get(text_field) if row.get(text_field) is not None else row.get("transcription")
        return Entry(f"{prefix}/{Path(str(name)).stem}", text or "", language, "unknown", "", None)

    if data_dir is None:
        src = hub_source("google/fleurs", config, pq_name, "refs/convert/parquet", corpus,
                          f"pass data_dir with a local copy ({how})")
        entries = arrow_entries([src], ["audio"], ["id", "path", "transcription", "raw_transcription"], make)
        return build_dataset(corpus, entries, limit, max_seconds, where)

    root = expand_path(data_dir)
    bases = [root / config, root / "data" / config]
    for base in bases:
        for sub in (*names, *(f"partial-{n}" for n in names)):
            files = sorted((base / sub).glob("*.parquet"))
            if files:
                sources = [ArrowSource(str(f), parquet=f) for f in files]
                entries = arrow_entries(sources, ["audio"], ["id", "path", "transcription", "raw_transcription"],
                                         make)
                return build_dataset(corpus, entries, limit, max_seconds, where)
        tsv = next((base / f"{n}.tsv" for n in names if (base / f"{n}.tsv").is_file()), base / f"{split}.tsv")
        if tsv.is_file():
            entries = []
            for n, cols in read_tsv(tsv):
                if len(cols) < 4:
                    raise CorpusError(f"{tsv} line {n}: expected at least 4 tab-separated columns (id, file name, "
                                      f"raw transcription, transcription), got {len(cols)}")
                text = cols[2] if text_field == "raw_transcription" else cols[3]
                entries.append(Entry(f"{prefix}/{Path(cols[1]).stem}", text, language, "unknown",
                                     f"{tsv} line {n}", base / "audio" / tsv.stem / cols[1]))
            for e in entries:
                e.where = f"{e.audio} (listed in {e.where})"
            return build_dataset(corpus, entries, limit, max_seconds, where,
                                 reads=f"the files {tsv.name} names in audio/{tsv.stem}/, under those names (WAV "
                                       f"in FLEURS' archives)")
    looked = ", ".join(f"{b}/{n}/*.parquet, {b}/{n}.tsv" for b in bases for n in names)
    raise MissingDataError(f"{corpus}: not found under data_dir={root} (looked for {looked}). To get it, {how}; "
                           f"or leave data_dir unset to load the hub copy.")
