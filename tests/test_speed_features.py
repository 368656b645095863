"""Speed features must not change what is computed: the encoder-output cache (what it reuses, when it refuses,
its budget), the loss at labelled positions, and slim checkpoints (what they leave out and put back)."""
import copy

import pytest
import torch

from cl_asr.cl.collate import ASRCollator, with_prefix
from cl_asr.cl.encoder_cache import EncoderCache, cross_attention_fingerprint, encoder_fingerprint
from cl_asr.cl.fingerprint import Digests
from cl_asr.core import HiddenStatesPreHook
from cl_asr.methods import Target, get_method, method_config
from cl_asr.checkpoints import load_checkpoint, pristine_names, save_checkpoint

FEATS = torch.randn(3, 80, 3000, generator=torch.Generator().manual_seed(0))
TRAIN = Target("train", 0, "eo", "eo", "es")
TEST = Target("test", 0, "eo", "eo", "es")
ROWS = [{"text": "La hundo dormas."}, {"text": "Mi trinkas teon."}]


def make(name, model, tokenizer):
    method = get_method(name)(method_config(name, None, prompt_length=3), model, tokenizer, seed=0)
    method.features_of = lambda rows: FEATS[: len(rows)]
    method.setup()
    return method


def test_cache_returns_exactly_the_encoder_output_and_reuses_it(tiny_model):
    cache, enc = EncoderCache(), tiny_model.model.encoder
    whisper = tiny_model
    for p in tiny_model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        expected = enc(FEATS).last_hidden_state
    first = cache.encode(whisper, FEATS)
    assert torch.equal(first, expected) and (cache.hits, cache.misses) == (0, 3)
    again = cache.encode(whisper, FEATS[[2, 0]])  # any batch order: keyed per utterance by its features
    assert torch.equal(again, expected[[2, 0]]) and cache.hits == 2
    with torch.no_grad():
        enc.layers[0].fc1.weight.add_(0.01)  # an in-place change of any encoder tensor is another encoder
    changed = cache.encode(whisper, FEATS[:1])
    assert cache.misses == 4 and not torch.equal(changed, expected[:1])
    with torch.no_grad():
        assert torch.equal(changed, enc(FEATS[:1]).last_hidden_state)


def test_outputs_under_bf16_autocast_are_another_key(tiny_model):
    """Runs share the disk tier: a bf16 run's encoder outputs must never serve an fp32 run."""
    cache, whisper = EncoderCache(), tiny_model
    for p in tiny_model.parameters():
        p.requires_grad_(False)
    plain = cache.fingerprint(whisper)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert cache.fingerprint(whisper) not in (None, plain)
    assert cache.fingerprint(whisper) == plain


@pytest.mark.parametrize("name,cacheable", [
    ("zero_shot", True), ("spt_decoder", True), ("dpt", False), ("spt_entire", False), ("spt_input", False),
    ("lora", False), ("adapter", False), ("fft", False), ("lapt", False),
])
def test_only_a_frozen_unprompted_encoder_is_cached(tiny, name, cacheable):
    """Decided on the module (grads, hooks, foreign layers), not by the strategy's say-so."""
    model = copy.deepcopy(tiny.model).eval()
    method = make(name, model, tiny.tokenizer)
    if method.capabilities.trains:
        method.before_experience(TRAIN, ROWS)  # creates the experience's prompts / LoRA / adapters
    with method.route(TRAIN):
        assert (encoder_fingerprint(model, Digests()) is not None) is cacheable


def test_dropout_in_training_mode_is_not_cached(tiny):
    model = copy.deepcopy(tiny.model)
    for p in model.parameters():
        p.requires_grad_(False)
    model.model.encoder.layers[0].dropout_layer = torch.nn.Dropout(0.1)  # a stochastic layer
    model.model.encoder.train()
    assert encoder_fingerprint(model, Digests()) is None
    model.model.encoder.eval()
    assert encoder_fingerprint(model, Digests()) is not None
    model.model.encoder.layers[0].dropout_layer = torch.nn.Identity()
    model.model.encoder.config.attention_dropout = 0.1  # Whisper's functional dropout, active in training
    model.model.encoder.train()
    assert encoder_fingerprint(model, Digests()) is None


