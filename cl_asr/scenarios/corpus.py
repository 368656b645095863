"""Scenarios on real speech corpora (FLEURS, Common Voice, MLS, ASCEND, LibriSpeech-format directories).

A scenario file lists the preservation sets (`base_languages`) and the experiences as set specs: which loader
of cl_asr.data.corpora reads it, with which arguments, which splits give the training and test sets, the
language token it is decoded with, and an optional row filter. Data is touched only in `build()`, so a scenario
file loads (and can be listed and checked) without the data present.

String loader arguments may name environment variables: `${CV_ROOT}` (required: building fails with a clear
error when unset), `${FLEURS_DIR:-}` (default after `:-`; an argument that expands to "" means None, i.e. the
loader's hub copy), and `{split}`, replaced by the split being loaded (for loaders without a split argument,
e.g. a LibriSpeech directory per subset).

Every set is cut to the profile's sizes (n_train / n_test become the loaders' `limit`: the first N utterances
sorted by id) and to the profile's encoder window (longer utterances are left out and counted in the log; the
settings record each set's actual size, and under `repairs` how many files of each set/split were resampled
to 16 kHz, down-mixed to mono or left out as too long);
its `language` column is set to the set's language and columns other than the common ones are dropped, so
every set has the synthetic corpora's schema. Targets, LID choice and settings are as in the languages builder.

Before a run, the sets are checked disjoint (cl_asr/scenarios/leaks.py): no recording in both a training and an
evaluated set, whatever the corpus; and what a corpus' own splits guarantee (`split_promises`), between sets of
that corpus read from those splits.

Dev sets (`build(..., evaluate="dev")`, for hyper-parameter tuning): each experience's and preservation set's
`dev_split` (the corpus' own dev split: FLEURS, Common Voice, MLS "dev"; ASCEND "validation"; a LibriSpeech
subset "dev-clean" for test-clean) is read instead of its test split, cut to the profile's n_dev; the test
splits are never read. The dev split's sets stand in the test and preservation streams (same names), so a run
on them is checked and scored as usual; the speakers / voices are the corpus' own (its dev speakers).
"""
from __future__ import annotations

import inspect
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ..backbones.offline import WHISPER_LANGUAGES
from ..data.corpora import LOADERS, MissingDataError
from ..data.corpora.mls import MLS_LANGUAGES
from ..core import Target
from .base import ProfileConfig, Scenario, ScenarioBuilder, check_evaluate, register_builder
from .lid_choice import choose_decode_language

log = logging.getLogger(__name__)
COLUMNS = ("id", "audio", "text", "language", "speaker", "duration")
BUILDER_ARGS = ("split", "limit", "max_seconds", "where")  # set by the builder, never in `args`
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# A corpus' own train / dev / test splits and what they keep apart, by the corpus' documentation: Common Voice's
# (CorporaCreator) hold no sentence in two of them, MLS' (Pratap et al. 2020) have disjoint speakers per language.
# FLEURS' train speakers differ from dev/test ones, but FLEURS publishes no speaker ids; ASCEND documents no such
# split property; a LibriSpeech-format directory can hold anyone's recordings. Those: audio content only.
OFFICIAL_SPLITS = ("train", "dev", "test")
# Each loader's own name for the corpus' dev split, the default of a set's dev_split (docs/corpora.md). FLEURS'
# is "dev" in its original layout and "validation" in the hub's parquet conversion: the loader takes either.
DEV_SPLITS = {"fleurs": "dev", "common_voice": "dev", "mls": "dev", "ascend": "validation", "festvox_ru": "dev"}


