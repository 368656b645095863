"""Code-switching (SPT4ASR, arXiv 2506.21576): utterances that switch language inside the sentence, one
language pair per experience (e.g. Spanish-English, then German-English, then Mandarin-English), with a
monolingual preservation set for every language involved.

Data: the project's code-switched sentences (cl_asr/data/code_switch_text.py), each segment spoken by the
same voice variant in its own language's espeak-ng voice and joined with a short gap (docs/whisper.md,
"Synthetic speech: espeak-ng"); monolingual sets from the sentence bank. A pair is decoded with its matrix
language's token (the first of the pair), the same for every strategy. Metric: mixed error rate (Chinese
characters plus words of the other language, Chinese converted to Simplified first), with the error on each
language's part of the sentence alongside.

Dev sets (`build(..., evaluate="dev")`, for hyper-parameter tuning: they replace the test and preservation
sets, and no test set is synthesised): per pair, the LAST `n_dev` of the pair's training sentences (those after
the first test_pool; a profile whose n_train + n_dev exceed them is refused, so no dev sentence is a training
or test one and the training sentences stay the same); per monolingual preservation language, the last `n_dev`
sentences of the bank's train pool (no monolingual sentence is trained on). All spoken by the test voices, as
the test sets are: dev results should predict test conditions (voices never trained on).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


from ..backbones.offline import WHISPER_LANGUAGES
from ..data.code_switch_text import PAIRS, code_switched_sentences, sentence_text
from ..data.corpus import ESPEAK_VOICE, CorpusSpec, synthesize_corpus
from ..data.text_bank import split_sentences
from ..data.tts import Voice
from ..core import Target
from .base import ProfileConfig, Scenario, ScenarioBuilder, check_evaluate, dev_tail, register_builder
from .languages import VoiceConfig


@dataclass
class CodeSwitchingConfig:
    name: str
    builder: str
    description: str
    pairs: list[str]
    profiles: dict[str, ProfileConfig]
    train_voices: list[VoiceConfig]
    test_voices: list[VoiceConfig]
    metric: Literal["mer"] = "mer"
    decode_language: dict[str, str] = field(
        default_factory=dict, metadata={"help": "language token per pair; default: its matrix (first) language"})
    test_pool: int = 40
    monolingual_test_pool: int = 40
    silence_seconds: float = 0.3
    segment_gap_seconds: float = 0.08
    data_source: str = "synthetic: espeak-ng, segment by segment, from the project's code-switched sentences"

    def __post_init__(self):
        for pair in self.pairs:
            if pair not in PAIRS:
                raise ValueError(f"pairs: no code-switched sentences for {pair!r}; available: {', '.join(PAIRS)}")
        for pair, code in self.decode_language.items():
            if pair not in self.pairs:
                raise ValueError(f"decode_language names {pair!r}, which is not one of the pairs")
            if code not in WHISPER_LANGUAGES:
                raise ValueError(f"decode_language.{pair}: {code!r} is not a Whisper language")
        if not self.train_voices or not self.test_voices:
            raise ValueError("train_voices and test_voices must each name at least one voice")


    @property
    def languages(self) -> list[str]:
        """Every language involved, in order of first appearance: the preservation sets."""
        return list(dict.fromkeys(lang for pair in self.pairs for lang in pair.split("-")))


@register_builder("code_switching")
class CodeSwitchingBuilder(ScenarioBuilder):
    config_class = CodeSwitchingConfig

    def outline(self) -> dict:
        return {**super().outline(), "experiences": list(self.config.pairs), "preservation": self.config.languages}

    def _voices(self, lang: str, voices: list[VoiceConfig]) -> tuple[Voice, ...]:
        return tuple(Voice(ESPEAK_VOICE.get(lang, lang), v.variant, v.rate, v.pitch) for v in voices)

    def _pair_corpus(self, split: str, pair: str, segments: list, voices: list[VoiceConfig], progress: bool):
        spec = CorpusSpec(
            name=f"{self.config.name}/{pair}/{split}", language=pair,
            sentences=tuple(sentence_text(s) for s in segments),
            voices=tuple(Voice(pair, v.variant, v.rate, v.pitch) for v in voices),  # the segments' voices differ
            silence_seconds=self.config.silence_seconds,
            segments=tuple(tuple((lang, text) for lang, text in s) for s in segments),
            segment_gap_seconds=self.config.segment_gap_seconds,
        )
        return synthesize_corpus(spec, progress=progress)

    def build(self, profile: ProfileConfig, backbone, feature_extractor, progress: bool = True,
              evaluate: str = "test") -> Scenario:
        cfg = self.config
        check_evaluate(evaluate)
        train, test, preservation = {}, {}, {}
        for pair in cfg.pairs:
            sentences = code_switched_sentences(pair)
            test_pool, train_pool = sentences[: cfg.test_pool], sentences[cfg.test_pool:]
            if profile.n_test > len(test_pool) or profile.n_train > len(train_pool):
                raise ValueError(f"profile asks for {profile.n_train} train / {profile.n_test} test utterances of "
                                 f"{pair}; there are {len(train_pool)} / {len(test_pool)}")
            if evaluate == "dev":  # checked before anything is synthesised
                dev = dev_tail(train_pool, profile.n_train, profile.n_dev, f"{self.source}: {pair} (train pool)")
            train[pair] = self._pair_corpus("train", pair, train_pool[: profile.n_train], cfg.train_voices, progress)
            if evaluate == "dev":
                test[pair] = self._pair_corpus("dev", pair, dev, cfg.test_voices, progress)
            else:
                test[pair] = self._pair_corpus("test", pair, test_pool[: profile.n_test], cfg.test_voices, progress)
        for lang in cfg.languages:
            bank_train, pool = split_sentences(lang, cfg.monolingual_test_pool)
            if profile.n_test > len(pool):
                raise ValueError(f"profile asks for {profile.n_test} test utterances of {lang}; the bank has {len(pool)}")
            if evaluate == "dev":  # nothing monolingual is trained on: the bank's train pool's end
                name, sentences = f"{cfg.name}/{lang}/dev", dev_tail(
                    bank_train, 0, profile.n_dev, f"{self.source}: {lang} (train pool)")
            else:
                name, sentences = f"{cfg.name}/{lang}/test", pool[: profile.n_test]
            spec = CorpusSpec(name=name, language=lang, sentences=tuple(sentences),
                              voices=self._voices(lang, cfg.test_voices), silence_seconds=cfg.silence_seconds)
            preservation[lang] = synthesize_corpus(spec, progress=progress)

        decode = {pair: cfg.decode_language.get(pair, pair.split("-")[0]) for pair in cfg.pairs}
        targets: dict[tuple[str, int], Target] = {}
        set_metrics: dict[tuple[str, int], tuple[str, ...]] = {}
        for i, pair in enumerate(cfg.pairs):
            for stream in ("train", "test"):
                targets[(stream, i)] = Target(stream, i, pair, pair, decode[pair])
            set_metrics[("test", i)] = ("mer", *(f"mer_{lang}" for lang in pair.split("-")), "wer", "cer")
        for i, lang in enumerate(cfg.languages):
            targets[("preservation", i)] = Target("preservation", i, lang, lang, lang)

        settings = {"decode_language": decode, "data_source": cfg.data_source, "evaluated_split": evaluate}
        # Train sentences are each pair's sentences after the first test_pool, test ones the first test_pool (dev
        # ones the last of the pair's sentences); training voices are train_voices, evaluated ones test_voices
        # (checked before a run: leaks.py).
        return self.assemble(profile, [train[p] for p in cfg.pairs], [test[p] for p in cfg.pairs],
                             [preservation[lang] for lang in cfg.languages], targets, settings, set_metrics,
                             disjoint={"sentences": True, "voices": True})