def test_memory_budget_pushes_the_oldest_out_to_disk_and_reads_it_back(tiny_model, tmp_path):
    for p in tiny_model.parameters():
        p.requires_grad_(False)
    whisper = tiny_model
    one = tiny_model.model.encoder(FEATS[:1]).last_hidden_state
    size_mb = one.numel() * 4 / 2**20
    cache = EncoderCache(memory_mb=2.5 * size_mb, disk_dir=tmp_path / "enc", disk_mb=10 * size_mb)
    cache.encode(whisper, FEATS)  # three utterances, room for two in memory
    assert cache.stats()["memory_mb"] <= 2.5 * size_mb + 1e-6 and len(list((tmp_path / "enc").glob("*.pt"))) == 1
    out = cache.encode(whisper, FEATS[:1])  # the oldest, now on disk
    assert cache.hits == 1 and torch.equal(out, one)
    fresh = EncoderCache(memory_mb=0.001, disk_dir=tmp_path / "enc", disk_mb=10 * size_mb)  # another run
    assert torch.equal(fresh.encode(whisper, FEATS[:1]), one) and fresh.hits == 1


def test_cached_training_gives_the_plain_loss_and_gradients(tiny, tiny_model):
    """The template's loss (cached encoder, vocabulary projection at labelled positions only) against the
    model's own loss from the features."""
    from cl_asr.cl.decoding import DecodeMemo
    from cl_asr.cl.template import ASRTemplate

    method = make("spt_decoder", tiny_model, tiny.tokenizer)
    method.before_experience(TRAIN, ROWS)
    collator = ASRCollator(tiny.tokenizer, tiny.feature_extractor, {"eo": "es"})
    strategy = ASRTemplate(method=method, collator=collator, target_of=lambda e: TRAIN, train_mb_size=2,
                           train_epochs=1, eval_mb_size=2, max_new_tokens=4, memo=DecodeMemo(), progress=False,
                           encoder_cache=EncoderCache())
    batch = collator([{"id": f"u{i}", "audio": {"array": torch.randn(16000).numpy() * 0.1, "sampling_rate": 16000},
                       "text": r["text"], "language": "eo"} for i, r in enumerate(ROWS)])
    strategy.experience, strategy.mbatch = object(), batch  # target_of maps any experience to TRAIN
    ours = strategy.forward().loss
    ours.backward()
    grads_ours = [p.grad.clone() for p in method.trainable_parameters()]
    for p in method.trainable_parameters():
        p.grad = None
    with method.route(TRAIN) as route:
        ids, labels = with_prefix(batch["decoder_input_ids"], batch["labels"], route.decoder_prefix)
        plain = tiny_model(input_features=batch["input_features"], decoder_input_ids=ids, labels=labels).loss
    plain.backward()
    cache = strategy.encoder_cache
    assert (cache.misses, cache.cross_misses) == (2, 2)  # encoder output and cross-attention keys/values
    assert torch.allclose(ours, plain, rtol=1e-5, atol=1e-6)
    for a, p in zip(grads_ours, method.trainable_parameters(), strict=True):
        assert torch.allclose(a, p.grad, rtol=1e-4, atol=1e-7)
    again = strategy.forward().loss  # now every key and value comes from the cache
    assert (cache.hits, cache.cross_hits) == (2, 2) and torch.allclose(again, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,cacheable", [
    ("zero_shot", True), ("spt_decoder", True), ("text_spt", False), ("fft", False),
])
def test_cross_attention_keys_values_are_cached_only_where_their_projections_are_frozen(tiny, name, cacheable):
    model = copy.deepcopy(tiny.model).eval()
    method = make(name, model, tiny.tokenizer)
    if method.capabilities.trains:
        method.before_experience(TRAIN, ROWS)
        method.trainable_parameters()  # text_spt: its decoder step trains the decoder (cross-attention included)
    with method.route(TRAIN):
        assert (cross_attention_fingerprint(model, Digests()) is not None) is cacheable