@dataclass
class SetSpec:
    name: str
    language: str
    loader: Literal["fleurs", "common_voice", "mls", "ascend", "librispeech_dir", "festvox_ru"]
    args: dict[str, Any] = field(default_factory=dict)
    train_split: str | None = field(default="train", metadata={"help": "split the training set comes from"})
    test_split: str = "test"
    dev_split: str | None = field(default=None, metadata={
        "help": "split the dev set comes from, read instead of test_split when the scenario is built with "
                "evaluate=dev (tuning); default: the corpus' own dev split (fleurs, common_voice, mls, festvox_ru: dev; "
                "ascend: validation; librispeech_dir: test_split with test replaced by dev, e.g. dev-clean)"})
    decode_language: str = field(default="auto", metadata={"help": "Whisper code, or auto (language ID)"})
    filter: dict[str, str] = field(default_factory=dict, metadata={"help": "keep rows whose column equals this"})
    max_seconds: float | None = field(default=None, metadata={"help": "leave out longer utterances"})

    def __post_init__(self):
        loader = LOADERS[self.loader]
        params = inspect.signature(loader).parameters
        for k in self.args:
            if k in BUILDER_ARGS:
                raise ValueError(f"set {self.name!r}: {k!r} is set by the scenario (splits, profile sizes, "
                                 f"filter, max_seconds), not in args")
            if k not in params:
                valid = [p for p in params if p not in BUILDER_ARGS]
                raise ValueError(f"set {self.name!r}: loader {self.loader!r} takes no argument {k!r}; "
                                 f"it takes: {', '.join(valid)}")
        for p, par in params.items():
            if par.default is inspect.Parameter.empty and p not in BUILDER_ARGS and p not in self.args:
                raise ValueError(f"set {self.name!r}: loader {self.loader!r} needs argument {p!r} in args")
        if self.decode_language != "auto" and self.decode_language not in WHISPER_LANGUAGES:
            raise ValueError(f"set {self.name!r}: decode_language {self.decode_language!r} is neither 'auto' "
                             f"nor a Whisper language")
        if self.dev_split is None:
            self.dev_split = default_dev_split(self.loader, self.test_split)
        if self.dev_split is not None and self.dev_split == self.test_split:
            raise ValueError(f"set {self.name!r}: dev_split and test_split are both {self.test_split!r} (tuning on "
                             f"dev would tune on the test set)")


@dataclass
class CorpusConfig:
    name: str
    builder: str
    description: str
    data_source: str = field(metadata={"help": "one line: which corpus, local copy or hub"})
    base_languages: list[SetSpec]
    experiences: list[SetSpec]
    profiles: dict[str, ProfileConfig]
    metric: Literal["cer", "wer", "mer"] = "cer"
    lid_candidates: list[str] = field(default_factory=lambda: ["en", "de", "es", "fr", "it", "pt", "nl"])

    def __post_init__(self):
        if not self.experiences:
            raise ValueError("experiences must list at least one set")
        names = [s.name for s in self.base_languages + self.experiences]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"set names used twice: {dup}")
        for s in self.experiences:
            if not s.train_split:
                raise ValueError(f"experience {s.name!r} needs a train_split")
            if s.train_split == s.test_split:
                raise ValueError(f"experience {s.name!r}: train_split and test_split are both {s.test_split!r}")
            if s.train_split == s.dev_split:
                raise ValueError(f"experience {s.name!r}: train_split and dev_split are both {s.dev_split!r}")
            if "split" not in inspect.signature(LOADERS[s.loader]).parameters and not any(
                    isinstance(v, str) and "{split}" in v for v in s.args.values()):
                raise ValueError(
                    f"experience {s.name!r}: loader {s.loader!r} takes no split, and no argument in args holds "
                    f"'{{split}}', so train_split {s.train_split!r} and test_split {s.test_split!r} would read the "
                    f"same data (every test utterance would be a training one): put '{{split}}' in its directory "
                    f"argument, e.g. root: \"${{DATA}}/{{split}}\"")
        for s in self.base_languages:
            code = s.language if s.decode_language == "auto" else s.decode_language
            if code not in WHISPER_LANGUAGES:
                raise ValueError(f"preservation set {s.name!r}: language {code!r} is not a Whisper language; "
                                 f"give decode_language")
        for code in self.lid_candidates:
            if code not in WHISPER_LANGUAGES:
                raise ValueError(f"lid_candidates: {code!r} is not a language Whisper knows")



