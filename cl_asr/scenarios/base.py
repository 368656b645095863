"""What every scenario shares: run profiles, the built `Scenario` (an Avalanche benchmark plus the identity
of each experience) and the registry of scenario builders.

A scenario is a YAML file in scenarios/ naming a `builder`; a builder is one module in this package that
registers itself with `@register_builder(name)` and declares its config dataclass.

Real-speech preservation sets (`real_preservation`, a scenario-level key every scenario file may have: a source
of REAL_PRESERVATION or a list of them) are added here, in `ScenarioBuilder.assemble`, which every builder
calls: after the builder's own preservation sets, each source's test split (its dev split when the scenario is
built with evaluate="dev"), `n_real` utterances (default: n_test; n_dev for a dev split) that fit the encoder
window. A profile may name its own sources (ProfileConfig.real_preservation: the `standard` profile of
`languages` has festvox_ru), which then replace the scenario file's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..core import Target
from ..registry import Registry

BUILDERS: Registry[type["ScenarioBuilder"]] = Registry("scenario builder")
# What a built scenario evaluates (`ScenarioBuilder.build(..., evaluate=)`): its test sets (every run, the
# default), or its dev sets instead (hyper-parameter tuning: then no test set is built, synthesised or loaded).
EVALUATED_SPLITS = ("test", "dev")


def register_builder(name: str):
    return BUILDERS.register(name)


@dataclass
class ProfileConfig:
    """Sizes and schedule of one run profile (micro: tests and CI; quick: the default run; full: the paper
    setting, for a GPU)."""

    backbone: str = field(default="offline:whisper-base", metadata={"help": "backbone spec (see backbones)"})
    n_train: int = field(default=40, metadata={"help": "training utterances per experience"})
    n_test: int = field(default=12, metadata={"help": "test utterances per experience and preservation set"})
    n_dev: int | None = field(default=None, metadata={
        "help": "dev utterances per experience and preservation set, evaluated instead of the test sets when a "
                "scenario is built with evaluate='dev' (hyper-parameter tuning: no test set is built); "
                "default (null): n_test"})
    n_real: int | None = field(default=None, metadata={
        "help": "test utterances of each real-speech preservation set (real_preservation), from its test split; "
                "default (null): n_test. Built with evaluate='dev', its dev split gives n_dev"})
    real_preservation: list[str] | None = field(default=None, metadata={
        "help": "real-speech preservation sets of this profile (sources of REAL_PRESERVATION, e.g. [festvox_ru]), "
                "in place of the scenario file's real_preservation key; default (null): the scenario's"})
    epochs: int = field(default=3, metadata={"help": "training epochs per experience"})
    batch_size: int = field(default=4, metadata={"help": "training mini-batch size"})
    eval_batch_size: int = field(default=16, metadata={"help": "decoding batch size"})
    max_new_tokens: int = field(default=64, metadata={"help": "decoding cap (greedy decoding can loop)"})
    encoder_window_seconds: float = field(
        default=30.0, metadata={"help": "encoder input window; below 30 s is a speed setting that costs accuracy"}
    )
    lid_utterances: int = field(default=8, metadata={"help": "training utterances used for language ID"})
    prompt_length: int | None = field(
        default=None, metadata={"help": "override every prompt method's prompt_length (micro keeps them tiny)"}
    )
    precision: str = field(
        default="fp32",
        metadata={"help": "fp32, bf16 (autocast) or auto (bf16 on a GPU that supports it, fp32 elsewhere). fp32 by "
                  "default until bf16's quality is checked on a GPU reference run; on this project's CPU bf16 "
                  "made the encoder 2.3x slower (no bf16 units)"})
    encoder_cache_mb: float = field(
        default=2048, metadata={"help": "memory for cached encoder outputs (frozen, unprompted encoders); 0 = off"})
    encoder_cache_disk_mb: float = field(
        default=0, metadata={"help": "disk space for encoder outputs pushed out of memory (in the cache directory, "
                             "shared by runs: keys are content digests)"})
    cross_attention_cache_mb: float = field(
        default=2048, metadata={"help": "memory for cached cross-attention keys/values (decoder-side methods; "
                                "12 MB per 10 s utterance on whisper-base); 0 = off"})
    loader_workers: int = field(default=0, metadata={"help": "data-loader worker processes (log-mel extraction)"})

    def __post_init__(self):
        # fields given no value that follow another (variants.with_overrides re-derives them: --set n_test=30
        # moves n_dev with it unless n_dev is set too)
        self.derived = ("n_dev",) if self.n_dev is None else ()
        if self.n_dev is None:
            self.n_dev = self.n_test
        if self.n_real is not None and self.n_real < 1:
            raise ValueError(f"n_real must be at least 1 (or null: n_test), got {self.n_real}")
        if self.real_preservation is not None:
            self.real_preservation = list(parse_real_preservation(self.real_preservation, "real_preservation"))
        for name in ("n_train", "n_test", "n_dev", "epochs", "batch_size", "eval_batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        for name in ("encoder_cache_mb", "encoder_cache_disk_mb", "cross_attention_cache_mb", "loader_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")


@dataclass(frozen=True)
class RealPreservation:
    """A real-speech set any scenario can evaluate as a preservation set (scenario key `real_preservation`)."""

    set_name: str  # the preservation set's name in results (e.g. "ru_real")
    language: str  # its language column, also the Whisper token it is decoded with
    loader: str  # cl_asr.data.corpora.LOADERS key; called with split (test / dev), limit, max_seconds
    data_source: str  # one line for run.json
    sentence_group: str | None = None  # the corpus scenario promise group of its splits (corpus.split_promises)


REAL_PRESERVATION: dict[str, RealPreservation] = {
    "festvox_ru": RealPreservation(
        "ru_real", "ru", "festvox_ru", "festvox-ru (Debian package, BSD-like licence): 620 Russian sentences read by "
        "one male speaker, 16 kHz; the loader's own split by utterance number (cl_asr/data/corpora/festvox_ru.py)",
        sentence_group="festvox_ru"),
}


def parse_real_preservation(value, where: str) -> tuple[str, ...]:
    """The scenario key `real_preservation` (absent, a source name or a list of them) as a tuple of sources of
    REAL_PRESERVATION; anything else is a ConfigError naming the file."""
    from ..config import ConfigError

    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ConfigError(f"{where}: real_preservation expects a source name or a list of them "
                          f"({', '.join(REAL_PRESERVATION)}), got {value!r}")
    for x in items:
        if x not in REAL_PRESERVATION:
            raise ConfigError(f"{where}: real_preservation: unknown source {x!r}; known: {', '.join(REAL_PRESERVATION)}")
    twice = sorted({x for x in items if items.count(x) > 1})
    if twice:
        raise ConfigError(f"{where}: real_preservation lists {', '.join(map(repr, twice))} more than once")
    return tuple(items)


def check_evaluate(evaluate: str) -> str:
    """`evaluate`, if it is one of EVALUATED_SPLITS; else a ValueError saying what it may be."""
    if evaluate not in EVALUATED_SPLITS:
        raise ValueError(f"evaluate must be one of {', '.join(EVALUATED_SPLITS)}, got {evaluate!r}")
    return evaluate


def dev_tail(pool: list, n_used: int, n_dev: int, what: str) -> list:
    """The dev sentences of a synthetic scenario: the LAST `n_dev` of `pool`, a pool whose first `n_used` items
    are what the scenario uses today (its training or test sentences), so the dev sentences are disjoint from
    those and taking them changes nothing else. A profile whose n_used + n_dev exceed the pool is refused."""
    if n_used + n_dev > len(pool):
        room = len(pool) - n_used
        fix = (f"lower the profile's n_dev to at most {room}" if room > 0 else
               "none is left for a dev set: use a profile with a smaller n_train")
        raise ValueError(f"{what}: the profile uses {n_used} of the pool's {len(pool)} sentences and asks for "
                         f"{n_dev} dev sentences (n_dev), taken from the end of the pool so that they are "
                         f"disjoint from the used ones: {fix}")
    return list(pool[len(pool) - n_dev:])


@dataclass
class Scenario:
    """A built scenario: Avalanche streams `train`, `test` (one per experience) and `preservation`
    (sets evaluated throughout to measure what the model keeps), and a Target for each experience.

    Built with evaluate="dev", the `test` and `preservation` streams hold the experiences' and preservation
    languages' dev sets instead (same Target names, so everything downstream runs unchanged) and
    `settings["evaluated_split"]` is "dev"; no test set exists then. Built as usual it is "test"."""

    name: str
    metric: str  # the headline metric (summary, forgetting, plots)
    benchmark: Any  # avalanche CLScenario
    targets: dict[tuple[str, int], Target]
    settings: dict  # resolved settings recorded in run.json (decode languages, LID, sizes)
    # Metrics scored on each set, by (stream, index); sets not named get (metric, wer, cer). E.g. a
    # code-switched set adds its languages' parts (mer_zh, mer_en), a domain set the entity error rate.
    set_metrics: dict[tuple[str, int], tuple[str, ...]] = field(default_factory=dict)
    # What the builder promises beyond "no recording in both a training and an evaluated set" (always checked):
    # "sentences" (no speaker says the same sentence in both; text-only training sets: no shared transcript)
    # and "voices" (no shared speaker), each True for every pair of sets or {(stream, index): group} for pairs
    # within a group. `check_disjoint` refuses a scenario that breaks them (cl_asr/scenarios/leaks.py).
    disjoint: dict = field(default_factory=dict)

    def check_disjoint(self) -> None:
        """Raise SplitLeakError (a ValueError) if a training set shares an utterance (audio content) with an
        evaluated set (test and preservation sets, or, built with evaluate="dev", the dev sets in their place),
        or a sentence or voice where `disjoint` promises none; a separate `dev` stream is checked against test."""
        from .leaks import check_disjoint

        check_disjoint(self)

    @property
    def evaluated_split(self) -> str:
        """"test", or "dev" for a scenario built with evaluate="dev" (its test stream then holds dev sets)."""
        return self.settings.get("evaluated_split", "test")

    @staticmethod
    def set_datasets(experience) -> list:
        """The Hugging Face datasets one experience's set is made of (columns id, text, ..., audio if any)."""
        return _hf_datasets(experience.dataset)

    def metrics_for(self, stream: str, index: int) -> tuple[str, ...]:
        if (stream, index) in self.set_metrics:
            return self.set_metrics[(stream, index)]
        return tuple(dict.fromkeys((self.metric, "wer", "cer")))

    def evaluation_sets(self) -> list[tuple[str, int]]:
        return [(s, i) for (s, i) in sorted(self.targets) if s != "train"]

    @property
    def text_only_experiences(self) -> list[int]:
        """Training experiences that carry text but no audio (text-only domain adaptation, text-only SPT)."""
        return [i for i, e in enumerate(self.benchmark.train_stream) if not _has_audio(e.dataset)]

    @property
    def columns(self) -> set[str]:
        """Every column any set of the scenario has (e.g. `enrolment` for target-speaker scenarios)."""
        return {c for stream in self.benchmark.streams.values() for e in stream
                for d in _hf_datasets(e.dataset) for c in d.column_names}

    def reference_extras(self) -> dict[str, dict]:
        """id -> what scoring needs besides the transcript (code-switching segments, entities), for every
        evaluated utterance; read once, without decoding audio."""
        if not hasattr(self, "_extras"):
            self._extras = {}
            for stream in (self.benchmark.test_stream, self.benchmark.preservation_stream):
                for exp in stream:
                    for ds in _hf_datasets(exp.dataset):
                        cols = [c for c in ("segments", "entities") if c in ds.column_names]
                        if cols:
                            for row in ds.select_columns(["id", *cols]).with_format(None):
                                self._extras[row["id"]] = {c: row[c] for c in cols}
        return self._extras

    def checksums(self, leave_out: tuple[str, ...] = ()) -> dict[str, str]:
        """'stream/set' -> a hash of every row of that set (ids, transcripts, audio samples, enrolment, ...):
        what the results were computed on. run.json keeps them; a resumed run must see the same. Columns in
        `leave_out` are not hashed: with ("id",) it is the set's content alone, the same for the same audio and
        transcripts whatever their ids (run.json's content_checksums, by which `compare` pairs runs' sets)."""
        import hashlib

        import pyarrow as pa

        out = {}
        for stream_name, stream in self.benchmark.streams.items():
            for exp in stream:
                h = hashlib.blake2b(digest_size=16)
                for ds in _hf_datasets(exp.dataset):
                    for batch in ds.with_format("arrow").iter(batch_size=256):
                        batch = batch.drop_columns([c for c in leave_out if c in batch.column_names])
                        sink = pa.BufferOutputStream()
                        with pa.ipc.new_stream(sink, batch.schema) as writer:
                            writer.write_table(batch)
                        h.update(sink.getvalue().to_pybytes())
                out[f"{stream_name}/{self.target_of(exp).name}"] = h.hexdigest()
        return out

    def target_of(self, experience) -> Target:
        return self.targets[(experience.origin_stream.name, experience.current_experience)]

    def joint_train_experience(self):
        """One training experience holding every experience's training set (for the joint reference). It is
        experience 0 of a 'train' stream, so the method sees the first experience's target; rows keep their
        own language, which is what the collator decodes them with."""
        from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets

        datasets = [e.dataset for e in self.benchmark.train_stream]
        joint = datasets[0]
        for d in datasets[1:]:
            joint = joint.concat(d)
        return benchmark_from_datasets(train=[joint]).train_stream[0]

    @property
    def experience_names(self) -> list[str]:
        return [t.name for (s, _), t in sorted(self.targets.items()) if s == "test"]

    def reordered(self, order: list[str]) -> "Scenario":
        """The same scenario with its experiences in `order` (cl_asr/orders.py): experience k (train and test
        set, Target index, set metrics, disjointness promises) is the one named order[k]; the preservation sets
        and every dataset are the same objects. Methods see an ordinary stream whose indices run 0, 1, ..."""
        import dataclasses as dc

        from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets

        names = self.experience_names
        if list(order) == names:
            return self
        perm = [names.index(n) for n in order]  # position k holds old experience perm[k]
        new_index = {old: k for k, old in enumerate(perm)}
        streams = {name: [e.dataset for e in stream] for name, stream in self.benchmark.streams.items()}
        for name in ("train", "test"):
            streams[name] = [streams[name][old] for old in perm]
        benchmark = benchmark_from_datasets(**streams)

        def key(k: tuple) -> tuple:
            return (k[0], new_index[k[1]]) if k[0] in ("train", "test") else k

        targets = {key(k): dc.replace(t, index=key(k)[1]) for k, t in self.targets.items()}
        disjoint = {what: v if v is True else {key(k): g for k, g in v.items()} for what, v in self.disjoint.items()}
        return Scenario(self.name, self.metric, benchmark, targets, {**self.settings, "experience_order": list(order)},
                        {key(k): m for k, m in self.set_metrics.items()}, disjoint)

    @property
    def preservation_names(self) -> list[str]:
        return [t.name for (s, _), t in sorted(self.targets.items()) if s == "preservation"]

    @property
    def decode_languages(self) -> dict[str, str]:
        return {t.language: t.decode_language for t in self.targets.values()}


