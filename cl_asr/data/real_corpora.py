"""Real speech corpora as datasets of the same shape as the synthetic ones (cl_asr.data.corpus).

Every loader returns a `datasets.Dataset` in numpy format with the columns
  id (unique, e.g. "fleurs/ast_es/test/10004088536354799741"), audio {array: float32 mono 16 kHz,
  sampling_rate: 16000}, text, language, speaker, duration (seconds)
plus, for ASCEND, `cs_label` (the corpus' own zh / en / mixed tag).

Common behaviour:
- `limit` keeps the first N utterances sorted by id, chosen BEFORE any audio is decoded (big corpora are never
  decoded whole); `where` keeps rows whose column equals a value (e.g. {"cs_label": "mixed"}), applied first;
  `max_seconds` leaves out utterances longer than that (counted and logged) and keeps reading until `limit`
  utterances that fit are found.
- Audio at other rates is resampled to 16 kHz, multi-channel audio is averaged to mono; both are counted,
  logged in one line each and returned in the dataset's `repairs` attribute (with the number left out by
  `max_seconds`). Unreadable audio (0-byte files, non-audio files such as text saved as .wav, corrupt or
  truncated audio), NaN/inf samples, empty audio and empty or whitespace-only transcripts raise `CorpusError`
  naming the file; nothing is skipped silently.
- Data that is not there raises `MissingDataError` (a FileNotFoundError) saying what is missing, where it
  looked and how to get it.
MP3 (Common Voice) and Opus (MLS opus release) are decoded by libsndfile through `soundfile`; libsndfile >= 1.1
is needed for MP3 (the wheels of soundfile >= 0.12 ship 1.2).
"""
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
log = logging.getLogger(__name__)
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
                  where: dict[str, str] | None = None, extra_columns: tuple[str, ...] = ()):
    """Select (filter, sort by id, limit), decode, validate and return the dataset (numpy format)."""
    import datasets

    from .corpus import dataset_features

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
        for e, payload in zip(chunk, _fetch_audio(chunk)):
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


def _fetch_audio(entries: list[Entry]) -> list[str | Path | bytes]:
    """Encoded audio (bytes) or a file path for each entry; arrow rows are read per source, in one go."""
    out: list = [None] * len(entries)
    by_source: dict[int, tuple[_ArrowSource, list[int], list[int]]] = {}
    for i, e in enumerate(entries):
        if isinstance(e.audio, tuple):
            src, row = e.audio
            by_source.setdefault(id(src), (src, [], []))
            by_source[id(src)][1].append(row)
            by_source[id(src)][2].append(i)
        else:
            path = Path(e.audio)
            if not path.is_file():
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


class _ArrowSource:
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


