"""What the corpus loaders share: the errors, the utterance list (`Entry`), audio decoding and resampling to
16 kHz mono, parquet / hub rows as audio sources, TSV reading, and `build_dataset`, which selects, decodes,
validates and returns the rows (see the package docstring for the common behaviour)."""
from __future__ import annotations

import codecs
import csv
import io
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

SAMPLE_RATE = 16_000
# One logger for every corpus loader (the one-line summaries of repairs and leave-outs).
log = logging.getLogger("cl_asr.data.corpora")
if not logging.getLogger().handlers and not log.handlers:  # make the one-line summaries visible by default
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("[cl_asr data] %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)


class MissingDataError(FileNotFoundError):
    """The corpus (or a file it lists) is not where it was looked for. The message says how to get it."""


class CorpusError(ValueError):
    """The corpus is there but something in it is unusable (unreadable audio, empty transcript, ...)."""


@dataclass
class Entry:
    """One utterance before its audio is decoded."""

    id: str
    text: str
    language: str
    speaker: str
    where: str  # the file (or parquet file and row) to name in errors
    audio: Any  # a path, or (arrow source, row) for parquet/hub rows
    extra: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- audio


def mp3_supported() -> bool:
    import soundfile as sf

    return "MP3" in sf.available_formats()


def read_audio(source: str | Path | bytes, where: str) -> tuple[np.ndarray, int, int]:
    """Decode a file path or encoded bytes to (mono float32 at the file's rate, rate, channel count).

    Refused with a CorpusError naming `where`: an empty (0-byte) file, a file that is not audio (e.g. text or
    an HTML error page saved under an audio name), undecodable or truncated audio, 0 samples, NaN/inf samples."""
    import soundfile as sf

    size = len(source) if isinstance(source, bytes) else _file_size(source)
    if size == 0:
        raise CorpusError(f"{where}: the audio file is empty (0 bytes; an incomplete download or copy?)")
    try:
        with sf.SoundFile(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as f:
            data = f.read(dtype="float32", always_2d=True)
            rate, log_text = f.samplerate, f.extra_info
    except Exception as exc:  # libsndfile raises LibsndfileError (a RuntimeError); others for odd inputs
        hint = ""
        if str(where).lower().endswith(".mp3") and not mp3_supported():
            hint = (f" (this libsndfile, {sf.__libsndfile_version__}, cannot read MP3: it needs libsndfile >= 1.1, "
                    f"which `pip install -U soundfile` brings)")
        else:
            head = _text_head(source)
            if head is not None:
                raise CorpusError(f"{where}: not an audio file: it holds text, starting {head!r} (cannot decode "
                                  f"audio: {exc})") from exc
        raise CorpusError(f"{where}: cannot decode audio: {exc}{hint}") from exc
    # libsndfile reads a truncated WAV up to where it ends, logging "data : <header size> (should be <real>)".
    m = re.search(r"^data : (\d+) \(should be (\d+)\)", log_text or "", re.M)
    if m and int(m.group(2)) < int(m.group(1)) < 0xFFFFFFFF:  # 0xFFFFFFFF: a streamed WAV of unknown length
        raise CorpusError(f"{where}: the audio is truncated: its header declares {int(m.group(1))} bytes of "
                          f"samples, the file holds {int(m.group(2))} (an incomplete download or copy?)")
    channels = data.shape[1]
    mono = data.mean(axis=1, dtype=np.float32) if channels > 1 else data[:, 0]
    if not len(mono):
        raise CorpusError(f"{where}: the audio is empty (0 samples)")
    if not np.all(np.isfinite(mono)):
        bad = int(np.count_nonzero(~np.isfinite(mono)))
        raise CorpusError(f"{where}: the audio contains NaN or infinite samples ({bad} of {len(mono)})")
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate), channels


def _file_size(path: str | Path) -> int | None:
    try:
        return Path(path).stat().st_size
    except OSError:
        return None


def _text_head(source: str | Path | bytes) -> str | None:
    """The first characters of `source` if it is plain text (a transcript, an HTML error page), else None."""
    try:
        if isinstance(source, bytes):
            raw = source[:64]
        else:
            with Path(source).open("rb") as f:
                raw = f.read(64)
        text = codecs.getincrementaldecoder("utf-8")().decode(raw, final=False)  # a cut last character is fine
    except (OSError, UnicodeDecodeError):
        return None
    if not text.strip() or any(not (c.isprintable() or c in "\r\n\t") for c in text):
        return None
    return text.strip()[:40]


def to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return audio
    from scipy.signal import resample_poly

    g = math.gcd(rate, SAMPLE_RATE)
    return resample_poly(audio, SAMPLE_RATE // g, rate // g).astype(np.float32)


# --------------------------------------------------------------------------------------------- datasets


def build_dataset(corpus: str, entries: list[Entry], limit: int | None = None, max_seconds: float | None = None,
                  where: dict[str, str] | None = None, extra_columns: tuple[str, ...] = (), reads: str = ""):
    """Select (filter, sort by id, limit), decode, validate and return the dataset (numpy format)."""
    import datasets

    from ..corpus import dataset_features

    if limit is not None and limit < 1:
        raise ValueError(f"{corpus}: limit must be at least 1 (or None for all), got {limit}")
    if where:
        known = {"id", "text", "language", "speaker", *extra_columns, *(entries[0].extra if entries else ())}
        for col in where:
            if col not in known:
                raise ValueError(f"{corpus}: cannot filter on {col!r}; columns: {', '.join(sorted(known))}")
        entries = [e for e in entries
                   if all(str(_field(e, c)) == str(v) for c, v in where.items())]
    if not entries:
        cond = f" matching {where}" if where else ""
        raise CorpusError(f"{corpus}: no utterances{cond}")
    seen: Counter = Counter()
    for e in entries:  # the same id twice (a file listed twice): keep both, under distinct ids
        seen[e.id] += 1
        if seen[e.id] > 1:
            e.id = f"{e.id}#{seen[e.id]}"
    renamed = sum(n - 1 for n in seen.values())
    entries = sorted(entries, key=lambda e: e.id)

    rows = {k: [] for k in ("id", "audio", "text", "language", "speaker", "duration", *extra_columns)}
    resampled: Counter = Counter()
    downmixed = too_long = 0
    longest: tuple[float, str] | None = None  # (seconds, file) of the longest utterance left out
    want = len(entries) if limit is None else limit
    pos = 0
    while len(rows["id"]) < want and pos < len(entries):
        chunk = entries[pos:pos + want - len(rows["id"])]  # only rows that will be used (unless too long)
        pos += len(chunk)
        for e in chunk:
            if not e.text or not e.text.strip():
                raise CorpusError(f"{e.where}: empty transcript for utterance {e.id}")
        for e, payload in zip(chunk, _fetch_audio(chunk, corpus, reads)):
            audio, rate, channels = read_audio(payload, e.where)
            audio = to_16k(audio, rate)
            if max_seconds is not None and len(audio) > max_seconds * SAMPLE_RATE:
                too_long += 1
                longest = max(longest or (0.0, ""), (len(audio) / SAMPLE_RATE, e.where))
                continue
            resampled[rate] += rate != SAMPLE_RATE
            downmixed += channels > 1
            rows["id"].append(e.id)
            rows["audio"].append({"array": audio, "sampling_rate": SAMPLE_RATE})
            rows["text"].append(e.text.strip())
            rows["language"].append(e.language)
            rows["speaker"].append(e.speaker)
            rows["duration"].append(len(audio) / SAMPLE_RATE)
            for c in extra_columns:
                rows[c].append(str(e.extra.get(c, "")))
    if not rows["id"]:
        raise CorpusError(f"{corpus}: all {too_long} utterances read are longer than max_seconds={max_seconds:g} "
                          f"(the longest: {longest[1]}, {longest[0]:.2f} s)")
    for rate, n in sorted(resampled.items()):
        if n:
            log.info("%s: %d files resampled from %d Hz to %d Hz", corpus, n, rate, SAMPLE_RATE)
    if downmixed:
        log.info("%s: %d multi-channel files down-mixed to mono", corpus, downmixed)
    if too_long:
        log.info("%s: %d utterances longer than %g s left out (max_seconds; the longest: %s, %.2f s)", corpus,
                 too_long, max_seconds, longest[1], longest[0])
    if renamed:
        log.info("%s: %d duplicate ids made unique with a #n suffix", corpus, renamed)
    if limit is not None and len(rows["id"]) < limit:
        log.info("%s: %d utterances asked for, only %d available", corpus, limit, len(rows["id"]))
    features = dataset_features()
    for c in extra_columns:
        features[c] = datasets.Value("string")
    ds = datasets.Dataset.from_dict(rows, features=features)
    ds = ds.with_format("numpy", columns=["audio"], output_all_columns=True)
    # The repairs and leave-outs, for callers to record (the corpus scenario builder puts them in run.json).
    ds.repairs = {"resampled_to_16k": sum(resampled.values()), "downmixed_to_mono": downmixed,
                  "left_out_longer_than_max_seconds": too_long}
    return ds


def _field(e: Entry, column: str):
    return getattr(e, column) if column in ("id", "text", "language", "speaker") else e.extra.get(column)


def _fetch_audio(entries: list[Entry], corpus: str = "", reads: str = "") -> list[str | Path | bytes]:
    """Encoded audio (bytes) or a file path for each entry; arrow rows are read per source, in one go.
    `reads`: which audio files the loader reads (e.g. "FLAC only (...)"), said when a listed file is missing but
    the same name with another extension is there (a converted copy), instead of "missing"."""
    out: list = [None] * len(entries)
    by_source: dict[int, tuple[ArrowSource, list[int], list[int]]] = {}
    for i, e in enumerate(entries):
        if isinstance(e.audio, tuple):
            src, row = e.audio
            by_source.setdefault(id(src), (src, [], []))
            by_source[id(src)][1].append(row)
            by_source[id(src)][2].append(i)
        else:
            path = Path(e.audio)
            if not path.is_file():
                other = other_formats(path)
                if other:  # e.g. WAV where the loader reads FLAC: say so, not "incomplete copy"
                    name, held = other
                    raise CorpusError(
                        f"{corpus + ': ' if corpus else ''}{e.where}: no such file, but {name} is there: this loader "
                        f"reads {reads or 'the files its listing names, under those names'} (the folder "
                        f"{path.parent} holds {held}). Convert the audio (e.g. `ffmpeg -i X{Path(name).suffix} "
                        f"X{path.suffix}`) or restore the original files")
                raise MissingDataError(f"{path}: audio file listed by {e.where} is missing (incomplete copy? "
                                       f"re-extract the corpus)")
            out[i] = path
    for src, rows, idx in by_source.values():
        for i, cell in zip(idx, src.audio(rows)):
            cell = cell or {}
            if cell.get("bytes"):
                out[i] = bytes(cell["bytes"])
            elif cell.get("path") and Path(cell["path"]).is_file():
                out[i] = Path(cell["path"])
            else:
                raise CorpusError(f"{entries[i].where}: the audio cell holds no bytes and no readable file "
                                  f"(path {cell.get('path')!r})")
    return out


def other_formats(path: Path) -> tuple[str, str] | None:
    """None if no file in `path`'s folder has its name with another extension; else (that file's name, what
    the folder holds), e.g. ("7-8-0000.wav", "3 .wav files and no .flac file")."""
    try:
        files = [p for p in path.parent.iterdir() if p.is_file()]
    except OSError:
        return None
    siblings = sorted(p.name for p in files if p.stem == path.stem and p.suffix and p.name != path.name)
    if not siblings:
        return None
    counts = Counter(p.suffix.lower() for p in files if p.suffix and p.suffix.lower() not in (".txt", ".tsv"))
    plural = lambda n: "" if n == 1 else "s"  # noqa: E731
    held = ", ".join(f"{n} {ext} file{plural(n)}" for ext, n in sorted(counts.items()))
    if not counts.get(path.suffix.lower()):
        held += f" and no {path.suffix.lower()} file"
    return siblings[0], held


class ArrowSource:
    """Rows of one parquet file (its audio read by row group, only for the rows asked for) or of one Arrow
    table (a dataset loaded from the hub)."""

    def __init__(self, where: str, parquet: Path | None = None, table=None):
        self.where = where
        self.parquet = parquet
        self.table = table

    def columns(self) -> list[str]:
        if self.table is not None:
            return list(self.table.column_names)
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(self.parquet).names)
        except Exception as exc:
            raise CorpusError(f"{self.parquet}: not a readable parquet file: {exc}") from exc

    def read(self, columns: list[str]) -> list[dict]:
        if self.table is not None:
            return self.table.select(columns).to_pylist()
        import pyarrow.parquet as pq

        return pq.read_table(self.parquet, columns=columns).to_pylist()

    def audio(self, rows: list[int]) -> list[dict]:
        if self.table is not None:
            return self.table.column("audio").take(rows).to_pylist()
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(self.parquet)
        starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
        out: dict[int, dict] = {}
        groups: dict[int, list[int]] = {}
        for r in rows:
            groups.setdefault(int(np.searchsorted(starts, r, side="right") - 1), []).append(r)
        for g, rs in groups.items():
            col = pf.read_row_group(g, columns=["audio"]).column("audio")
            for r, cell in zip(rs, col.take([r - starts[g] for r in rs]).to_pylist()):
                out[r] = cell
        return [out[r] for r in rows]


def arrow_entries(sources: list[ArrowSource], required: list[str], optional: list[str],
                   make: Callable[[dict], Entry | None]) -> list[Entry]:
    entries = []
    for src in sources:
        cols = src.columns()
        missing = [c for c in required if c not in cols]
        if missing:
            raise CorpusError(f"{src.where}: missing column(s) {missing}; it has {cols}")
        for i, row in enumerate(src.read([c for c in required + optional if c in cols and c != "audio"])):
            e = make(row)
            e.where = f"{src.where} row {i} (id {e.id})"
            e.audio = (src, i)
            entries.append(e)
    return entries


def hub_source(repo: str, config: str | None, split: str, revision: str | None, corpus: str,
                local_help: str) -> ArrowSource:
    try:
        import datasets

        kwargs = {"revision": revision} if revision else {}
        ds = datasets.load_dataset(repo, config, split=split, **kwargs)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise MissingDataError(
            f"{corpus}: no local copy given and the Hugging Face hub copy ({repo}"
            f"{', config ' + config if config else ''}, split {split}{', revision ' + revision if revision else ''}) "
            f"could not be loaded ({type(exc).__name__}: {first[:300]}). Either {local_help}, or make the hub "
            f"reachable (and `hf auth login` if the dataset is gated) so that it downloads into the "
            f"Hugging Face cache."
        ) from exc
    if getattr(ds, "_indices", None) is not None:
        ds = ds.flatten_indices()
    return ArrowSource(f"hub {repo}/{config or 'default'}/{split}", table=ds.data.table)


def expand_path(path: str | Path) -> Path:
    return Path(str(path)).expanduser()


def read_tsv(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, columns) of each non-blank line of a tab-separated file (quotes are plain characters)."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            return [(reader.line_num, r) for r in reader if r and any(x.strip() for x in r)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CorpusError(f"{path}: not a readable UTF-8 TSV file: {exc}") from exc
