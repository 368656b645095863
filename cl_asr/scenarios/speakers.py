"""Target speakers (TS-Whisper, arXiv 2312.08079): transcribe only the target speaker of overlapped
multi-talker speech. The target is named by an enrolment utterance of the same voice (a different sentence),
turned into a speaker embedding (resemblyzer's d-vector) that every row carries in its `enrolment` column.

Experiences move across speaker groups and conditions (by default: two-talker mixtures of one voice group,
then of new voices with background noise, then three talkers). Mixtures are made on the fly
(cl_asr/data/mixing.py) from single-talker utterances of the sentence bank; single-talker clean speech of
the voices involved is the preservation set. A strategy without speaker conditioning cannot know which
talker is wanted: that is the baseline's failure the scenario exposes.

With `source: {kind: librispeech, train_root: ..., test_root: ...}` the talkers are real LibriSpeech speakers
instead (LibriMix-style mixtures made on the fly, scenarios/librimix.yaml): each condition draws `speakers`
speakers of each root (the roots' speaker ids shuffled with a fixed seed and dealt out to the conditions in
order, so conditions get disjoint groups while the root has enough speakers); targets, interferers and
enrolment utterances are utterances of those speakers (the enrolment never the target utterance itself);
training mixtures come from train_root, test mixtures and the single-talker preservation set from test_root.
Only the utterances used are decoded: per speaker, the first few (by id) that fit the encoder window.

Dev sets (`build(..., evaluate="dev")`, for hyper-parameter tuning: they replace the test and preservation
sets, and no test set is synthesised or read) are made as the test sets are, from other speech:
- synthetic source: targets, interferers and enrolment sentences from the language's dev sentences
  (cl_asr/data/sentences/<language>.dev.txt, none of them in the bank, so disjoint from every train and test
  sentence; the train and test plans draw from the whole bank); voices as in the test sets: each condition's
  own voice group (the closed set of enrolled users), every voice for the single-talker set.
- librispeech source: `source.dev_root` (e.g. LibriSpeech dev-clean) instead of test_root, its speakers
  dealt out to the conditions as test_root's are (LibriSpeech's subsets have disjoint speakers, so the dev
  speakers are never training speakers, as the test speakers are not).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..backbones.offline import WHISPER_LANGUAGES
from ..data.corpus import CorpusSpec, synthesize_corpus
from ..data.mixing import MixSpec, mix
from ..data.corpora import CorpusError, MissingDataError, load_librispeech_dir
from ..data.text_bank import available_languages, dev_sentences, split_sentences
from ..data.tts import SAMPLE_RATE, Voice
from ..core import Target
from .base import ProfileConfig, Scenario, ScenarioBuilder, check_evaluate, register_builder
from .corpus import expand_arg
from .languages import VoiceConfig


@dataclass
class ConditionConfig:
    name: str
    voices: list[VoiceConfig] = field(default_factory=list, metadata={
        "help": "synthetic source: the speaker group, targets and interferers are drawn from it"})
    talkers: int = field(default=2, metadata={"help": "talkers per mixture (target + talkers-1 interferers)"})
    overlap: float = field(default=0.5, metadata={"help": "share of the target each interferer overlaps"})
    sir_db: float = field(default=0.0, metadata={"help": "target-to-interferer power ratio"})
    noise_snr_db: float | None = field(default=None, metadata={"help": "white noise at this SNR; null = none"})
    speakers: int | None = field(default=None, metadata={
        "help": "librispeech source: how many speakers of each root this condition draws"})

    def __post_init__(self):
        if self.talkers < 1:
            raise ValueError(f"condition {self.name}: talkers must be at least 1, got {self.talkers}")
        if self.voices and len(self.voices) < self.talkers:
            raise ValueError(f"condition {self.name}: {self.talkers} talkers need at least as many voices, "
                             f"got {len(self.voices)}")
        if self.speakers is not None and self.speakers < self.talkers:
            raise ValueError(f"condition {self.name}: {self.talkers} talkers need at least as many speakers, "
                             f"got {self.speakers}")
        MixSpec(self.overlap, self.sir_db, self.noise_snr_db)  # validates the overlap


@dataclass
class SourceConfig:
    kind: Literal["synthetic", "librispeech"] = field(default="synthetic", metadata={
        "help": "synthetic: espeak-ng voices; librispeech: real speakers of LibriSpeech-format directories"})
    train_root: str | None = field(default=None, metadata={
        "help": "librispeech: the training speech (e.g. train-clean-100); ${VAR} / ${VAR:-default} expanded"})
    test_root: str | None = field(default=None, metadata={
        "help": "librispeech: the test and preservation speech (e.g. test-clean); ${VAR} expanded"})
    dev_root: str | None = field(default=None, metadata={
        "help": "librispeech: the dev speech (e.g. dev-clean), read instead of test_root when the scenario is "
                "built with evaluate=dev (tuning); ${VAR} expanded then only"})

    def __post_init__(self):
        roots = [k for k in ("train_root", "test_root", "dev_root") if getattr(self, k)]
        if self.kind == "librispeech" and not (self.train_root and self.test_root):
            raise ValueError("a librispeech source needs train_root and test_root")
        if self.kind == "synthetic" and roots:
            raise ValueError(f"{', '.join(roots)}: only a librispeech source reads directories")


@dataclass
class SpeakersConfig:
    name: str
    builder: str
    description: str
    experiences: list[ConditionConfig]
    profiles: dict[str, ProfileConfig]
    language: str = "en"
    metric: str = "wer"
    test_pool: int = 40
    silence_seconds: float = 0.3
    data_source: str = "synthetic: espeak-ng voices mixed on the fly; enrolment embeddings from resemblyzer"
    source: SourceConfig = field(default_factory=SourceConfig, metadata={
        "help": "where the talkers come from (default: synthetic espeak-ng voices)"})

    def __post_init__(self):
        names = [c.name for c in self.experiences]
        if len(set(names)) != len(names):
            raise ValueError(f"experience names must be unique, got {names}")
        for c in self.experiences:
            if self.source.kind == "synthetic" and (not c.voices or c.speakers is not None):
                raise ValueError(f"condition {c.name}: the synthetic source needs voices (espeak-ng voices), "
                                 f"not speakers")
            if self.source.kind == "librispeech" and (c.speakers is None or c.voices):
                raise ValueError(f"condition {c.name}: a librispeech source needs speakers (how many LibriSpeech "
                                 f"speakers the condition draws), not voices")
        if self.source.kind == "librispeech" and self.language != "en":
            raise ValueError(f"LibriSpeech is English: language must be en, got {self.language!r}")
        if self.language not in WHISPER_LANGUAGES:
            raise ValueError(f"language: {self.language!r} is not a language Whisper knows")
        if self.source.kind == "synthetic" and self.language not in available_languages():
            raise ValueError(f"language: no sentence bank for language {self.language!r} "
                             f"(have: {', '.join(available_languages())})")



def mixture_dataset(name: str, sources: list[dict], cond: ConditionConfig, max_seconds: float, seed: int,
                    progress_label: str = ""):
    """Mixtures from source rows. `sources[i]` has target / interferers / enrolment audio (16 kHz arrays)
    plus the target's text and speaker: returns a dataset with the standard columns plus `enrolment`
    (speaker embedding of the enrolment audio) and `mix` (offsets, overlap, gains as JSON)."""
    import json

    import datasets

    from ..data.corpus import dataset_features
    from ..data.speaker import speaker_embedding

    rng = np.random.default_rng(seed)
    spec = MixSpec(cond.overlap, cond.sir_db, cond.noise_snr_db, max_seconds)
    rows = {k: [] for k in ("id", "audio", "text", "language", "speaker", "duration", "enrolment", "mix")}
    for i, src in enumerate(sources):
        audio, facts = mix(src["target"], src["interferers"], spec, rng)
        rows["id"].append(f"{name}/{i:05d}")
        rows["audio"].append({"array": audio, "sampling_rate": SAMPLE_RATE})
        rows["text"].append(src["text"])
        rows["language"].append(src["language"])
        rows["speaker"].append(src["speaker"])
        rows["duration"].append(len(audio) / SAMPLE_RATE)
        rows["enrolment"].append(speaker_embedding(src["enrolment"]))
        if "ids" in src:  # real utterances: which ones were mixed (as LibriMix's metadata files record)
            facts = {**facts, "sources": src["ids"]}
        rows["mix"].append(json.dumps(facts))
    features = dataset_features({"enrolment": datasets.List(datasets.Value("float32")), "mix": datasets.Value("string")})
    ds = datasets.Dataset.from_dict(rows, features=features)
    return ds.with_format("numpy", columns=["audio", "enrolment"], output_all_columns=True)


@register_builder("speakers")
class SpeakersBuilder(ScenarioBuilder):
    config_class = SpeakersConfig

    def outline(self) -> dict:
        return {**super().outline(), "preservation": ["single_talker"]}

    def _plan(self, cond: ConditionConfig, pool: list[str], n: int, split: str, index: int):
        """Who says what: for each mixture a target (voice, sentence), interferers and an enrolment sentence
        of the target voice, all distinct sentences; fixed by the scenario, not by the run's seed."""
        rnd = random.Random(f"{self.config.name}/{cond.name}/{split}")
        voices = [Voice(self.config.language, v.variant, v.rate, v.pitch) for v in cond.voices]
        plan = []
        for i in range(n):
            target_voice = voices[i % len(voices)]
            others = rnd.sample([v for v in voices if v != target_voice], cond.talkers - 1)
            sentences = rnd.sample(pool, cond.talkers + 1)
            plan.append({"target": (sentences[0], target_voice),
                         "interferers": list(zip(sentences[1:cond.talkers], others)),
                         "enrolment": (sentences[-1], target_voice)})
        return plan

    def _sources(self, plan: list[dict], name: str, progress: bool) -> list[dict]:
        items = []
        for p in plan:
            items += [p["target"], *p["interferers"], p["enrolment"]]
        spec = CorpusSpec(name=f"{name}/sources", language=self.config.language,
                          sentences=tuple(t for t, _ in items), voices=tuple(v for _, v in items),
                          silence_seconds=0.0)
        audio = synthesize_corpus(spec, progress=progress)["audio"]
        out, k = [], 0
        for p in plan:
            n_int = len(p["interferers"])
            out.append({"target": self._padded(audio[k]["array"]), "text": p["target"][0],
                        "speaker": p["target"][1].speaker_id, "language": self.config.language,
                        "interferers": [audio[k + 1 + j]["array"] for j in range(n_int)],
                        "enrolment": audio[k + 1 + n_int]["array"]})
            k += n_int + 2
        return out

    def _padded(self, x: np.ndarray) -> np.ndarray:
        pad = np.zeros(int(round(self.config.silence_seconds * SAMPLE_RATE)), dtype=np.float32)
        return np.concatenate([pad, np.asarray(x, dtype=np.float32), pad])

    def build(self, profile: ProfileConfig, backbone, feature_extractor, progress: bool = True,
              evaluate: str = "test") -> Scenario:
        cfg = self.config
        check_evaluate(evaluate)
        evaluated = evaluate  # the split the evaluated sets come from: "test", or "dev" (never both)
        n_evaluated = profile.n_test if evaluated == "test" else profile.n_dev
        max_seconds = profile.encoder_window_seconds
        if cfg.source.kind == "librispeech":
            talkers = _LibriSpeechTalkers(self, profile, evaluated)
            make_sources = talkers.sources
            # Preservation: every test speaker involved, speaking alone (clean), with its enrolment embedding.
            single = ConditionConfig("single", talkers=1, speakers=len(talkers.groups[(evaluated, -1)]))
        else:
            train_pool, test_pool = split_sentences(cfg.language, cfg.test_pool)
            pools = {"train": train_pool, "test": test_pool} if evaluated == "test" else \
                {"train": train_pool, "dev": dev_sentences(cfg.language)}

            def make_sources(cond, split, n, name, index):
                return self._sources(self._plan(cond, pools[split], n, split, index), name, progress)

            # Preservation: every voice involved, speaking alone (clean), with its enrolment embedding.
            single = ConditionConfig("single", [v for c in cfg.experiences for v in c.voices], talkers=1)
        train, test, preservation = [], [], []
        for i, cond in enumerate(cfg.experiences):
            for split, n, out in (("train", profile.n_train, train), (evaluated, n_evaluated, test)):
                name = f"{cfg.name}/{cond.name}/{split}"
                sources = make_sources(cond, split, n, name, i)
                out.append(mixture_dataset(name, sources, cond, max_seconds, seed=hash_seed(name)))
        name = f"{cfg.name}/single/{evaluated}"
        sources = make_sources(single, evaluated, n_evaluated, name, -1)
        preservation.append(mixture_dataset(name, sources, single, max_seconds, seed=hash_seed(name)))

        targets: dict[tuple[str, int], Target] = {}
        for i, cond in enumerate(cfg.experiences):
            for stream in ("train", "test"):
                targets[(stream, i)] = Target(stream, i, cond.name, cfg.language, cfg.language)
        targets[("preservation", 0)] = Target("preservation", 0, "single_talker", cfg.language, cfg.language)
        conditions = {c.name: {"talkers": c.talkers, "overlap": c.overlap, "sir_db": c.sir_db,
                               "noise_snr_db": c.noise_snr_db, "voices": len(c.voices)} for c in cfg.experiences}
        if cfg.source.kind == "librispeech":
            for i, c in enumerate(cfg.experiences):
                del conditions[c.name]["voices"]
                conditions[c.name]["speakers"] = {s: talkers.groups[(s, i)] for s in ("train", evaluated)}
        settings = {
            "decode_language": {cfg.language: cfg.language},
            "data_source": cfg.data_source,
            "conditions": conditions,
            "evaluated_split": evaluated,
        }
        if cfg.source.kind == "librispeech":
            settings["source"] = {"kind": "librispeech", "train_root": talkers.roots["train"],
                                  f"{evaluated}_root": talkers.roots[evaluated],
                                  "max_target_seconds": talkers.max_seconds,
                                  "utterances_per_speaker": talkers.per_speaker}
        # Voices are shared by design (enrolled users: the same group speaks in train and test; a librispeech
        # source's directories decide), sentences are not: training targets come from the train pool (train_root),
        # evaluated ones from the test pool (test_root) or the dev sentences (dev_root), so no talker says a
        # training target in an evaluated set.
        return self.assemble(profile, train, test, preservation, targets, settings, disjoint={"sentences": True})