def default_dev_split(loader: str, test_split: str) -> str | None:
    """The corpus' own dev split (DEV_SPLITS); for a LibriSpeech-format subset, test_split with test replaced by
    dev (test-clean -> dev-clean); None where there is none to name (the set then needs an explicit dev_split to
    be built with evaluate=dev)."""
    if loader in DEV_SPLITS:
        return DEV_SPLITS[loader]
    if loader == "librispeech_dir" and "test" in test_split:
        return test_split.replace("test", "dev")
    return None


def expand_arg(value: Any, where: str, split: str) -> Any:
    """Expand ${VAR} / ${VAR:-default} and {split} in a string loader argument; "" becomes None."""
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        var, default = m.group(1), m.group(2)
        if var in os.environ:
            return os.environ[var]
        if default is not None:
            return default
        raise MissingDataError(
            f"{where} is {value!r}, but the environment variable {var} is not set: set it to the directory "
            f"holding the data (e.g. `export {var}=/data/...`; docs/corpora.md says what goes there)"
        )

    out = _VAR.sub(sub, value).replace("{split}", split)
    return out if out.strip() else None


def split_promises(spec: SetSpec, split: str) -> dict[str, str]:
    """What a set read from `split` keeps apart from the corpus' other splits: promise -> group (the sets of one
    group are checked against each other; see OFFICIAL_SPLITS and Scenario.disjoint)."""
    if split not in OFFICIAL_SPLITS:  # e.g. Common Voice's validated.tsv holds its test clips too
        return {}
    if spec.loader == "common_voice":
        return {"sentences": f"common_voice/{spec.args.get('locale')}"}
    if spec.loader == "festvox_ru":  # the loader's own splits hold disjoint sentences (one speaker reads all)
        return {"sentences": "festvox_ru"}
    if spec.loader == "mls":
        language = str(spec.args.get("language"))
        name = {v: k for k, v in MLS_LANGUAGES.items()}.get(language, language)
        return {"voices": f"mls/{name}"}
    return {}


