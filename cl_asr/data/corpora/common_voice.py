"""Common Voice (Mozilla): crowd-sourced read speech, MP3 clips. Read from a local release only (it left the
Hugging Face hub in 2025; get it from the Mozilla Data Collective): {root}/{locale}/{split}.tsv + clips/.
Or, with `clmasr_split_dir`, CL-MASR's own train/dev/test split of the release (its manifest CSVs), the clips
still read from the release."""
from __future__ import annotations

import csv
from pathlib import Path

from .common import CorpusError, Entry, MissingDataError, build_dataset, expand_path, read_tsv

CV_HELP = ("Common Voice left the Hugging Face hub in late 2025: download the release for locale {locale} from "
           "the Mozilla Data Collective (https://datacollective.mozillafoundation.org, formerly "
           "https://commonvoice.mozilla.org/datasets), extract it and pass as root the folder that holds "
           "'{locale}/' (e.g. cv-corpus-13.0-2023-03-09/, the release CL-MASR uses)")


def load_common_voice(root: str, locale: str, split: str = "test", limit: int | None = None,
                      max_seconds: float | None = None, where: dict[str, str] | None = None,
                      clmasr_split_dir: str | None = None):
    """A local Common Voice release: {root}/{locale}/{split}.tsv (header with at least `path` and `sentence`;
    client_id, gender, locale, ... optional) and clips at {root}/{locale}/clips/<path> (MP3, usually 48 kHz).
    language = the locale before "-" (fy-NL -> fy, zh-CN -> zh); speaker = client_id.
    Audio formats: the clip files the TSV names, under those names: MP3 in Common Voice's releases (libsndfile
    >= 1.1); converted clips (WAV, FLAC, Ogg) are read too if the TSV's `path` column names them.

    clmasr_split_dir: a folder of CL-MASR's split files (the manifests speechbrain/benchmarks'
    benchmarks/CL_MASR/common_voice_prepare.py writes: {split}.csv, columns ID,mp3,wrd,locale,duration, split
    train / dev / test): {clmasr_split_dir}/{locale}/{split}.csv, else {clmasr_split_dir}/{split}.csv (its rows
    whose `locale` is this locale). Its rows are read instead of {split}.tsv: text = `wrd` (CL-MASR's normalised
    transcript), clip = the file named by `mp3` (e.g. $data_root/rw/clips/common_voice_rw_1.mp3), looked up by
    file name in {root}/{locale}/clips/; speaker "unknown" (the manifests carry no client_id). Ids are as
    without it (cv/{locale}/{split}/{clip stem}). None or "" (an unset $CLMASR_SPLITS): Common Voice's TSVs."""
    corpus = f"Common Voice {locale}/{split}"
    if root is None or str(root).strip() == "":
        raise MissingDataError(f"{corpus}: no root directory given. {CV_HELP.format(locale=locale)}.")
    if clmasr_split_dir is not None and str(clmasr_split_dir).strip() != "":
        return load_clmasr_split(root, locale, split, clmasr_split_dir, limit, max_seconds, where)
    base = expand_path(root) / locale
    tsv = base / f"{split}.tsv"
    if not tsv.is_file():
        have = sorted(p.name for p in base.glob("*.tsv")) if base.is_dir() else []
        there = f" ({base} has: {', '.join(have)})" if have else (" (that folder does not exist)" if not base.is_dir()
                                                                  else "")
        raise MissingDataError(f"{corpus}: {tsv} not found{there}. {CV_HELP.format(locale=locale)}.")
    rows = read_tsv(tsv)
    if not rows:
        raise CorpusError(f"{tsv}: empty file (no header)")
    header = [h.strip() for h in rows[0][1]]
    missing = [c for c in ("path", "sentence") if c not in header]
    if missing:
        raise CorpusError(f"{tsv}: header lacks column(s) {missing}; it has {header}")
    col = {h: i for i, h in enumerate(header)}
    language = locale.split("-")[0].lower()
    entries = []
    for n, cols in rows[1:]:
        get = lambda name: cols[col[name]] if name in col and col[name] < len(cols) else ""  # noqa: E731
        clip = get("path")
        if not clip:
            raise CorpusError(f"{tsv} line {n}: no clip path")
        path = base / "clips" / clip
        entries.append(Entry(f"cv/{locale}/{split}/{Path(clip).stem}", get("sentence"), language,
                             get("client_id") or "unknown", f"{path} (listed in {tsv} line {n})", path,
                             {"gender": get("gender")}))
    return build_dataset(corpus, entries, limit, max_seconds, where,
                         reads=f"the clips {tsv.name} names, under those names (MP3 in Common Voice releases; WAV, "
                               f"FLAC or Ogg too if its path column names them)")


CLMASR_SPLITS = ("train", "dev", "test")  # the split names CL-MASR's common_voice_prepare.py writes
CLMASR_COLUMNS = ("ID", "mp3", "wrd", "locale", "duration")  # the header of its manifests
CLMASR_HELP = ("CL-MASR's split files are the manifests its data preparation writes (speechbrain/benchmarks, "
               "benchmarks/CL_MASR/common_voice_prepare.py, run with -m 36000 3600 3600 for its 10 h / 1 h / 1 h): "
               "{split}.csv for split train, dev, test, header " + ",".join(CLMASR_COLUMNS) + "; put one locale's "
               "at {dir}/{locale}/{split}.csv, or several locales' at {dir}/{split}.csv (told apart by the locale "
               "column), or give no split folder (unset $CLMASR_SPLITS) to read Common Voice's own {split}.tsv "
               "(docs/corpora.md)")