def test_cross_attention_fingerprint_follows_the_projections_and_refuses_hooks(tiny):
    model = copy.deepcopy(tiny.model).eval()
    decoder = model.model.decoder
    for p in model.parameters():
        p.requires_grad_(False)
    plain = cross_attention_fingerprint(model, Digests())
    with torch.no_grad():
        decoder.layers[0].fc1.weight.add_(0.01)  # not on the keys' / values' path
    assert cross_attention_fingerprint(model, Digests()) == plain
    with torch.no_grad():
        decoder.layers[-1].encoder_attn.v_proj.weight.add_(0.01)
    assert cross_attention_fingerprint(model, Digests()) not in (None, plain)
    changed = cross_attention_fingerprint(model, Digests())
    for module in (decoder.layers[0].encoder_attn, decoder, decoder.layers[1], model, model.model):
        # a hook that could change the states the projections see; on a layer: what the user wrote
        handle = module.register_forward_pre_hook(lambda m, args, kwargs: None, with_kwargs=True)
        assert cross_attention_fingerprint(model, Digests()) is None, module
        handle.remove()
    handle = decoder.layers[0].encoder_attn.k_proj.register_forward_hook(lambda m, args, out: None)
    assert cross_attention_fingerprint(model, Digests()) is None
    handle.remove()
    # what prompt methods install: hidden states only (by construction), and a hook on a layer's output
    handles = [decoder.layers[1].register_forward_pre_hook(HiddenStatesPreHook(lambda h: h + 1), with_kwargs=True),
               decoder.layers[0].register_forward_hook(lambda m, args, out: None)]
    assert cross_attention_fingerprint(model, Digests()) == changed
    for h in handles:
        h.remove()


@pytest.mark.parametrize("name", ["spt_entire", "lora", "fft"])
def test_slim_checkpoint_stores_what_was_trained_and_restores_the_rest(tiny, tmp_path, name):
    pristine = copy.deepcopy(tiny.model).eval()
    method = make(name, copy.deepcopy(pristine), tiny.tokenizer)
    pristine_of = pristine_names(method, pristine)
    method.before_experience(TRAIN, ROWS)
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.add_(0.01)  # as if trained
    method.after_experience(TRAIN)
    method.experiences_trained = 1
    state = {k: v.clone() for k, v in method.model.state_dict().items()}
    size = save_checkpoint(tmp_path / "c.pt", method, [-1, 0], [], [], {"x": 1}, pristine, pristine_of)
    assert torch.equal(next(iter(method.model.parameters())), next(iter(pristine.parameters()))) or name == "fft"
    live = method.model.state_dict()  # the live method got its tensors back, every one as it was
    assert live.keys() == state.keys() and all(torch.equal(v, state[k]) for k, v in live.items())
    backbone_bytes = 4 * sum(p.numel() for p in pristine.parameters())
    if name == "fft":
        assert size > 0.9 * backbone_bytes  # all but the fixed positional embeddings
    else:
        assert size < backbone_bytes / 5, size
    ckpt, again = load_checkpoint(tmp_path / "c.pt", torch.device("cpu"), pristine, tiny.tokenizer)
    restored = ckpt["method"]
    assert restored.tokenizer is tiny.tokenizer and ckpt["book"] == {"x": 1}
    assert restored.model.state_dict().keys() == state.keys()
    for k, v in restored.model.state_dict().items():
        assert torch.equal(v, state[k]), k
    # what was left out is a copy, not the pristine backbone itself
    assert all(p.data_ptr() != q.data_ptr() for p in restored.model.parameters() for q in list(pristine.parameters())[:3])
    # next save knows them again: FFT left only its fixed positional embeddings untouched
    assert len(again) == (1 if name == "fft" else len(list(pristine.parameters())))


