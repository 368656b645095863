"""festvox-ru: real recorded Russian read speech from Debian's package `festvox-ru` (`apt-get install festvox-ru`):
the recordings of Nickolay V. Shmyrev's `msu_ru_nsh` voice for the Festival speech synthesiser, 620 sentences
read by one male speaker, 16 kHz mono 16-bit WAV, 1.66 hours (3.8 to 18.0 s each; 254 are longer than 10 s,
none longer than 30 s). Licence: BSD-like (/usr/share/doc/festvox-ru/copyright: use, copy, modify and
redistribute freely, keeping the copyright notice, marking modifications and keeping the authors' names).

Layout (the voice folder, `root`):
  {root}/etc/txt.done.data      one line per utterance: ( ru_0002 "Она завела, прядь волнистых вол+ос за ухо, ..." )
  {root}/wav/ru_0002.wav        the recording of that line
`root`: the argument, else $FESTVOX_RU_DIR, else Debian's /usr/share/festival/voices/russian/msu_ru_nsh_clunits.

Transcripts: `+` marks the stressed vowel (for the synthesiser) and is removed; the commas Festival uses as
phrase breaks are kept (scoring's normaliser drops punctuation). No transcript holds a digit (numbers are
written as words), so no number normalisation is needed (cl_asr/metrics/text.py).

Splits: the corpus has none; this loader gives it its own, fixed by the utterance number N of `ru_N`:
  N % 4 == 0 -> test, N % 8 == 2 -> dev, any other N -> train.
The package's 620 utterances (numbers 1 to 844, with gaps) give 387 train, 75 dev and 158 test utterances,
spread over the whole text; within a 10 s encoder window 99 test and 46 dev utterances fit (the split leans to
test because this corpus serves as a preservation set, where only the evaluated splits are read). Each sentence occurs once in the package, so the splits hold disjoint sentences;
a copy where one sentence falls in two splits is refused (CorpusError naming both lines). One speaker reads
everything: the splits do not have disjoint speakers.
Ids: festvox_ru/{split}/ru_N; speaker: festvox_ru/msu_ru_nsh; language: ru.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .common import CorpusError, Entry, MissingDataError, build_dataset, expand_path, log

DEBIAN_ROOT = Path("/usr/share/festival/voices/russian/msu_ru_nsh_clunits")
ROOT_VARIABLE = "FESTVOX_RU_DIR"
PACKAGE = "festvox-ru"
INSTALL = "apt-get install festvox-ru"
SPEAKER = "festvox_ru/msu_ru_nsh"
SPLITS = ("train", "dev", "test")
TRANSCRIPTS = Path("etc") / "txt.done.data"
_LINE = re.compile(r'^\(\s*(\S+)\s+"(.*)"\s*\)$')
_ID = re.compile(r"^ru_(\d+)$")


def festvox_split(number: int) -> str:
    """The split of utterance ru_<number> (module docstring): test, dev or train."""
    return "test" if number % 4 == 0 else "dev" if number % 8 == 2 else "train"


def festvox_root(root: str | Path | None = None) -> tuple[Path, str]:
    """(the voice folder, where it came from: the argument, $FESTVOX_RU_DIR or Debian's default)."""
    if root is not None and str(root).strip():
        return expand_path(root), "root argument"
    if os.environ.get(ROOT_VARIABLE, "").strip():
        return expand_path(os.environ[ROOT_VARIABLE]), f"${ROOT_VARIABLE}"
    return DEBIAN_ROOT, "Debian's default"


def festvox_entries(root: str | Path | None = None) -> dict[str, list[Entry]]:
    """split -> its utterances (transcripts read, stress marks removed; no audio read), for the whole corpus."""
    base, came_from = festvox_root(root)
    txt = base / TRANSCRIPTS
    if not txt.is_file():
        if came_from == "Debian's default":
            raise MissingDataError(f"{PACKAGE}: {txt} not found: Debian's package {PACKAGE} is not installed; install "
                                   f"it with `{INSTALL}` (or set ${ROOT_VARIABLE} to a copy of its voice folder)")
        raise MissingDataError(f"{PACKAGE}: {txt} not found ({came_from} {base}): point it at the voice folder "
                               f"of Debian's package {PACKAGE} (`{INSTALL}` installs it at {DEBIAN_ROOT})")
    try:
        lines = txt.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{txt}: not a UTF-8 text file: {exc}") from exc
    out: dict[str, list[Entry]] = {s: [] for s in SPLITS}
    said: dict[str, tuple[str, int]] = {}  # sentence (letters only) -> (split, line) of its first occurrence
    stressed = 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        m = _LINE.match(line.strip())
        if not m:
            raise CorpusError(f'{txt} line {n}: expected `( ru_NNNN "transcript" )`, got {line.strip()[:60]!r}')
        uid, raw = m.groups()
        number = _ID.match(uid)
        if not number:
            raise CorpusError(f"{txt} line {n}: utterance id {uid!r} is not ru_<number> (the number decides its "
                              f"split)")
        split = festvox_split(int(number.group(1)))
        text = " ".join(raw.replace("+", "").split())
        stressed += "+" in raw
        key = "".join(c for c in text.casefold().replace("ё", "е") if c.isalnum())
        if key and key in said and said[key][0] != split:
            raise CorpusError(f"{txt} lines {said[key][1]} and {n}: the same sentence is in the {said[key][0]} and "
                              f"{split} splits (the splits must hold disjoint sentences)")
        said.setdefault(key, (split, n))
        wav = base / "wav" / f"{uid}.wav"
        out[split].append(Entry(f"festvox_ru/{split}/{uid}", text, "ru", SPEAKER, f"{wav} (listed in {txt} line {n})",
                                wav))
    if stressed:
        log.debug("%s: stress marks (+) removed from %d transcripts", PACKAGE, stressed)
    return out


def load_festvox_ru(split: str, root: str | None = None, limit: int | None = None, max_seconds: float | None = None,
                    where: dict[str, str] | None = None):
    """festvox-ru `split` (train / dev / test: the loader's own split by utterance number, module docstring).
    `root`: the voice folder (default $FESTVOX_RU_DIR, else Debian's path). The dataset's `split_sizes` attribute
    gives every split's size in the corpus, and `root` the folder read.
    Audio formats: WAV (the package's 16 kHz mono PCM), the files wav/<id>.wav of the ids txt.done.data lists,
    under those names; any rate libsndfile decodes is resampled to 16 kHz, as in every loader."""
    if split not in SPLITS:
        raise ValueError(f"{PACKAGE}: unknown split {split!r}; its splits are {', '.join(SPLITS)}")
    entries = festvox_entries(root)
    ds = build_dataset(f"{PACKAGE} {split}", entries[split], limit, max_seconds, where,
                       reads="the WAV files wav/<id>.wav of the ids txt.done.data lists")
    ds.split_sizes = {s: len(e) for s, e in entries.items()}
    ds.root = str(festvox_root(root)[0])
    return ds
