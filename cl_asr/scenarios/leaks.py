"""No leak between splits: before any work, every training set is checked disjoint from every evaluated set
(test, preservation, and dev where a scenario has one; dev also against test). A scenario built for tuning
(`build(..., evaluate="dev")`) holds its dev sets in its test and preservation streams: each is checked against
the training sets exactly as the test set it stands for, promise groups included (a corpus' dev split keeps
its train split's promises); its test sets are never built, so there is no dev-against-test pair there.

What is compared:
- audio content, always: a hash of each utterance's float32 samples and sampling rate. The same recording in
  a training and an evaluated set (a directory read for both splits, a copied split) is refused.
- what the scenario promises (`Scenario.disjoint`, declared by its builder): "sentences": no (normalised
  transcript, speaker) pair in both, i.e. the same speaker never says the same sentence in a training and an
  evaluated set; a training set without audio (text-only) is compared by transcript alone. "voices": no
  speaker in both. A promise is True (between every pair of sets) or a dict (stream, index) -> group: then it
  holds only between sets of the same group (a corpus' own splits, e.g. one Common Voice locale). Speakers
  named "unknown" or "" (a corpus without speaker ids) are never compared.

An overlap raises `SplitLeakError` (a ValueError: the command line prints it as one `error:` line), naming the
two sets, how many utterances they share and a few of them, and what to fix.
"""
from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass, field

PROMISES = ("sentences", "voices")
UNKNOWN_SPEAKERS = frozenset({"", "unknown", "none", "null", "n/a"})
EXAMPLES = 3  # shared utterances named in the message


class SplitLeakError(ValueError):
    """A training set and an evaluated set share utterances (or sentences, or voices, where promised)."""


def normalize_transcript(text: str) -> str:
    """Case, punctuation, symbols and spacing do not make a sentence different."""
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    kept = "".join(" " if unicodedata.category(c)[0] in "PSZC" else c for c in text)
    return " ".join(kept.split())


@dataclass
class _Set:
    """What the check reads of one set (no audio decoded to Python lists)."""

    stream: str
    index: int
    name: str
    audio: dict[bytes, str] = field(default_factory=dict)  # digest -> first id
    text: dict[str, str] = field(default_factory=dict)  # normalised transcript -> first id
    said: dict[tuple[str, str], str] = field(default_factory=dict)  # (transcript, speaker) -> first id
    speakers: dict[str, str] = field(default_factory=dict)  # speaker -> first id
    has_audio: bool = True

    @property
    def label(self) -> str:
        return f"{self.stream}/{self.name}"


def _audio_digests(batch) -> list[bytes]:
    """One digest per row of an Arrow batch's `audio` column ({array: list<float>, sampling_rate}), hashing
    the float32 sample bytes straight from the Arrow buffers."""
    import numpy as np
    import pyarrow as pa

    col = batch.column("audio")
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    kind = col.type
    if not pa.types.is_struct(kind) or kind.get_field_index("array") < 0:
        return [_digest(np.asarray(cell["array"]), cell.get("sampling_rate", 0)) for cell in col.to_pylist()]
    fields = col.flatten()  # children with the struct's own offset applied (StructArray.field ignores it)
    samples = fields[kind.get_field_index("array")]
    i_rate = kind.get_field_index("sampling_rate")
    rates = fields[i_rate].to_numpy(zero_copy_only=False) if i_rate >= 0 else np.zeros(len(col), dtype=np.int64)
    if not (pa.types.is_list(samples.type) or pa.types.is_large_list(samples.type)):
        return [_digest(np.asarray(cell["array"]), cell.get("sampling_rate", 0)) for cell in col.to_pylist()]
    offsets = samples.offsets.to_numpy()  # for a sliced list array these index into .values directly
    values = samples.values.to_numpy(zero_copy_only=False)
    return [_digest(values[offsets[i]:offsets[i + 1]], rates[i]) for i in range(len(col))]


def _digest(samples, rate) -> bytes:
    import numpy as np

    h = hashlib.blake2b(digest_size=16)
    h.update(int(rate or 0).to_bytes(8, "little", signed=True))
    h.update(np.ascontiguousarray(samples, dtype=np.float32).tobytes())
    return h.digest()


def read_set(datasets_, stream: str, index: int, name: str) -> _Set:
    """Digests, transcripts and speakers of one set (the Hugging Face datasets it is made of)."""
    out = _Set(stream, index, name)
    for ds in datasets_:
        cols = set(ds.column_names)
        out.has_audio = out.has_audio and "audio" in cols
        wanted = [c for c in ("id", "audio", "text", "speaker") if c in cols]
        for batch in ds.select_columns(wanted).with_format("arrow").iter(batch_size=512):
            ids = batch.column("id").to_pylist() if "id" in cols else [f"row {k}" for k in range(batch.num_rows)]
            if "audio" in cols:
                for digest, uid in zip(_audio_digests(batch), ids):
                    out.audio.setdefault(digest, uid)
            texts = [normalize_transcript(t) for t in batch.column("text").to_pylist()] if "text" in cols else []
            speakers = [str(s if s is not None else "").strip() for s in batch.column("speaker").to_pylist()] \
                if "speaker" in cols else [""] * len(ids)
            for k, uid in enumerate(ids):
                known = speakers[k].lower() not in UNKNOWN_SPEAKERS
                if known:
                    out.speakers.setdefault(speakers[k], uid)
                if texts and texts[k]:
                    out.text.setdefault(texts[k], uid)
                    if known:
                        out.said.setdefault((texts[k], speakers[k]), uid)
    return out


