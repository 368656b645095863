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
  logged in one line each (logger "cl_asr.data.corpora") and returned in the dataset's `repairs` attribute
  (with the number left out by `max_seconds`). Unreadable audio (0-byte files, non-audio files such as text
  saved as .wav, corrupt or truncated audio), NaN/inf samples, empty audio and empty or whitespace-only
  transcripts raise `CorpusError` naming the file; nothing is skipped silently.
- Data that is not there raises `MissingDataError` (a FileNotFoundError) saying what is missing, where it
  looked and how to get it.
- Audio formats: each loader's docstring says which files it reads: LibriSpeech-format directories FLAC only,
  MLS FLAC or Opus, Common Voice and FLEURS' original layout the files their TSVs name (MP3 / WAV), parquet and
  hub rows their embedded audio. A listed file that is missing while the same name with another extension is
  there (e.g. .wav where .flac is read) raises `CorpusError` saying what the loader reads and what the folder
  holds, not "missing". MP3 (Common Voice) and Opus (MLS opus release) are decoded by libsndfile through
  `soundfile`; libsndfile >= 1.1 is needed for MP3 (the wheels of soundfile >= 0.12 ship 1.2).

One module per corpus: fleurs, common_voice, mls, ascend, librispeech (LibriSpeech-format directories, the
LibriMix sources), festvox_ru (Debian's festvox-ru recordings, the `real_preservation` set `ru_real`); common holds what they share (errors, audio decoding, build_dataset).
Why not lhotse's prepare_* recipes: they read other layouts (FLEURS' metadata/ folder, MLS' metainfo.txt,
a whole LibriSpeech root; no parquet, no ASCEND), open every audio file before any `limit`, skip missing Common
Voice clips silently and return lhotse manifests, not these datasets with these ids and errors.
"""
from __future__ import annotations

from typing import Callable

from .ascend import load_ascend
from .common import SAMPLE_RATE, CorpusError, Entry, MissingDataError, build_dataset, mp3_supported, read_audio, to_16k
from .common_voice import load_common_voice
from .festvox_ru import load_festvox_ru
from .fleurs import fleurs_language, load_fleurs
from .librispeech import load_librispeech_dir
from .mls import load_mls

# Loaders by the name scenario files use (cl_asr/scenarios/corpus.py).
LOADERS: dict[str, Callable] = {
    "fleurs": load_fleurs,
    "common_voice": load_common_voice,
    "mls": load_mls,
    "ascend": load_ascend,
    "librispeech_dir": load_librispeech_dir,
    "festvox_ru": load_festvox_ru,
}

__all__ = [
    "LOADERS", "SAMPLE_RATE", "CorpusError", "Entry", "MissingDataError", "build_dataset", "fleurs_language",
    "load_ascend", "load_common_voice", "load_festvox_ru", "load_fleurs", "load_librispeech_dir", "load_mls", "mp3_supported",
    "read_audio", "to_16k",
]