def test_sets_decoded_together_equal_sets_decoded_one_by_one(tiny):
    """Cross-set batching (one model decodes every set alike) gives each set the hypotheses it gets alone, and
    counts them as computed, not reused."""
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils import AvalancheDataset

    from cl_asr.backbones.window import set_encoder_window, window_feature_extractor
    from cl_asr.cl.decoding import DecodeMemo
    from cl_asr.cl.template import ASRTemplate
    from cl_asr.data.corpus import CorpusSpec, synthesize_corpus
    from cl_asr.data.text_bank import load_sentences
    from cl_asr.data.tts import Voice

    sets = [synthesize_corpus(CorpusSpec(f"test/{lang}", lang, tuple(load_sentences(lang)[:2]), (Voice(lang, "m1"),)),
                              progress=False) for lang in ("eo", "de")]
    bench = benchmark_from_datasets(train=[AvalancheDataset([d]) for d in sets],
                                    test=[AvalancheDataset([d]) for d in sets])
    targets = {("test", 0): Target("test", 0, "eo", "eo", "es"), ("test", 1): Target("test", 1, "de", "de", "de")}
    model = copy.deepcopy(tiny.model).eval()
    set_encoder_window(model, 10)
    collator = ASRCollator(tiny.tokenizer, window_feature_extractor(tiny.feature_extractor, 10), {"eo": "es"})
    outputs = {}
    for together in (True, False):
        strategy = ASRTemplate(
            method=make("fft", model, tiny.tokenizer), collator=collator,
            target_of=lambda e: targets[("test", e.current_experience)], train_mb_size=2, train_epochs=1,
            eval_mb_size=4, max_new_tokens=4, memo=DecodeMemo(), progress=False)
        calls = []
        generate = model.generate
        model.generate = lambda **kw: calls.append(kw["language"]) or generate(**kw)
        try:
            if together:
                strategy.eval(list(bench.test_stream))
            else:
                for exp in bench.test_stream:
                    strategy.eval(exp)
        finally:
            del model.generate
        outputs[together] = {k: (o.ids, o.hyps, o.reused) for k, o in strategy.eval_outputs.items()}
        if together:  # one batch of both sets' 4 rows (sorted by audio length), each with its own language
            assert len(calls) == 1 and sorted(calls[0]) == ["de", "de", "es", "es"], calls
        else:
            assert calls == ["es", "de"], calls
    assert set(outputs[True]) == {("test", 0), ("test", 1)} and outputs[True] == outputs[False]
    assert all(not reused and len(hyps) == 2 for _, hyps, reused in outputs[True].values())


def test_routing_reuses_cached_encoder_outputs_with_the_results_of_no_cache(tmp_path, monkeypatch):
    """Whisper-LID and learned routing run the plain backbone over each batch before decoding it; the evaluation
    lends them its encoder cache (methods/base.py lent_encoder_cache), which under spt_decoder's frozen encoder
    holds the very outputs the decode needs. The rows are those of a run with every cache off."""
    import json

    from cl_asr.backbones import lid
    from cl_asr.cli import main
    from cl_asr.methods import learned_router

    lent = {"lid": [], "learned": []}
    real_lid, real_features = lid.language_distribution, learned_router.speech_frame_features
    monkeypatch.setattr(lid, "language_distribution", lambda m, t, f, encoder_states=None: (
        lent["lid"].append(encoder_states is not None), real_lid(m, t, f, encoder_states))[1])
    monkeypatch.setattr(learned_router, "speech_frame_features", lambda m, f, encoder_states=None: (
        lent["learned"].append(encoder_states is not None), real_features(m, f, encoder_states))[1])
    specs = "spt_decoder[eval_routing=lid],spt_decoder[eval_routing=learned]"
    used = {}
    for label, extra in (("cached", []), ("uncached", ["--no-cache"])):
        lent = {"lid": [], "learned": []}
        assert main(["run", "--scenario", "languages", "--profile", "micro", "--strategies", specs, "--out",
                     str(tmp_path / label), "--no-progress", "--no-report", *extra]) == 0
        used[label] = lent
    for name in ("results.jsonl", "predictions.jsonl"):
        assert (tmp_path / "cached" / name).read_bytes() == (tmp_path / "uncached" / name).read_bytes(), name
    for kind in ("lid", "learned"):  # evaluation batches took cached outputs; without a cache, none was lent
        assert any(used["cached"][kind]) and not any(used["uncached"][kind]), kind
    cache = json.loads((tmp_path / "cached" / "run.json").read_text())["speed"]["encoder_cache"]
    assert cache["hits"] > cache["misses"] > 0
