"""Encoder outputs warmed before an experience's first epoch (EncoderCache.warm via ASRTemplate): every training
step then finds its utterance cached, the training is the same as without warming, and nothing is warmed where
the encoder may not be reused or the budget would not hold it."""
import copy

import pytest
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.utils import AvalancheDataset

from cl_asr.backbones.window import set_encoder_window, window_feature_extractor
from cl_asr.cl.collate import ASRCollator
from cl_asr.cl.decoding import DecodeMemo
from cl_asr.cl.encoder_cache import EncoderCache
from cl_asr.cl.template import ASRTemplate
from cl_asr.data.corpus import CorpusSpec, synthesize_corpus
from cl_asr.data.text_bank import load_sentences
from cl_asr.data.tts import Voice
from cl_asr.methods import Target, get_method, method_config

EPOCHS, N = 2, 5


@pytest.fixture(scope="module")
def data():
    sentences = tuple(load_sentences("eo")[:N])
    return synthesize_corpus(CorpusSpec("test/eo", "eo", sentences, (Voice("eo", "m1"),)), progress=False)


def train(tiny, name, data, cache, eval_batch=4):
    model = copy.deepcopy(tiny.model)
    set_encoder_window(model, 10)
    method = get_method(name)(method_config(name, None, prompt_length=4), model, tiny.tokenizer, seed=0)
    method.setup()
    bench = benchmark_from_datasets(train=[AvalancheDataset([data])], test=[AvalancheDataset([data])])
    collator = ASRCollator(tiny.tokenizer, window_feature_extractor(tiny.feature_extractor, 10), {"eo": "es"})
    strategy = ASRTemplate(method=method, collator=collator, target_of=lambda e: Target("train", 0, "eo", "eo", "es"),
                           train_mb_size=2, train_epochs=EPOCHS, eval_mb_size=eval_batch, max_new_tokens=4,
                           memo=DecodeMemo(), progress=False, encoder_cache=cache)
    strategy.train(bench.train_stream[0])
    return [p.detach().clone() for p in method.trainable_parameters()]


def test_warmed_cache_serves_every_step_and_trains_the_same(tiny, data, monkeypatch):
    warm = EncoderCache()
    warmed = train(tiny, "spt_decoder", data, warm)
    # each utterance encoded once, before the first epoch (2 batches of the eval size 4); every step a hit
    assert (warm.misses, warm.hits, warm.bypassed) == (N, EPOCHS * N, 0)
    assert warm.stats()["cross_attention"]["misses"] == N
    assert warm.stats()["cross_attention"]["hits"] == EPOCHS * N

    monkeypatch.setattr(EncoderCache, "warm", lambda self, model, batches: 0)  # step by step, as before
    cold = EncoderCache()
    stepwise = train(tiny, "spt_decoder", data, cold)
    assert (cold.misses, cold.hits) == (N, (EPOCHS - 1) * N)
    assert all(torch.equal(a, b) for a, b in zip(warmed, stepwise))
    assert all(torch.equal(a, b) for a, b in zip(warmed, train(tiny, "spt_decoder", data, None)))


def test_nothing_is_warmed_where_the_encoder_may_not_be_reused(tiny, data):
    cache = EncoderCache()
    train(tiny, "spt_entire", data, cache)  # encoder prompts hook the encoder
    assert (cache.misses, cache.hits) == (0, 0)
    assert cache.bypassed == EPOCHS * N  # the steps' own refusals, none added by warming


def test_warming_stops_before_the_memory_budget(tiny_model):
    for p in tiny_model.parameters():
        p.requires_grad_(False)
    feats = torch.randn(6, 80, 3000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        each = tiny_model.model.encoder(feats[:1]).last_hidden_state.numel() * 4
    cache = EncoderCache(memory_mb=3.5 * each / 2**20, cross_attention_mb=0)
    assert cache.warm(tiny_model, [feats[i: i + 2] for i in range(0, 6, 2)]) == 2  # 4 would not fit 3.5
    assert cache.misses == 2
