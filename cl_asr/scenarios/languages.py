"""Language expansion (LAPT, arXiv 2506.21577): teach Whisper languages it never saw, one per experience, while the base
languages it knows are evaluated throughout as preservation sets.

Data: the project's sentence bank spoken by espeak-ng voices (train and test voices disjoint, train and test
sentences disjoint). An unseen language has no language token of its own: which token it is decoded (and
trained) with is a scenario setting shared by every strategy; `auto` picks the candidate with the highest
mean language-ID probability on that language's training audio (docs/whisper.md, "Unseen languages: no
token of their own").

Dev sets (`build(..., evaluate="dev")`, for hyper-parameter tuning: they replace the test and preservation
sets, and no test set is synthesised): per language, the LAST `n_dev` sentences of the bank's train pool (a
profile whose n_train + n_dev exceed the pool is refused, so they are never training sentences, and the
training sentences stay the pool's first n_train), spoken by the test voices, since dev results should
predict test conditions (voices never trained on). The full profile trains on the whole train pool: no dev.

Test pool: `test_pool` sentences of each language's bank (the first of its fixed shuffle,
text_bank.split_sentences) are reserved for testing, the rest is the train pool. A profile may reserve more (its
own `test_pool`, the `standard` profile's 120, for test sets that resolve small differences), never fewer: its
test pool is then a superset of the scenario's (the same shuffle, a longer prefix), so the other profiles'
sentences are unchanged and none of their test sentences is trained on; its train pool is the rest. `plan()`
gives every set's sentences without synthesising anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


from ..backbones.offline import WHISPER_LANGUAGES
from ..data.corpus import CorpusSpec, synthesize_corpus
from ..data.text_bank import available_languages, split_sentences
from ..data.tts import Voice
from ..core import Target
from .base import ProfileConfig, Scenario, ScenarioBuilder, check_evaluate, dev_tail, register_builder
from .lid_choice import choose_decode_language


@dataclass
class LanguagesProfile(ProfileConfig):
    """A `languages` profile: ProfileConfig plus the size of its test pool."""

    test_pool: int | None = field(default=None, metadata={
        "help": "sentences of each language's bank reserved for testing in this profile (the first of the bank's "
                "fixed shuffle: a superset of the scenario's test_pool, so other profiles' sentences do not "
                "change); default (null): the scenario's test_pool"})

    def __post_init__(self):
        super().__post_init__()
        if self.test_pool is not None and self.test_pool < 1:
            raise ValueError(f"test_pool must be at least 1 (or null: the scenario's), got {self.test_pool}")


@dataclass
class VoiceConfig:
    variant: str = field(default="", metadata={"help": "espeak-ng voice variant (voices/!v), '' = default"})
    rate: int = field(default=150, metadata={"help": "words per minute"})
    pitch: int = field(default=50, metadata={"help": "0..100"})


@dataclass
class LanguagesConfig:
    name: str
    builder: str
    description: str
    base_languages: list[str]
    experiences: list[str]
    profiles: dict[str, LanguagesProfile]
    train_voices: list[VoiceConfig]
    test_voices: list[VoiceConfig]
    metric: Literal["cer", "wer"] = "cer"
    decode_language: dict[str, str] = field(default_factory=dict)
    lid_candidates: list[str] = field(default_factory=lambda: ["en", "de", "es", "fr", "it", "pt", "nl"])
    test_pool: int = 40
    silence_seconds: float = 0.3
    data_source: str = "synthetic: the project's sentence bank spoken by espeak-ng voices"

    def __post_init__(self):
        banks = set(available_languages())
        for key, langs in (("base_languages", self.base_languages), ("experiences", self.experiences)):
            for lang in langs:
                if lang not in banks:
                    raise ValueError(f"{key}: no sentence bank for language {lang!r} "
                                     f"(have: {', '.join(sorted(banks))})")
        for key, langs in (("base_languages", self.base_languages), ("lid_candidates", self.lid_candidates)):
            for lang in langs:
                if lang not in WHISPER_LANGUAGES:
                    raise ValueError(f"{key}: {lang!r} is not a language Whisper knows")
        overlap = set(self.base_languages) & set(self.experiences)
        if overlap:
            raise ValueError(f"languages both base and taught: {sorted(overlap)}")
        for lang, code in self.decode_language.items():
            if lang not in self.experiences:
                raise ValueError(f"decode_language names {lang!r}, which is not an experience")
            if code != "auto" and code not in WHISPER_LANGUAGES:
                raise ValueError(f"decode_language.{lang}: {code!r} is neither 'auto' nor a Whisper language")
        if not self.train_voices or not self.test_voices:
            raise ValueError("train_voices and test_voices must each name at least one voice")



@register_builder("languages")
class LanguagesBuilder(ScenarioBuilder):
    config_class = LanguagesConfig

    def _corpus(self, split: str, lang: str, sentences: list[str], voices: list[VoiceConfig], progress: bool):
        spec = CorpusSpec(
            name=f"{self.config.name}/{lang}/{split}",
            language=lang,
            sentences=tuple(sentences),
            voices=tuple(Voice(lang, v.variant, v.rate, v.pitch) for v in voices),
            silence_seconds=self.config.silence_seconds,
        )
        return synthesize_corpus(spec, progress=progress)

    def test_pool_size(self, profile: ProfileConfig) -> int:
        """The sentences of each bank reserved for testing under `profile`: its own test_pool, else the scenario's."""
        return getattr(profile, "test_pool", None) or self.config.test_pool

    def plan(self, profile: ProfileConfig, evaluate: str = "test") -> dict[str, dict[str, list[str]]]:
        """language -> split ("train" for taught languages; "test", or "dev" with evaluate="dev") -> its sentences,
        as build() synthesises them; nothing is synthesised here."""
        cfg = self.config
        check_evaluate(evaluate)
        pool_size, out = self.test_pool_size(profile), {}
        if pool_size < cfg.test_pool:  # its train pool would hold other profiles' test sentences
            raise ValueError(f"{self.source}: a profile's test_pool ({pool_size}) may not be smaller than the "
                             f"scenario's ({cfg.test_pool}): it would train on the other profiles' test sentences")
        for lang in cfg.experiences + cfg.base_languages:
            train_pool, test_pool = split_sentences(lang, pool_size)
            if profile.n_test > len(test_pool) or profile.n_train > len(train_pool):
                raise ValueError(
                    f"profile asks for {profile.n_train} train / {profile.n_test} test utterances of {lang}; "
                    f"the bank has {len(train_pool)} / {len(test_pool)} (test pool {pool_size})"
                )
            splits = {}
            if lang in cfg.experiences:
                splits["train"] = train_pool[: profile.n_train]
            if evaluate == "dev":  # the train pool's end: after the training sentences (of a taught language)
                used = profile.n_train if lang in cfg.experiences else 0
                splits["dev"] = dev_tail(train_pool, used, profile.n_dev, f"{self.source}: {lang} (train pool)")
            else:
                splits["test"] = test_pool[: profile.n_test]
            out[lang] = splits
        return out

    def build(self, profile: ProfileConfig, backbone, feature_extractor, progress: bool = True,
              evaluate: str = "test") -> Scenario:
        cfg = self.config
        plan = self.plan(profile, evaluate)
        train, test, preservation = {}, {}, {}
        for lang in cfg.experiences + cfg.base_languages:
            test_set = self._corpus(evaluate, lang, plan[lang][evaluate], cfg.test_voices, progress)
            if lang in cfg.experiences:
                train[lang] = self._corpus("train", lang, plan[lang]["train"], cfg.train_voices, progress)
                test[lang] = test_set
            else:
                preservation[lang] = test_set

        decode, lid = {}, {}
        for lang in cfg.experiences:
            choice = cfg.decode_language.get(lang, "auto")
            if choice == "auto":
                choice, lid[lang] = choose_decode_language(
                    backbone, feature_extractor, train[lang], profile.lid_utterances, cfg.lid_candidates
                )
            decode[lang] = choice

        targets: dict[tuple[str, int], Target] = {}
        for i, lang in enumerate(cfg.experiences):
            for stream in ("train", "test"):
                targets[(stream, i)] = Target(stream, i, lang, lang, decode[lang])
        for i, lang in enumerate(cfg.base_languages):
            targets[("preservation", i)] = Target("preservation", i, lang, lang, lang)

        settings = {"decode_language": decode, "lid_probabilities": lid, "lid_candidates": cfg.lid_candidates,
                    "evaluated_split": evaluate}
        # Train sentences come from the bank's train pool, test and preservation sentences from its test pool
        # (dev ones from the train pool's end); training voices are train_voices, evaluated ones test_voices
        # (checked before a run: leaks.py).
        return self.assemble(profile, [train[x] for x in cfg.experiences], [test[x] for x in cfg.experiences],
                             [preservation[x] for x in cfg.base_languages], targets, settings,
                             disjoint={"sentences": True, "voices": True})
