"""Common Voice (Mozilla): crowd-sourced read speech, MP3 clips. Read from a local release only (it left the
Hugging Face hub in 2025; get it from the Mozilla Data Collective): {root}/{locale}/{split}.tsv + clips/."""
from __future__ import annotations

from pathlib import Path

from .common import CorpusError, Entry, MissingDataError, build_dataset, expand_path, read_tsv

CV_HELP = ("Common Voice left the Hugging Face hub in late 2025: download the release for locale {locale} from "
           "the Mozilla Data Collective (https://datacollective.mozillafoundation.org, formerly "
           "https://commonvoice.mozilla.org/datasets), extract it and pass as root the folder that holds "
           "'{locale}/' (e.g. cv-corpus-13.0-2023-03-09/, the release CL-MASR uses)")


def load_common_voice(root: str, locale: str, split: str = "test", limit: int | None = None,
                      max_seconds: float | None = None, where: dict[str, str] | None = None):
    """A local Common Voice release: {root}/{locale}/{split}.tsv (header with at least `path` and `sentence`;
    client_id, gender, locale, ... optional) and clips at {root}/{locale}/clips/<path> (MP3, usually 48 kHz).
    language = the locale before "-" (fy-NL -> fy, zh-CN -> zh); speaker = client_id.
    Audio formats: the clip files the TSV names, under those names: MP3 in Common Voice's releases (libsndfile
    >= 1.1); converted clips (WAV, FLAC, Ogg) are read too if the TSV's `path` column names them."""
    corpus = f"Common Voice {locale}/{split}"
    if root is None or str(root).strip() == "":
        raise MissingDataError(f"{corpus}: no root directory given. {CV_HELP.format(locale=locale)}.")
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