def _hf_datasets(avalanche_dataset) -> list:
    """The Hugging Face datasets an AvalancheDataset was built from."""
    found, todo = [], [avalanche_dataset]
    while todo:
        d = todo.pop()
        if hasattr(d, "column_names"):
            found.append(d)
        todo += list(getattr(d, "_datasets", []) or [])
    return found


def _has_audio(avalanche_dataset) -> bool:
    return all("audio" in d.column_names for d in _hf_datasets(avalanche_dataset))


class ScenarioBuilder:
    """Builds a Scenario from its config (a dataclass with at least name, metric and `profiles`)."""

    config_class: ClassVar[type]

    def __init__(self, config, source: str, real_preservation: tuple[str, ...] = ()):
        self.config = config
        self.source = source
        self.real_preservation = tuple(real_preservation)  # the scenario file's key (REAL_PRESERVATION sources)

    def profile(self, name: str) -> ProfileConfig:
        profiles = self.config.profiles
        if name not in profiles:
            raise ValueError(f"scenario {self.config.name!r} has no profile {name!r}; it has: {', '.join(profiles)}")
        return profiles[name]

    def assemble(self, profile: ProfileConfig, train: list, test: list, preservation: list,
                 targets: dict, settings: dict, set_metrics: dict | None = None,
                 disjoint: dict | None = None) -> Scenario:
        """The Scenario from its datasets (one per experience / preservation set, in order): an Avalanche
        benchmark with train, test and preservation streams, and the utterance counts added to `settings`.
        `test` / `preservation` are the dev sets where settings["evaluated_split"] is "dev".
        `disjoint`: what the builder promises its sets keep apart besides recordings (see Scenario.disjoint).
        The scenario's real-speech preservation sets (`real_preservation`) are appended to `preservation` here;
        settings["normalisation"] says how each language's text is normalised before scoring."""
        from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
        from avalanche.benchmarks.utils import AvalancheDataset

        from ..metrics.text import normalisation_notes

        disjoint = {k: dict(v) if isinstance(v, dict) else v for k, v in (disjoint or {}).items()}
        if self.real_sources(profile):
            preservation, targets = list(preservation), dict(targets)
            self._add_real_preservation(profile, [*train, *test, *preservation], preservation, targets, settings,
                                        disjoint)

        benchmark = benchmark_from_datasets(
            train=[AvalancheDataset([d]) for d in train], test=[AvalancheDataset([d]) for d in test],
            preservation=[AvalancheDataset([d]) for d in preservation],
        )
        with_audio = [d for d in (*train, *test, *preservation) if "duration" in d.column_names]
        durations = [float(x) for d in with_audio for x in d["duration"]]
        text_only = len(with_audio) < len(train) + len(test) + len(preservation)
        split = settings.setdefault("evaluated_split", "test")
        settings.setdefault("utterances", {}).update({
            ("train_sentences_per_experience" if text_only else "train_per_experience"): profile.n_train,
            f"{split}_per_set": profile.n_test if split == "test" else profile.n_dev,
            (f"total_{split}" if text_only else "total"): len(durations),
            "hours": round(sum(durations) / 3600, 4),
            "max_seconds": round(max(durations), 2),
        })
        over = sum(d > profile.encoder_window_seconds for d in durations)
        if over:  # the encoder sees only the window: the end of each of these is cut (the report says so)
            settings["utterances"]["longer_than_window"] = over
        evaluated = [t.language for (s, _), t in sorted(targets.items(), key=lambda kv: (kv[0][0] != "test", kv[0]))
                     if s != "train"]
        settings["normalisation"] = normalisation_notes(evaluated)  # the scorer's, per language (metrics/text.py)
        return Scenario(self.config.name, self.config.metric, benchmark, targets, settings, set_metrics or {},
                        disjoint)

    def real_sources(self, profile: ProfileConfig) -> tuple[str, ...]:
        """The real-speech preservation sources of a run: the profile's own if it names them, else the file's."""
        own = getattr(profile, "real_preservation", None)
        return tuple(own) if own is not None else tuple(getattr(self, "real_preservation", ()))

    def _add_real_preservation(self, profile: ProfileConfig, sets: list, preservation: list, targets: dict,
                               settings: dict, disjoint: dict) -> None:
        """Append each `real_preservation` source's set to `preservation` and `targets` (a Target decoded with the
        set's own language token), read from its test split (settings["evaluated_split"] "dev": its dev split),
        profile.n_real utterances (default n_test; dev: n_dev) no longer than the encoder window; record source,
        split sizes and size in settings["real_preservation"], and non-zero repairs under settings["repairs"].
        In a scenario whose rows carry a target-speaker `enrolment` embedding, the set gets one too: the d-vector
        of the source's first training-split utterance (the same speaker, never an evaluated utterance)."""
        from ..data.corpora import LOADERS

        split = settings.get("evaluated_split", "test")
        n = (profile.n_real or profile.n_test) if split == "test" else profile.n_dev
        names = {t.name for t in targets.values()}
        decoded = {t.language: (t.name, t.decode_language) for t in targets.values()}
        enrolment = any("enrolment" in d.column_names for d in sets)
        for source in self.real_sources(profile):
            real = REAL_PRESERVATION[source]
            if real.set_name in names:
                raise ValueError(f"{self.source}: real_preservation {source!r} adds the set {real.set_name!r}, but the "
                                 f"scenario already has a set of that name")
            other = decoded.get(real.language)
            if other and other[1] != real.language:
                raise ValueError(f"{self.source}: real_preservation {source!r} decodes language {real.language!r} "
                                 f"as {real.language!r}, but set {other[0]!r} decodes it as {other[1]!r}")
            loader = LOADERS[real.loader]
            ds = loader(split=split, limit=n, max_seconds=profile.encoder_window_seconds)
            counts = {k: v for k, v in getattr(ds, "repairs", {}).items() if v}
            if counts:
                settings.setdefault("repairs", {})[f"{real.set_name}/{split}"] = counts
            settings.setdefault("real_preservation", {})[real.set_name] = {
                "source": source, "data_source": real.data_source, "root": getattr(ds, "root", None),
                "split": split, "split_sizes": dict(getattr(ds, "split_sizes", {})), "utterances": len(ds),
                "language": real.language, "decode_language": real.language}
            if enrolment:
                from ..data.speaker import speaker_embedding

                first = loader(split="train", limit=1, max_seconds=None)
                vector = speaker_embedding(first[0]["audio"]["array"]).tolist()
                import datasets

                ds = ds.with_format(None).add_column("enrolment", [vector] * len(ds),
                                                     feature=datasets.List(datasets.Value("float32")))
                ds = ds.with_format("numpy", columns=["audio", "enrolment"], output_all_columns=True)
                settings["real_preservation"][real.set_name]["enrolment_from"] = first[0]["id"]
            index = len(preservation)
            preservation.append(ds)
            targets[("preservation", index)] = Target("preservation", index, real.set_name, real.language,
                                                      real.language)
            names.add(real.set_name)
            decoded.setdefault(real.language, (real.set_name, real.language))
            per_set = settings.get("utterances", {}).get("per_set")
            if per_set is not None:  # corpus scenarios count every set's size
                per_set[f"preservation/{real.set_name}"] = len(ds)
            if isinstance(disjoint.get("sentences"), dict) and real.sentence_group:  # a corpus scenario's groups
                disjoint["sentences"][("preservation", index)] = real.sentence_group

    def outline(self) -> dict:
        """What `list scenarios` shows, from the config alone (no data touched): experiences in order,
        preservation sets, headline metric and data source."""
        cfg = self.config
        names = lambda items: [getattr(x, "name", x) for x in items]  # noqa: E731
        return {
            "experiences": names(getattr(cfg, "experiences", [])),
            "preservation": names(getattr(cfg, "base_languages", [])),
            "metric": cfg.metric,
            "data_source": getattr(cfg, "data_source", ""),
        }

    def build(self, profile: ProfileConfig, backbone, feature_extractor, progress: bool = True,
              evaluate: str = "test") -> Scenario:
        """The Scenario at `profile`. evaluate="test" (every run): train, test and preservation sets.
        evaluate="dev" (hyper-parameter tuning): the same training sets, and the dev sets (profile.n_dev per
        set) as the test and preservation streams; no test set is synthesised or loaded. Each builder's
        docstring says where its dev sentences (or splits) and voices come from."""
        raise NotImplementedError