class _LibriSpeechTalkers:
    """The talkers of a librispeech source: a speaker group per (split, condition index; -1 = the single-talker
    preservation set, every test speaker of the conditions), and per speaker the first `per_speaker[split]`
    utterances (by id) that fit the window, decoded only when the speaker is first used."""

    def __init__(self, builder: "SpeakersBuilder", profile: ProfileConfig, evaluated: str = "test"):
        cfg = self.cfg = builder.config
        self.padded = builder._padded
        self.max_seconds = profile.encoder_window_seconds - 2 * cfg.silence_seconds  # the padded target fits
        if self.max_seconds <= 0:
            raise ValueError(f"{builder.source}: encoder window {profile.encoder_window_seconds} s leaves no room "
                             f"for targets after 2 x silence_seconds={cfg.silence_seconds}")
        if evaluated == "dev" and not cfg.source.dev_root:
            raise ValueError(f"{builder.source}: built with evaluate=dev, but source.dev_root is not set: give the "
                             f"dev speech, e.g. dev_root: \"${{LIBRISPEECH_DEV_DIR}}\" (LibriSpeech/dev-clean)")
        # only the splits built are touched: with evaluate=dev, test_root is never expanded nor read
        self.roots = {s: expand_arg(getattr(cfg.source, f"{s}_root"), f"{builder.source}: source.{s}_root", s)
                      for s in ("train", evaluated)}
        self.groups: dict[tuple[str, int], list[str]] = {}
        for split, root in self.roots.items():
            order = librispeech_speakers(root)
            random.Random(f"{cfg.name}/{split}/speakers").shuffle(order)
            start = 0
            for i, c in enumerate(cfg.experiences):  # dealt out in turn: disjoint until the root runs out
                if c.speakers > len(order):
                    raise CorpusError(f"condition {c.name} draws {c.speakers} speakers, but {root} has only "
                                      f"{len(order)}")
                self.groups[(split, i)] = [order[(start + k) % len(order)] for k in range(c.speakers)]
                start += c.speakers
        self.groups[(evaluated, -1)] = list(dict.fromkeys(
            s for i in range(len(cfg.experiences)) for s in self.groups[(evaluated, i)]))
        n = {"train": profile.n_train, evaluated: profile.n_test if evaluated == "test" else profile.n_dev}
        # Enough for distinct targets across a condition's mixtures, plus one for the enrolment.
        self.per_speaker = {s: math.ceil(n[s] / min(c.speakers for c in cfg.experiences)) + 1 for s in n}
        self._pools: dict[tuple[str, str], list[dict]] = {}

    def pool(self, split: str, speaker: str) -> list[dict]:
        if (split, speaker) not in self._pools:
            ds = load_librispeech_dir(self.roots[split], limit=self.per_speaker[split], max_seconds=self.max_seconds,
                                      where={"speaker": speaker})
            self._pools[(split, speaker)] = [{"id": r["id"], "text": r["text"], "audio": r["audio"]["array"]}
                                             for r in ds]
        return self._pools[(split, speaker)]

    def sources(self, cond: ConditionConfig, split: str, n: int, name: str, index: int) -> list[dict]:
        """The planning of SpeakersBuilder._plan with utterances for sentences: target speakers in turn, each
        one's targets in turn, interferers of other speakers of the group, an enrolment utterance of the target
        speaker other than the target; fixed by the scenario, not by the run's seed."""
        rnd = random.Random(f"{self.cfg.name}/{cond.name}/{split}")
        group = self.groups[(split, index)]
        out = []
        for i in range(n):
            speaker = group[i % len(group)]
            others = rnd.sample([s for s in group if s != speaker], cond.talkers - 1)
            pool = self.pool(split, speaker)
            if len(pool) < 2:
                raise CorpusError(f"{self.roots[split]}: speaker {speaker} has {len(pool)} utterance(s) of at most "
                                  f"{self.max_seconds:g} s; a target needs another one for its enrolment")
            t = (i // len(group)) % len(pool)
            target, enrolment = pool[t], pool[rnd.choice([k for k in range(len(pool)) if k != t])]
            interferers = [rnd.choice(self.pool(split, s)) for s in others]
            out.append({"target": self.padded(target["audio"]), "text": target["text"], "speaker": speaker,
                        "language": self.cfg.language, "interferers": [x["audio"] for x in interferers],
                        "enrolment": enrolment["audio"],
                        "ids": {"target": target["id"], "interferers": [x["id"] for x in interferers],
                                "enrolment": enrolment["id"]}})
        return out


def librispeech_speakers(root: str | None) -> list[str]:
    """Sorted speaker ids of a LibriSpeech-format directory, from its transcript file names (nothing decoded);
    a missing directory raises the loader's MissingDataError."""
    base = Path(root).expanduser() if root else None
    found = sorted({p.name.split("-")[0] for p in base.rglob("*.trans.txt")}) if base and base.is_dir() else []
    if not found:
        load_librispeech_dir(root, limit=1)  # raises MissingDataError: no such directory, or no transcripts
        raise MissingDataError(f"{root}: no LibriSpeech speakers found")
    return found


def hash_seed(name: str) -> int:
    """A stable 32-bit seed from a name (Python's hash() changes between processes)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
