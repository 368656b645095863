"""Text-only domains (text-only SPT, arXiv 2412.06967): adapt Whisper to entity-heavy domains from TEXT ALONE,
one domain per experience (by default music requests, travel/assistant queries, food orders).

Training sets have transcripts (and their entities) but no audio column: a strategy that needs audio says so
and does not run; the others learn with only the decoder seeing anything (the encoder gets no input; see
Method.text_only_encoder_states). Test sets are held-out sentences (from held-out templates) synthesised
with espeak-ng. Metrics: WER and entity error rate (share of reference entities not recognised intact);
general English speech from the sentence bank is the preservation set.

Dev sets (`build(..., evaluate="dev")`, for hyper-parameter tuning: they replace the test and preservation
sets, and no test set is synthesised): per domain, the LAST `n_dev` sentences of the domain's held-out-template
pool (the test pool, whose first n_test are the test sentences; a profile whose n_test + n_dev exceed it is
refused): sentence frames never trained on, as in the test sets, but none of the test sentences. General
English: the last `n_dev` sentences of the sentence bank's train pool (never trained on here). All spoken by
the test voices, as the test sets are: dev results should predict test conditions.
"""
from __future__ import annotations

from dataclasses import dataclass


from ..data.corpus import CorpusSpec, synthesize_corpus
from ..data.domain_text import DOMAINS, domain_pool, domain_sentences
from ..data.text_bank import split_sentences
from ..data.tts import Voice
from ..core import Target
from .base import ProfileConfig, Scenario, ScenarioBuilder, check_evaluate, dev_tail, register_builder
from .languages import VoiceConfig


@dataclass
class TextDomainsConfig:
    name: str
    builder: str
    description: str
    domains: list[str]
    profiles: dict[str, ProfileConfig]
    test_voices: list[VoiceConfig]
    language: str = "en"
    metric: str = "wer"
    preservation_test_pool: int = 40
    silence_seconds: float = 0.3
    data_source: str = ("synthetic: text from the project's templates filled with Faker entities (train, text "
                        "only); held-out sentences spoken by espeak-ng (test)")

    def __post_init__(self):
        for d in self.domains:
            if d not in DOMAINS:
                raise ValueError(f"domains: unknown domain {d!r}; available: {', '.join(DOMAINS)}")
        if self.language != "en":
            raise ValueError("text_domains: the domain templates are English; language must be 'en'")
        if not self.test_voices:
            raise ValueError("test_voices must name at least one voice")



def text_only_dataset(name: str, language: str, sentences) -> "datasets.Dataset":  # noqa: F821
    import datasets

    return datasets.Dataset.from_dict(
        {"id": [f"{name}/{i:05d}" for i in range(len(sentences))], "text": [s.text for s in sentences],
         "language": [language] * len(sentences), "entities": [list(s.entities) for s in sentences]},
        features=datasets.Features({"id": datasets.Value("string"), "text": datasets.Value("string"),
                                    "language": datasets.Value("string"),
                                    "entities": datasets.List(datasets.Value("string"))}),
    )


@register_builder("text_domains")
class TextDomainsBuilder(ScenarioBuilder):
    config_class = TextDomainsConfig

    def outline(self) -> dict:
        return {**super().outline(), "experiences": list(self.config.domains), "preservation": ["general_en"],
                "metric": f"{self.config.metric} (+ entity error rate)"}

    def build(self, profile: ProfileConfig, backbone, feature_extractor, progress: bool = True,
              evaluate: str = "test") -> Scenario:
        cfg = self.config
        check_evaluate(evaluate)
        voices = tuple(Voice(cfg.language, v.variant, v.rate, v.pitch) for v in cfg.test_voices)
        train, test = [], []
        for domain in cfg.domains:
            train.append(text_only_dataset(f"{cfg.name}/{domain}/train", cfg.language,
                                           domain_sentences(domain, profile.n_train, "train")))
            if evaluate == "dev":  # the held-out-template pool's end, after the test sentences
                held_out = dev_tail(domain_pool(domain, "test"), profile.n_test,
                                    profile.n_dev, f"{self.source}: {domain} (held-out-template pool)")
            else:
                held_out = domain_sentences(domain, profile.n_test, "test")
            spec = CorpusSpec(name=f"{cfg.name}/{domain}/{evaluate}", language=cfg.language,
                              sentences=tuple(s.text for s in held_out), voices=voices,
                              silence_seconds=cfg.silence_seconds)
            ds = synthesize_corpus(spec, progress=progress)
            test.append(ds.add_column("entities", [list(s.entities) for s in held_out]))
        bank_train, pool = split_sentences(cfg.language, cfg.preservation_test_pool)
        if evaluate == "dev":  # no general English is trained on: the bank's train pool's end
            general_sentences = dev_tail(bank_train, 0, profile.n_dev, f"{self.source}: general English (train pool)")
        else:
            general_sentences = pool[: profile.n_test]
        general = synthesize_corpus(CorpusSpec(name=f"{cfg.name}/general/{evaluate}", language=cfg.language,
                                               sentences=tuple(general_sentences), voices=voices,
                                               silence_seconds=cfg.silence_seconds), progress=progress)

        targets: dict[tuple[str, int], Target] = {}
        set_metrics = {}
        for i, domain in enumerate(cfg.domains):
            for stream in ("train", "test"):
                targets[(stream, i)] = Target(stream, i, domain, cfg.language, cfg.language)
            set_metrics[("test", i)] = ("wer", "eer", "cer")
        targets[("preservation", 0)] = Target("preservation", 0, "general_en", cfg.language, cfg.language)
        settings = {"decode_language": {cfg.language: cfg.language}, "data_source": cfg.data_source,
                    "text_only_training": True, "evaluated_split": evaluate}
        # Training text comes from the domains' training templates, test sentences from held-out templates and
        # the preservation set from the sentence bank's test pool: no training sentence is evaluated (leaks.py
        # compares the text-only training sets' transcripts with every evaluated set's).
        return self.assemble(profile, train, test, [general], targets, settings, set_metrics,
                             disjoint={"sentences": True})