def _promised(promise, a: _Set, b: _Set) -> bool:
    if promise is True:
        return True
    if isinstance(promise, dict):
        group = promise.get((a.stream, a.index))
        return group is not None and group == promise.get((b.stream, b.index))
    return False


def _examples(shared: list, a: dict, b: dict, show=lambda k: None) -> str:
    parts = []
    for key in shared[:EXAMPLES]:
        ida, idb = a[key], b[key]
        what = show(key)
        ids = ida if ida == idb else f"{ida} = {idb}"
        parts.append(f"{what}: {ids}" if what else ids)
    more = f", ... ({len(shared) - EXAMPLES} more)" if len(shared) > EXAMPLES else ""
    return ", ".join(parts) + more


def _short(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[: n - 3] + "...")


AUDIO_FIX = ("the same recordings would be trained on and evaluated: give each split its own recordings (is one "
             "split's folder a copy of another's, or one directory read for both, e.g. a directory argument "
             "without '{split}'? docs/corpora.md, 'No leak between splits')")
SENTENCE_FIX = ("the same speaker says the same sentence in both (the same recording, re-encoded or re-mixed?), "
                "which this scenario promises never happens: take the evaluated sets from other data than the "
                "training sets (another split, directory or speaker)")
TEXT_FIX = ("the scenario promises disjoint sentences, and these training sentences (text only) are test "
            "sentences: take them from disjoint sentences")
VOICE_FIX = ("this scenario promises disjoint voices (speakers): take the sets from different speakers (a "
             "synthetic scenario: no voice in both train_voices and test_voices)")


def _problems(a: _Set, b: _Set, disjoint: dict) -> list[str]:
    """What sets `a` (trained on, or dev) and `b` (evaluated) share, one message per kind, strongest first."""
    found = []
    pair = f"{a.label} and {b.label}"
    shared = [k for k in a.audio if k in b.audio]
    if shared:
        found.append(f"{pair} share {len(shared)} utterance(s) by audio content (e.g. ids "
                     f"{_examples(shared, a.audio, b.audio)}): {AUDIO_FIX}")
    if _promised(disjoint.get("sentences"), a, b):
        if a.has_audio:
            shared = [k for k in a.said if k in b.said]
            if shared:
                found.append(f"{pair} share {len(shared)} (transcript, speaker) pair(s) (e.g. "
                             f"{_examples(shared, a.said, b.said, lambda k: f'{_short(k[0])} by {k[1]}')}): "
                             f"{SENTENCE_FIX}")
        else:
            shared = [k for k in a.text if k in b.text]
            if shared:
                found.append(f"{pair} share {len(shared)} transcript(s) (e.g. "
                             f"{_examples(shared, a.text, b.text, _short)}): {TEXT_FIX}")
    if _promised(disjoint.get("voices"), a, b):
        shared = [k for k in a.speakers if k in b.speakers]
        if shared:
            found.append(f"{pair} share {len(shared)} speaker(s) (e.g. "
                         f"{_examples(shared, a.speakers, b.speakers, lambda k: k)}): {VOICE_FIX}")
    return found


def check_disjoint(scenario) -> None:
    """Refuse (SplitLeakError) a scenario whose training sets share utterances with its evaluated sets, or,
    where its builder promises it, sentences or voices; dev sets are checked against test sets too."""
    disjoint = getattr(scenario, "disjoint", None) or {}
    unknown = set(disjoint) - set(PROMISES)
    if unknown:
        raise ValueError(f"scenario {scenario.name!r}: unknown disjointness promise(s) {sorted(unknown)}; "
                         f"known: {', '.join(PROMISES)}")
    sets: dict[str, list[_Set]] = {}
    for stream_name, stream in scenario.benchmark.streams.items():
        for i, exp in enumerate(stream):
            target = scenario.targets.get((stream_name, i))
            sets.setdefault(stream_name, []).append(
                read_set(scenario.set_datasets(exp), stream_name, i, target.name if target else str(i)))
    pairs = [(a, b) for a in sets.get("train", []) for s, bs in sets.items() if s != "train" for b in bs]
    pairs += [(a, b) for a in sets.get("dev", []) for b in sets.get("test", [])]
    # an experience's own test (dev) set first: the message names the most telling overlap
    pairs.sort(key=lambda p: (not (p[1].stream in ("test", "dev") and p[0].index == p[1].index), p[0].index))
    problems = [msg for a, b in pairs for msg in _problems(a, b, disjoint)]
    if problems:
        rest = len(problems) - 1
        also = f" ({rest} more overlap(s) between other sets of the scenario)" if rest else ""
        raise SplitLeakError(f"scenario {scenario.name!r}: {problems[0]}{also}")