def _arrow_entries(sources: list[_ArrowSource], required: list[str], optional: list[str],
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


def _hub_source(repo: str, config: str | None, split: str, revision: str | None, corpus: str,
                local_help: str) -> _ArrowSource:
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
    return _ArrowSource(f"hub {repo}/{config or 'default'}/{split}", table=ds.data.table)


def _expand(path: str | Path) -> Path:
    return Path(str(path)).expanduser()


def _read_tsv(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, columns) of each non-blank line of a tab-separated file (quotes are plain characters)."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            return [(reader.line_num, r) for r in reader if r and any(x.strip() for x in r)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CorpusError(f"{path}: not a readable UTF-8 TSV file: {exc}") from exc


# --------------------------------------------------------------------------------------------- FLEURS

FLEURS_URL = "https://huggingface.co/datasets/google/fleurs"
# FLEURS codes for languages Whisper knows under another code (the part of the config before "_" otherwise).
FLEURS_TO_WHISPER = {"cmn": "zh", "nb": "no", "fil": "tl", "yue": "yue"}


def fleurs_language(config: str) -> str:
    code = config.split("_")[0]
    return FLEURS_TO_WHISPER.get(code, code)


def load_fleurs(config: str, split: str, data_dir: str | None = None, limit: int | None = None,
                max_seconds: float | None = None, where: dict[str, str] | None = None,
                text_field: str = "raw_transcription"):
    """FLEURS `config` (e.g. "ast_es") `split` (train / validation / test).

    data_dir None: the hub's parquet conversion (google/fleurs, revision refs/convert/parquet). Otherwise a
    local copy, either parquet files at {data_dir}/{config}/{split}/*.parquet (the hub conversion's layout) or
    FLEURS' original layout {data_dir}/{config}/{split}.tsv + {data_dir}/{config}/audio/{split}/*.wav
    (header-less TSV: id, file name, raw transcription, transcription, characters, num_samples, gender).
    FLEURS publishes no speaker ids: speaker is "unknown". Utterance ids are the audio file names (several
    speakers read each sentence, so the sentence id is not unique).
    """
    if text_field not in ("raw_transcription", "transcription"):
        raise ValueError(f"text_field must be 'raw_transcription' or 'transcription', got {text_field!r}")
    corpus = f"FLEURS {config}/{split}"
    language = fleurs_language(config)
    prefix = f"fleurs/{config}/{split}"
    how = (f"download it: `hf download google/fleurs --repo-type dataset --revision "
           f"refs/convert/parquet --include '{config}/{split}/*' --local-dir DIR` (parquet), or from {FLEURS_URL}"
           f"/tree/main/data/{config} take {split}.tsv and audio/{split}.tar.gz, extract the archive to "
           f"DIR/{config}/audio/{split}/ and put the TSV at DIR/{config}/{split}.tsv; then pass data_dir=DIR")

    def make(row: dict) -> Entry:
        name = row.get("path") or str(row.get("id"))
        text = row.get(text_field) if row.get(text_field) is not None else row.get("transcription")
        return Entry(f"{prefix}/{Path(str(name)).stem}", text or "", language, "unknown", "", None)

    if data_dir is None:
        src = _hub_source("google/fleurs", config, split, "refs/convert/parquet", corpus,
                          f"pass data_dir with a local copy ({how})")
        entries = _arrow_entries([src], ["audio"], ["id", "path", "transcription", "raw_transcription"], make)
        return build_dataset(corpus, entries, limit, max_seconds, where)

    root = _expand(data_dir)
    bases = [root / config, root / "data" / config]
    for base in bases:
        for sub in (split, f"partial-{split}"):
            files = sorted((base / sub).glob("*.parquet"))
            if files:
                sources = [_ArrowSource(str(f), parquet=f) for f in files]
                entries = _arrow_entries(sources, ["audio"], ["id", "path", "transcription", "raw_transcription"],
                                         make)
                return build_dataset(corpus, entries, limit, max_seconds, where)
        tsv = base / f"{split}.tsv"
        if tsv.is_file():
            entries = []
            for n, cols in _read_tsv(tsv):
                if len(cols) < 4:
                    raise CorpusError(f"{tsv} line {n}: expected at least 4 tab-separated columns (id, file name, "
                                      f"raw transcription, transcription), got {len(cols)}")
                text = cols[2] if text_field == "raw_transcription" else cols[3]
                entries.append(Entry(f"{prefix}/{Path(cols[1]).stem}", text, language, "unknown",
                                     f"{tsv} line {n}", base / "audio" / split / cols[1]))
            for e in entries:
                e.where = f"{e.audio} (listed in {e.where})"
            return build_dataset(corpus, entries, limit, max_seconds, where)
    looked = ", ".join(f"{b}/{split}/*.parquet, {b}/{split}.tsv" for b in bases)
    raise MissingDataError(f"{corpus}: not found under data_dir={root} (looked for {looked}). To get it, {how}; "
                           f"or leave data_dir unset to load the hub copy.")


# --------------------------------------------------------------------------------------------- Common Voice

CV_HELP = ("Common Voice left the Hugging Face hub in late 2025: download the release for locale {locale} from "
           "the Mozilla Data Collective (https://datacollective.mozillafoundation.org, formerly "
           "https://commonvoice.mozilla.org/datasets), extract it and pass as root the folder that holds "
           "'{locale}/' (e.g. cv-corpus-13.0-2023-03-09/, the release CL-MASR uses)")


def load_common_voice(root: str, locale: str, split: str = "test", limit: int | None = None,
                      max_seconds: float | None = None, where: dict[str, str] | None = None):
    """A local Common Voice release: {root}/{locale}/{split}.tsv (header with at least `path` and `sentence`;
    client_id, gender, locale, ... optional) and clips at {root}/{locale}/clips/<path> (MP3, usually 48 kHz).
    language = the locale before "-" (fy-NL -> fy, zh-CN -> zh); speaker = client_id."""
    corpus = f"Common Voice {locale}/{split}"
    if root is None or str(root).strip() == "":
        raise MissingDataError(f"{corpus}: no root directory given. {CV_HELP.format(locale=locale)}.")
    base = _expand(root) / locale
    tsv = base / f"{split}.tsv"
    if not tsv.is_file():
        have = sorted(p.name for p in base.glob("*.tsv")) if base.is_dir() else []
        there = f" ({base} has: {', '.join(have)})" if have else (" (that folder does not exist)" if not base.is_dir()
                                                                  else "")
        raise MissingDataError(f"{corpus}: {tsv} not found{there}. {CV_HELP.format(locale=locale)}.")
    rows = _read_tsv(tsv)
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
    return build_dataset(corpus, entries, limit, max_seconds, where)


# --------------------------------------------------------------------------------------------- MLS

MLS_LANGUAGES = {"english": "en", "german": "de", "dutch": "nl", "french": "fr", "spanish": "es", "italian": "it",
                 "portuguese": "pt", "polish": "pl"}
MLS_URL = "https://www.openslr.org/94/"


def load_mls(language: str, split: str, root: str | None = None, limit: int | None = None,
             max_seconds: float | None = None, where: dict[str, str] | None = None):
    """Multilingual LibriSpeech `language` ("german" or "de") `split` (train / dev / test).

    root given: MLS' original layout {root}/mls_{language}/{split}/transcripts.txt (lines "SPK_BOOK_UTT<TAB>text")
    with audio at {split}/audio/{SPK}/{BOOK}/{SPK}_{BOOK}_{UTT}.flac (or mls_{language}_opus/ with .opus).
    root None: the hub copy facebook/multilingual_librispeech (config = language name; no English there)."""
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

        src = _hub_source("facebook/multilingual_librispeech", name, split, None, corpus, how)
        entries = _arrow_entries([src], ["audio", "transcript"], ["id", "file", "original_path", "speaker_id"], make)
        return build_dataset(corpus, entries, limit, max_seconds, where)

    base = _expand(root)
    candidates = [base / f"mls_{name}" / split, base / f"mls_{name}_opus" / split, base / split]
    split_dir = next((c for c in candidates if (c / "transcripts.txt").is_file()), None)
    if split_dir is None:
        looked = ", ".join(str(c / "transcripts.txt") for c in candidates)
        raise MissingDataError(f"{corpus}: transcripts not found (looked for {looked}). To get it, {how}.")
    tr = split_dir / "transcripts.txt"
    entries = []
    for n, cols in _read_tsv(tr):
        if len(cols) < 2 or len(cols[0].split("_")) != 3:
            raise CorpusError(f"{tr} line {n}: expected 'SPEAKER_BOOK_UTT<TAB>transcript'")
        spk, book, _ = cols[0].split("_")
        stem = split_dir / "audio" / spk / book / cols[0]
        path = next((p for p in (stem.with_suffix(".flac"), stem.with_suffix(".opus")) if p.is_file()),
                    stem.with_suffix(".flac"))
        entries.append(Entry(f"{prefix}/{cols[0]}", cols[1], code, spk, f"{path} (listed in {tr} line {n})", path))
    return build_dataset(corpus, entries, limit, max_seconds, where)


# --------------------------------------------------------------------------------------------- ASCEND

ASCEND_LANGUAGE = {"zh": "zh", "en": "en", "mixed": "zh-en"}
ASCEND_URL = "https://huggingface.co/datasets/CAiRE/ASCEND"


def load_ascend(split: str, data_dir: str | None = None, limit: int | None = None,
                max_seconds: float | None = None, where: dict[str, str] | None = None):
    """ASCEND (Mandarin-English code-switching) `split` (train / validation / test).

    data_dir: parquet files at {data_dir}/{split}/*.parquet, {data_dir}/default/{split}/*.parquet or
    {data_dir}/*{split}*.parquet, columns id, path, audio, transcription, duration, language,
    original_speaker_id, session_id, topic. data_dir None: the hub (CAiRE/ASCEND, parquet conversion).
    language: "zh-en" for mixed rows, "zh" / "en" for monolingual ones; ASCEND's own tag is kept in `cs_label`."""
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
        src = _hub_source("CAiRE/ASCEND", None, split, "refs/convert/parquet", corpus, how)
        return build_dataset(corpus, _arrow_entries([src], *cols, make), limit, max_seconds, where, ("cs_label",))
    root = _expand(data_dir)
    patterns = [f"{split}/*.parquet", f"default/{split}/*.parquet", f"*{split}*.parquet"]
    files = next((sorted(root.glob(p)) for p in patterns if sorted(root.glob(p))), [])
    if not files:
        raise MissingDataError(f"{corpus}: no parquet files under data_dir={root} (looked for "
                               f"{', '.join(str(root / p) for p in patterns)}). To get it, {how}; or leave data_dir "
                               f"unset to load the hub copy.")
    entries = _arrow_entries([_ArrowSource(str(f), parquet=f) for f in files], *cols, make)
    return build_dataset(corpus, entries, limit, max_seconds, where, ("cs_label",))


# --------------------------------------------------------------------------------------------- LibriSpeech


def load_librispeech_dir(root: str, limit: int | None = None, max_seconds: float | None = None,
                         where: dict[str, str] | None = None):
    """A LibriSpeech-format directory (one subset, e.g. LibriSpeech/test-clean): {root}/{SPK}/{CHAPTER}/
    {SPK}-{CHAPTER}-{UTT}.flac and {SPK}-{CHAPTER}.trans.txt ("SPK-CHAPTER-UTT TEXT" lines). language "en",
    speaker = the LibriSpeech speaker id. Two-talker mixtures are made from these with cl_asr.data.mixing."""
    base = _expand(root) if root else None
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
    return build_dataset(f"LibriSpeech {base.name}", entries, limit, max_seconds, where)


# Loaders by the name scenario files use (cl_asr/scenarios/corpus.py).
LOADERS: dict[str, Callable] = {
    "fleurs": load_fleurs,
    "common_voice": load_common_voice,
    "mls": load_mls,
    "ascend": load_ascend,
    "librispeech_dir": load_librispeech_dir,
}
