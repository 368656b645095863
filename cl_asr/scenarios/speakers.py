"""Target speakers (seed 003): transcribe only the target speaker of overlapped multi-talker speech. The
target is named by an enrolment utterance of the same voice (a different sentence), turned into a speaker
embedding (resemblyzer's d-vector) that every row carries in its `enrolment` column.

Experiences move across speaker groups and conditions (by default: two-talker mixtures of one voice group,
then of new voices with background noise, then three talkers). Mixtures are made on the fly
(cl_asr/data/mixing.py) from single-talker utterances of the sentence bank; single-talker clean speech of
the voices involved is the preservation set. A strategy without speaker conditioning cannot know which
talker is wanted: that is the baseline's failure the scenario exposes.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.utils import AvalancheDataset

from ..data.corpus import CorpusSpec, synthesize_corpus
from ..data.mixing import MixSpec, mix
from ..data.text_bank import split_sentences
from ..data.tts import SAMPLE_RATE, Voice
from ..methods.base import Target
from .base import ProfileConfig, Scenario, ScenarioBuilder, register_builder
from .languages import VoiceConfig


@dataclass
class ConditionConfig:
    name: str
    voices: list[VoiceConfig] = field(metadata={"help": "the speaker group: targets and interferers are drawn from it"})
    talkers: int = field(default=2, metadata={"help": "talkers per mixture (target + talkers-1 interferers)"})
    overlap: float = field(default=0.5, metadata={"help": "share of the target each interferer overlaps"})
    sir_db: float = field(default=0.0, metadata={"help": "target-to-interferer power ratio"})
    noise_snr_db: float | None = field(default=None, metadata={"help": "white noise at this SNR; null = none"})

    def __post_init__(self):
        if self.talkers < 1:
            raise ValueError(f"condition {self.name}: talkers must be at least 1, got {self.talkers}")
        if len(self.voices) < self.talkers:
            raise ValueError(f"condition {self.name}: {self.talkers} talkers need at least as many voices, "
                             f"got {len(self.voices)}")
        MixSpec(self.overlap, self.sir_db, self.noise_snr_db)  # validates the overlap


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

    def __post_init__(self):
        names = [c.name for c in self.experiences]
        if len(set(names)) != len(names):
            raise ValueError(f"experience names must be unique, got {names}")

    def profile(self, name: str) -> ProfileConfig:
        if name not in self.profiles:
            raise ValueError(f"scenario {self.name!r} has no profile {name!r}; it has: {', '.join(self.profiles)}")
        return self.profiles[name]


def mixture_dataset(name: str, sources: list[dict], cond: ConditionConfig, max_seconds: float, seed: int,
                    progress_label: str = ""):
    """Mixtures from source rows. `sources[i]` has target / interferers / enrolment audio (16 kHz arrays)
    plus the target's text and speaker: returns a dataset with the standard columns plus `enrolment`
    (speaker embedding of the enrolment audio) and `mix` (offsets, overlap, gains as JSON)."""
    import json

    import datasets

    from ..data.corpus import _features
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
        rows["mix"].append(json.dumps(facts))
    features = _features({"enrolment": datasets.List(datasets.Value("float32")), "mix": datasets.Value("string")})
    ds = datasets.Dataset.from_dict(rows, features=features)
    return ds.with_format("numpy", columns=["audio", "enrolment"], output_all_columns=True)


@register_builder("speakers")
class SpeakersBuilder(ScenarioBuilder):
    config_class = SpeakersConfig

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

    def build(self, profile: ProfileConfig, backbone, feature_extractor, progress: bool = True) -> Scenario:
        cfg = self.config
        train_pool, test_pool = split_sentences(cfg.language, cfg.test_pool)
        max_seconds = profile.encoder_window_seconds
        train, test, preservation = [], [], []
        for i, cond in enumerate(cfg.experiences):
            for split, pool, n, out in (("train", train_pool, profile.n_train, train),
                                        ("test", test_pool, profile.n_test, test)):
                name = f"{cfg.name}/{cond.name}/{split}"
                sources = self._sources(self._plan(cond, pool, n, split, i), name, progress)
                out.append(mixture_dataset(name, sources, cond, max_seconds, seed=hash_seed(name)))
        # Preservation: every voice involved, speaking alone (clean), with its enrolment embedding.
        single = ConditionConfig("single", [v for c in cfg.experiences for v in c.voices], talkers=1)
        name = f"{cfg.name}/single/test"
        sources = self._sources(self._plan(single, test_pool, profile.n_test, "test", -1), name, progress)
        preservation.append(mixture_dataset(name, sources, single, max_seconds, seed=hash_seed(name)))

        targets: dict[tuple[str, int], Target] = {}
        for i, cond in enumerate(cfg.experiences):
            for stream in ("train", "test"):
                targets[(stream, i)] = Target(stream, i, cond.name, cfg.language, cfg.language)
        targets[("preservation", 0)] = Target("preservation", 0, "single_talker", cfg.language, cfg.language)
        benchmark = benchmark_from_datasets(
            train=[AvalancheDataset([d]) for d in train], test=[AvalancheDataset([d]) for d in test],
            preservation=[AvalancheDataset([d]) for d in preservation],
        )
        durations = [float(d) for ds in (*train, *test, *preservation) for d in ds["duration"]]
        settings = {
            "decode_language": {cfg.language: cfg.language},
            "data_source": cfg.data_source,
            "conditions": {c.name: {"talkers": c.talkers, "overlap": c.overlap, "sir_db": c.sir_db,
                                    "noise_snr_db": c.noise_snr_db, "voices": len(c.voices)} for c in cfg.experiences},
            "utterances": {
                "train_per_experience": profile.n_train, "test_per_set": profile.n_test, "total": len(durations),
                "hours": round(sum(durations) / 3600, 4), "max_seconds": round(max(durations), 2),
            },
        }
        return Scenario(cfg.name, cfg.metric, benchmark, targets, settings)


def hash_seed(name: str) -> int:
    """A stable 32-bit seed from a name (Python's hash() changes between processes)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