def load_clmasr_split(root: str, locale: str, split: str, split_dir: str, limit: int | None = None,
                      max_seconds: float | None = None, where: dict[str, str] | None = None):
    """load_common_voice with clmasr_split_dir: the rows of CL-MASR's split file for `locale` / `split` (see
    load_common_voice), every row checked (columns, locale, clip in the release, transcript) before any audio
    is decoded; a bad row raises an error naming the file, line and field."""
    corpus = f"Common Voice {locale}/{split} (CL-MASR split)"
    if split not in CLMASR_SPLITS:
        raise ValueError(f"{corpus}: CL-MASR's split files are {', '.join(CLMASR_SPLITS)}, not {split!r}")
    path, shared = clmasr_split_file(corpus, expand_path(split_dir), locale, split)
    header, rows = read_csv_rows(path)
    need = [c for c in ("mp3", "wrd", *(("locale",) if shared else ())) if c not in header]
    if need:
        raise CorpusError(f"{path}: header lacks column(s) {need}; it has {header} (a CL-MASR split file has "
                          f"{list(CLMASR_COLUMNS)})")
    mine, others = [], set()
    for n, cols in rows:
        if len(cols) != len(header):
            raise CorpusError(f"{path} line {n}: {len(cols)} fields, the header has {len(header)} ({header})")
        row = {h: v.strip() for h, v in zip(header, cols)}
        if "locale" in row and row["locale"] != locale:
            if not shared or not row["locale"]:
                raise CorpusError(f"{path} line {n}: field locale is {row['locale']!r}, not {locale!r} (the file "
                                  f"of another locale?)")
            others.add(row["locale"])
            continue  # a file of several locales: another locale's row
        mine.append((n, row))
    if not mine:
        held = f" (its locale column holds {', '.join(sorted(others))})" if others else " (only a header)"
        raise CorpusError(f"{path}: no rows for locale {locale}{held}. {CLMASR_HELP}")
    clips = expand_path(root) / locale / "clips"
    if not clips.is_dir():
        raise MissingDataError(f"{corpus}: {clips} not found: the clips {path} names are read from the Common Voice "
                               f"release given as root. {CV_HELP.format(locale=locale)}.")
    language = locale.split("-")[0].lower()
    entries = [clmasr_entry(row, path, n, clips, locale, split, language) for n, row in mine]
    return build_dataset(corpus, entries, limit, max_seconds, where,
                         reads=f"the clips {path.name} names, by file name in {clips} (MP3 in Common Voice releases)")


def clmasr_split_file(corpus: str, folder: Path, locale: str, split: str) -> tuple[Path, bool]:
    """(CL-MASR split file for locale / split, whether it is a file of several locales) or MissingDataError."""
    own, shared = folder / locale / f"{split}.csv", folder / f"{split}.csv"
    if own.is_file():
        return own, False
    if shared.is_file():
        return shared, True
    if not folder.is_dir():
        there = f" (the split folder {folder} does not exist)"
    else:
        have = sorted(p.relative_to(folder).as_posix() for p in [*folder.glob("*.csv"), *folder.glob("*/*.csv")])
        there = f" ({folder} has: {', '.join(have[:12])}{', ...' if len(have) > 12 else ''})" if have else (
            f" ({folder} holds no .csv file)")
    raise MissingDataError(f"{corpus}: no CL-MASR split file: neither {own} nor {shared} exists{there}. "
                           f"{CLMASR_HELP}.")


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields)]) of a comma-separated file with a header row; blank lines are ignored."""
    reader = None
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, r) for r in reader if r and any(x.strip() for x in r)]
    except (UnicodeDecodeError, csv.Error) as exc:
        at = f" line {reader.line_num}" if reader is not None and isinstance(exc, csv.Error) else ""
        raise CorpusError(f"{path}{at}: not a readable UTF-8 CSV file: {exc}") from exc
    if not rows:
        raise CorpusError(f"{path}: empty file (no header; a CL-MASR split file starts with "
                          f"{','.join(CLMASR_COLUMNS)})")
    return [h.strip() for h in rows[0][1]], rows[1:]


def clmasr_entry(row: dict[str, str], path: Path, n: int, clips: Path, locale: str, split: str,
                 language: str) -> Entry:
    """The utterance of one row of a CL-MASR split file; a row whose clip is not in the release is refused."""
    value = row["mp3"]
    if not value:
        raise CorpusError(f"{path} line {n}: field mp3 is empty (no clip path)")
    parts = value.replace("\\", "/").split("/")
    name = parts[-1]
    if len(parts) >= 3 and parts[-2] == "clips" and parts[-3] not in (locale, "$data_root", "${data_root}"):
        raise CorpusError(f"{path} line {n}: field mp3 is {value!r}, a clip of locale {parts[-3]!r}, not {locale!r}")
    clip = clips / name
    if not name or not clip.is_file():
        raise MissingDataError(f"{path} line {n}: field mp3 is {value!r}, but {clip} is not in the Common Voice "
                               f"release (CL-MASR's splits are cut from Common Voice 13.0: is root that release, "
                               f"with all of {locale}/clips/?)")
    if not row["wrd"]:
        raise CorpusError(f"{path} line {n}: field wrd (the transcript) is empty")
    return Entry(f"cv/{locale}/{split}/{Path(name).stem}", row["wrd"], language, "unknown",
                 f"{clip} (listed in {path} line {n})", clip, {"gender": ""})