@register_builder("corpus")
class CorpusBuilder(ScenarioBuilder):
    config_class = CorpusConfig

    def load_set(self, spec: SetSpec, split: str, limit: int | None, max_seconds: float | None):
        """One set, as a dataset with exactly the common columns and the set's language."""
        loader = LOADERS[spec.loader]
        kwargs = {k: expand_arg(v, f"{self.source}: set {spec.name!r} args.{k}", split) for k, v in spec.args.items()}
        if "split" in inspect.signature(loader).parameters:
            kwargs["split"] = split
        caps = [c for c in (spec.max_seconds, max_seconds) if c is not None]
        ds = loader(**kwargs, limit=limit, max_seconds=min(caps) if caps else None, where=spec.filter or None)
        counts = {k: v for k, v in getattr(ds, "repairs", {}).items() if v}  # resampled, down-mixed, left out
        self._repairs = getattr(self, "_repairs", {})
        if counts:
            self._repairs[f"{spec.name}/{split}"] = counts
        ds = ds.with_format(None)
        ds = ds.remove_columns([c for c in ds.column_names if c not in COLUMNS or c == "language"])
        ds = ds.add_column("language", [spec.language] * len(ds)).select_columns(list(COLUMNS))
        return ds.with_format("numpy", columns=["audio"], output_all_columns=True)

    def evaluated_split(self, spec: SetSpec, evaluate: str) -> str:
        """The split a set's evaluated set is read from: its test_split, or (evaluate=dev) its dev_split."""
        if evaluate == "test":
            return spec.test_split
        if not spec.dev_split:
            raise ValueError(f"{self.source}: set {spec.name!r} has no dev_split (loader {spec.loader!r} names no "
                             f"dev split of its own): give one to build the scenario with evaluate=dev")
        return spec.dev_split

    def build(self, profile: ProfileConfig, backbone, feature_extractor, progress: bool = True,
              evaluate: str = "test") -> Scenario:
        cfg = self.config
        check_evaluate(evaluate)
        window = profile.encoder_window_seconds
        n_evaluated = profile.n_test if evaluate == "test" else profile.n_dev
        split_of = {s.name: self.evaluated_split(s, evaluate) for s in cfg.experiences + cfg.base_languages}
        self._repairs = {}
        train, test, preservation = {}, {}, {}
        for spec in cfg.experiences:
            train[spec.name] = self.load_set(spec, spec.train_split, profile.n_train, window)
            test[spec.name] = self.load_set(spec, split_of[spec.name], n_evaluated, window)
        for spec in cfg.base_languages:
            preservation[spec.name] = self.load_set(spec, split_of[spec.name], n_evaluated, window)

        decode, lid = {}, {}
        for spec in cfg.experiences:
            choice = spec.decode_language
            if choice == "auto":
                choice, lid[spec.name] = choose_decode_language(
                    backbone, feature_extractor, train[spec.name], profile.lid_utterances, cfg.lid_candidates
                )
            decode[spec.name] = choice
        for spec in cfg.base_languages:
            decode[spec.name] = spec.language if spec.decode_language == "auto" else spec.decode_language

        by_language: dict[str, tuple[str, str]] = {}
        for spec in cfg.experiences + cfg.base_languages:  # the collator decodes rows by their language
            prev = by_language.setdefault(spec.language, (spec.name, decode[spec.name]))
            if prev[1] != decode[spec.name]:
                raise ValueError(f"{self.source}: sets {prev[0]!r} and {spec.name!r} share language "
                                 f"{spec.language!r} but are decoded as {prev[1]!r} and {decode[spec.name]!r}")

        targets: dict[tuple[str, int], Target] = {}
        set_metrics: dict[tuple[str, int], tuple[str, ...]] = {}
        for i, spec in enumerate(cfg.experiences):
            for stream in ("train", "test"):
                targets[(stream, i)] = Target(stream, i, spec.name, spec.language, decode[spec.name])
            if cfg.metric == "mer" and "-" in spec.language:  # a code-switched set: also each language's part
                set_metrics[("test", i)] = ("mer", *(f"mer_{x}" for x in spec.language.split("-")), "wer", "cer")
        for i, spec in enumerate(cfg.base_languages):
            targets[("preservation", i)] = Target("preservation", i, spec.name, spec.language, decode[spec.name])

        sets = {**{f"train/{k}": v for k, v in train.items()}, **{f"test/{k}": v for k, v in test.items()},
                **{f"preservation/{k}": v for k, v in preservation.items()}}
        settings = {"decode_language": decode, "lid_probabilities": lid, "lid_candidates": cfg.lid_candidates,
                    "utterances": {"per_set": {k: len(v) for k, v in sets.items()}}, "data_source": cfg.data_source,
                    "repairs": dict(self._repairs), "evaluated_split": evaluate}  # repairs: per "set/split"
        if evaluate == "dev":  # which split each evaluated set was read from
            settings["dev_splits"] = dict(split_of)
        # Promise groups by (stream, index) of the stream a set is in: with evaluate=dev the dev sets stand in the
        # test and preservation streams, so their keys are ("test", i) / ("preservation", i), read from dev_split.
        disjoint: dict[str, dict] = {}
        splits = [*((("train", i), s, s.train_split) for i, s in enumerate(cfg.experiences)),
                  *((("test", i), s, split_of[s.name]) for i, s in enumerate(cfg.experiences)),
                  *((("preservation", i), s, split_of[s.name]) for i, s in enumerate(cfg.base_languages))]
        for key, spec, split in splits:
            for promise, group in split_promises(spec, split).items():
                disjoint.setdefault(promise, {})[key] = group
        return self.assemble(profile, [train[s.name] for s in cfg.experiences], [test[s.name] for s in cfg.experiences],
                             [preservation[s.name] for s in cfg.base_languages], targets, settings, set_metrics,
                             disjoint)
