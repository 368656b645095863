"""pnn, piggyback and l2p (CL-MASR's parameter-isolation and prompt-pool methods) on the tiny Whisper: which
parameters learn, what stays bit-identical, parameter counts in closed form, `generate`, and each method's own
promise (earlier columns untouched, masks exactly 0/1 and W * mask, prompt choice without the task identity)."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from cl_asr.checkpoints import load_checkpoint, pristine_names, save_checkpoint
from cl_asr.cl.encoder_cache import EncoderCache
from cl_asr.methods import METHODS, Target, get_method, method_config
from cl_asr.methods.piggyback import pack_bits, unpack_bits
from cl_asr.methods.pnn import decoder_layer_size

FEATS = torch.randn(2, 80, 3000, generator=torch.Generator().manual_seed(0))
ROWS = [{"text": "La hundo dormas sur la tapiŝo."}, {"text": "Mi trinkas teon kun lakto."}]
TRAIN0, TEST0 = Target("train", 0, "eo", "eo", "es"), Target("test", 0, "eo", "eo", "es")
TRAIN1, TEST1 = Target("train", 1, "ia", "ia", "es"), Target("test", 1, "ia", "ia", "es")
BASE = Target("preservation", 0, "en", "en", "en")
NAMES = ["pnn", "piggyback", "l2p"]
L = 3  # prompt length (l2p) in these tests


def make(tiny, name, **overrides):
    cfg = method_config(name, None, prompt_length=L)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    method = get_method(name)(cfg, copy.deepcopy(tiny.model).eval(), tiny.tokenizer, seed=0,
                              base_languages=("en", "de", "es"), features_of=lambda rows: FEATS[: len(rows)])
    method.setup()
    return method


def batch(route, b=2):
    prefix = torch.tensor([route.decoder_prefix] * b, dtype=torch.long).reshape(b, -1)
    dec = torch.tensor([[50258, 50262, 50359, 50363, 400, 500]] * b)
    labels = torch.cat([torch.full((b, prefix.shape[1] + 3), -100), torch.tensor([[400, 500, 50257]] * b)], 1)
    return torch.cat([prefix, dec], 1), labels


def loss_on(method, target, feats=FEATS):
    """The training step's loss as the loop computes it: the model's cross-entropy inside the route, plus
    whatever the method's plugins add before backward (l2p's key-query matching term)."""
    with method.route(target, {"input_features": feats}) as route:
        ids, labels = batch(route, feats.shape[0])
        loss = method.model(input_features=feats, decoder_input_ids=ids, labels=labels).loss
    for plugin in method.plugins():
        holder = type("Step", (), {"loss": loss})()
        plugin.before_backward(holder)
        loss = holder.loss
    return loss


def train(method, target, steps=2, lr=1e-2):
    method.before_experience(target, ROWS)
    opt = torch.optim.AdamW(method.param_groups(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss_on(method, target).backward()
        opt.step()
    method.end_experience(target)


def decode(method, target, feats=FEATS):
    with torch.inference_mode(), method.route(target, {"input_features": feats}) as route:
        prompt_ids = torch.tensor(route.decoder_prefix) if route.decoder_prefix else None
        return method.model.generate(input_features=feats, language=target.decode_language, task="transcribe",
                                     max_new_tokens=4, prompt_ids=prompt_ids)


def test_registered_with_sources_and_a_searchable_learning_rate():
    from cl_asr.config import load_yaml
    from cl_asr.resources import BASELINE_DIR

    for name in NAMES:
        cls = METHODS.get(name)
        assert cls.description
        fields = cls.config_class.__dataclass_fields__
        assert all(f.metadata.get("help") for f in fields.values()), name
        assert "log_factor" in fields["lr"].metadata["search"], name  # `run_suite.py tune` searches lr
        data = load_yaml(BASELINE_DIR / f"{name}.yaml")
        assert data["strategy"] == name and "arXiv" in data["source"]
        assert method_config(name, "quick").lr == pytest.approx(float(data["config"]["lr"]))


@pytest.mark.parametrize("name", NAMES)
def test_a_training_step_moves_only_the_method_parameters_and_generate_works(tiny, name):
    method = make(tiny, name)
    model = method.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    method.before_experience(TRAIN0, ROWS)
    params = method.trainable_parameters()
    assert params and not any(id(p) in {id(q) for q in model.parameters()} for p in params)
    opt = torch.optim.AdamW(method.param_groups(), lr=1e-2)
    for _ in range(2):  # two steps: zero-initialised branches start moving
        opt.zero_grad()
        loss_on(method, TRAIN0).backward()
        for n, p in model.named_parameters():
            assert p.grad is None, f"{name}: backbone {n} got a gradient"
        assert any(p.grad is not None and p.grad.any() for p in params), f"{name}: nothing learned"
        opt.step()
    method.end_experience(TRAIN0)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), f"{name} changed frozen backbone weight {n}"
    assert method.trainable_parameters() == []  # between experiences nothing trains

    out = decode(method, TEST0)
    assert out.shape[0] == 2 and 1 <= out.shape[1] <= 4
    plain = tiny.model.generate(input_features=FEATS, language="en", max_new_tokens=4)
    assert method.capabilities.task_agnostic == (name == "l2p")
    if name == "l2p":  # task-agnostic: a base-language set is prompted like any other
        assert torch.equal(decode(method, BASE), decode(method, Target("test", 0, "en", "en", "en")))
    else:  # a base language is decoded by the pretrained model, exactly
        assert torch.equal(decode(method, BASE), plain)


def closed_form(name, cfg, c):
    """(trainable for the first experience, stored per experience) from the architecture alone."""
    d, f = c.d_model, c.decoder_ffn_dim
    layer = 2 * (4 * d * d + 3 * d) + 3 * 2 * d + d * f + f + f * d + d  # q, v, out with bias, k without; 3 norms
    if name == "pnn":
        return cfg.new_layers * layer, cfg.new_layers * layer
    if name == "piggyback":  # last two decoder layers; one bit per masked weight, counted as 32-bit parameters
        n = 2 * (layer if cfg.masked == "all" else 8 * d * d + 2 * d * f)
        return n, math.ceil(n / 32)
    return cfg.pool_size * (cfg.prompt_length * d + d), cfg.pool_size * (cfg.prompt_length * d + d)


@pytest.mark.parametrize("name,overrides", [("pnn", {}), ("pnn", {"new_layers": 2}), ("piggyback", {}),
                                            ("piggyback", {"masked": "linear_weights"}), ("l2p", {})])
def test_parameter_counts_are_the_closed_form(tiny, name, overrides):
    method = make(tiny, name, **overrides)
    trainable, stored = closed_form(name, method.config, method.model.config)
    method.before_experience(TRAIN0, ROWS)
    assert method.n_trainable() == trainable
    assert method.stored_parameters_per_experience() == stored
    if name == "pnn":
        assert decoder_layer_size(method.model.config) == sum(
            p.numel() for p in tiny.model.model.decoder.layers[0].parameters())


# -- pnn ---------------------------------------------------------------------------------------------------------
def test_pnn_earlier_columns_stay_bit_identical_and_each_experience_decodes_with_its_stack(tiny):
    method = make(tiny, "pnn")
    train(method, TRAIN0)
    first = {n: p.detach().clone() for n, p in method.columns["0"].named_parameters()}
    method.before_experience(TRAIN1, ROWS)
    assert {id(p) for p in method.trainable_parameters()} == {id(p) for p in method.columns["1"].parameters()}
    opt = torch.optim.AdamW(method.param_groups(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        loss_on(method, TRAIN1).backward()
        assert all(p.grad is None for p in method.columns["0"].parameters())  # frozen, though on the path
        opt.step()
    method.end_experience(TRAIN1)
    for n, p in method.columns["0"].named_parameters():
        assert torch.equal(p, first[n]), n
    # experience 1 decodes with column 0 then column 1 (CL-MASR's stack); experience 0 with column 0 only
    assert method.stack_for("1") == [*method.columns["0"], *method.columns["1"]]
    assert method.stack_for("0") == list(method.columns["0"])
    assert (method.oracle_key(TEST0), method.oracle_key(TEST1), method.oracle_key(BASE)) == ("0", "1", None)
    seen = []
    hook = method.columns["1"][0].register_forward_pre_hook(lambda m, a: seen.append(1))
    decode(method, TEST0)
    assert not seen  # experience 0's decoder does not include the later column
    decode(method, TEST1)
    assert seen
    hook.remove()


def test_pnn_columns_run_on_top_of_the_decoder_with_the_kv_cache_and_the_cross_attention_cache(tiny):
    method = make(tiny, "pnn", init="random")  # CL-MASR's initialisation: the column changes the output
    method.before_experience(TRAIN0, ROWS)
    model, decoder = method.model, method.model.model.decoder
    ids = torch.tensor([[50258, 50262, 50359, 50363, 400, 500]] * 2)
    with torch.no_grad():
        states = model.model.encoder(FEATS).last_hidden_state
        # by hand: the pretrained layers, then the column, then the final layer norm
        h = decoder.embed_tokens(ids) + decoder.embed_positions(ids, position_ids=torch.arange(6).expand(2, 6))
        mask = torch.full((6, 6), float("-inf")).triu(1)[None, None].expand(2, 1, 6, 6)
        for layer in [*decoder.layers, *method.columns["0"]]:
            h = layer(h, mask, states, use_cache=False)
        expected = model.proj_out(decoder.layer_norm(h))
        with method.route(TRAIN0):
            got = model(encoder_outputs=(states,), decoder_input_ids=ids, use_cache=False).logits
            # the loop's cached path: cached encoder states and the pretrained layers' cross-attention keys/values
            cache = EncoderCache()
            found_states, cross = cache.encode_for_decoder(model, FEATS)
            assert cross is not None  # a forward hook on the last layer keeps the cross-attention cache valid
            cached = model(encoder_outputs=(found_states,), cache=cross, use_cache=True,
                           decoder_input_ids=ids).logits
        plain = model(encoder_outputs=(states,), decoder_input_ids=ids, use_cache=False).logits
    assert torch.allclose(got, expected, atol=1e-5) and torch.allclose(cached, expected, atol=1e-5)
    assert not torch.allclose(plain, expected, atol=1e-3)  # the column is on the path only inside the route
    # generate with the KV cache (the column's layer gets its own slots) equals decoding without it
    method.end_experience(TRAIN0)
    with torch.inference_mode(), method.route(TEST0):
        with_cache = model.generate(input_features=FEATS, language="es", max_new_tokens=5)
        without = model.generate(input_features=FEATS, language="es", max_new_tokens=5, use_cache=False)
    assert torch.equal(with_cache, without)


def test_pnn_an_untrained_identity_column_decodes_like_the_backbone(tiny):
    method = make(tiny, "pnn")
    method.before_experience(TRAIN0, ROWS)
    method.end_experience(TRAIN0)
    assert torch.equal(decode(method, TEST0), tiny.model.generate(input_features=FEATS, language="es",
                                                                  task="transcribe", max_new_tokens=4))


# -- piggyback ---------------------------------------------------------------------------------------------------
def test_piggyback_masks_are_exactly_binary_and_the_masked_weight_is_w_times_mask(tiny):
    method = make(tiny, "piggyback")
    method.before_experience(TRAIN0, ROWS)
    real = method.mask_sets["0"]
    with torch.no_grad():  # some entries below the threshold, some exactly at it (kept: >= threshold)
        for k, m in real.items():
            m.copy_(torch.rand(m.shape, generator=torch.Generator().manual_seed(len(k))) * 0.01)
        real[next(iter(real))].view(-1)[0] = method.config.threshold
    masks = method.binary_masks("0")
    first = next(iter(masks))
    assert masks[first].view(-1)[0].item() == 1.0
    for slot, m in masks.items():
        assert set(m.unique().tolist()) <= {0.0, 1.0} and 0 < m.sum() < m.numel(), slot
    fc1 = method.model.model.decoder.layers[-1].fc1
    norm = method.model.model.decoder.layers[-1].final_layer_norm
    x = torch.randn(2, 5, fc1.in_features)
    mw = masks[method.slot("model.decoder.layers.1.fc1", "weight")]
    mb = masks[method.slot("model.decoder.layers.1.fc1", "bias")]
    nw = masks[method.slot("model.decoder.layers.1.final_layer_norm", "weight")]
    nb = masks[method.slot("model.decoder.layers.1.final_layer_norm", "bias")]
    with method.route(TRAIN0):
        assert torch.equal(fc1(x), F.linear(x, fc1.weight * mw, fc1.bias * mb))
        assert torch.equal(norm(x), F.layer_norm(x, norm.normalized_shape, norm.weight * nw, norm.bias * nb, norm.eps))
        # straight-through: d loss / d real mask = d loss / d (W * B) * W
        out = fc1(x).sum()
        out.backward()
    grad_weff = torch.einsum("bti,btj->ji", x, torch.ones(2, 5, fc1.out_features))
    slot = method.slot("model.decoder.layers.1.fc1", "weight")
    assert torch.allclose(real[slot].grad, grad_weff * fc1.weight)
    assert torch.equal(fc1(x), F.linear(x, fc1.weight, fc1.bias))  # outside the route: the pretrained layer
    assert "forward" not in fc1.__dict__


def test_piggyback_keeps_one_bit_per_masked_weight_after_its_experience(tiny):
    method = make(tiny, "piggyback")
    method.before_experience(TRAIN0, ROWS)
    with torch.no_grad():
        for k, m in method.mask_sets["0"].items():
            m.copy_(torch.rand(m.shape, generator=torch.Generator().manual_seed(len(k))) * 0.01)
    expected = {k: v.detach().clone() for k, v in method.binary_masks("0").items()}
    learned = decode(method, TRAIN0)  # the set being learned, from its real-valued masks
    method.end_experience(TRAIN0)
    assert "0" not in method.mask_sets and "0" in method.binary_sets
    bits = method.binary_sets["0"].bits  # the whole set: one buffer, eight masked weights to a byte
    assert bits.dtype == torch.uint8 and bits.numel() == math.ceil(method.n_masked() / 8)
    assert method.n_masked() == sum(m.numel() for m in expected.values())
    for k, m in method.binary_masks("0").items():
        assert torch.equal(m, expected[k]), k
    assert torch.equal(decode(method, TEST0), learned)  # the packed masks decode as the real-valued ones did
    x = (torch.rand(3, 5, 7) > 0.5).float()
    assert torch.equal(unpack_bits(pack_bits(x), x.shape, torch.float32), x)


# -- l2p ---------------------------------------------------------------------------------------------------------
def injected_decoder_input(method, target, feats=FEATS):
    """What the first decoder layer gets inside `target`'s route (token embeddings, prompts, positions)."""
    seen = {}
    hook = method.model.model.decoder.layers[0].register_forward_pre_hook(lambda m, a: seen.update(h=a[0]))
    try:
        with method.route(target, {"input_features": feats}) as route, torch.no_grad():
            ids, _ = batch(route, feats.shape[0])
            method.model(input_features=feats, decoder_input_ids=ids)
    finally:
        hook.remove()
    return seen["h"], ids


def test_l2p_chooses_prompts_without_the_experience_identity(tiny):
    method = make(tiny, "l2p")
    train(method, TRAIN0)
    targets = [TEST0, TEST1, Target("test", 7, "xx", "xx", "es"), BASE, Target("preservation", 2, "es", "es", "es")]
    hidden = [injected_decoder_input(method, t)[0] for t in targets]
    assert all(torch.equal(h, hidden[0]) for h in hidden)  # the same prompts for the same audio, whatever the set
    outputs = [decode(method, Target(t.stream, t.index, t.name, t.language, "es")) for t in targets]
    assert all(torch.equal(o, outputs[0]) for o in outputs)
    # ... and per utterance: a row's prompts do not depend on the other rows of its batch
    alone = injected_decoder_input(method, TEST0, FEATS[1:])[0]
    assert torch.allclose(alone[0], hidden[0][1], atol=1e-6)


def test_l2p_picks_the_prompts_whose_keys_match_the_query(tiny):
    method = make(tiny, "l2p")
    train(method, TRAIN0, steps=1)
    with torch.no_grad():
        states = method.model.model.encoder(FEATS).last_hidden_state
        query = states.mean(dim=1)  # [2, d]: the frozen encoder's output, mean-pooled
        keys = torch.randn(method.config.pool_size, query.shape[1], generator=torch.Generator().manual_seed(1))
        keys[7], keys[1] = query[0], 2 * query[1]  # each row's query is one key's direction
        method.pool.keys.copy_(keys)
        reference = F.cosine_similarity(query[:, None, :], keys[None, :, :], dim=-1).topk(method.config.top_n).indices
    chosen, _ = method.choose(states, FEATS)
    n = method.config.top_n
    assert chosen.shape == (2, n) and chosen[:, 0].tolist() == [7, 1]  # the key equal to the query comes first
    assert torch.equal(chosen, reference)  # then the next most cosine-similar keys, in order
    # the chosen prompts are the ones injected, in that order, at the placeholder positions
    hidden, ids = injected_decoder_input(method, TEST0)
    positions = method.model.model.decoder.embed_positions(ids, position_ids=torch.arange(ids.shape[1]).expand(2, -1))
    for row in range(2):
        injected = (hidden - positions)[row, 1: 1 + n * L]
        assert torch.allclose(injected, method.pool.prompts[chosen[row]].reshape(n * L, -1), atol=1e-6)


def test_l2p_keys_learn_from_the_matching_loss_and_prompts_from_the_cross_entropy(tiny):
    method = make(tiny, "l2p")
    method.before_experience(TRAIN0, ROWS)
    with method.route(TRAIN0, {"input_features": FEATS}) as route:
        ids, labels = batch(route)
        ce = method.model(input_features=FEATS, decoder_input_ids=ids, labels=labels).loss
    matching = method.matching_term
    assert matching is not None and 0 <= float(matching.detach()) <= 2 * method.config.top_n
    keys_grad = torch.autograd.grad(ce, method.pool.keys, allow_unused=True)[0]
    assert keys_grad is None or not keys_grad.any()  # the choice is not differentiable
    prompt_grad = torch.autograd.grad(matching, method.pool.prompts, allow_unused=True, retain_graph=True)[0]
    assert prompt_grad is None or not prompt_grad.any()
    keys_grad = torch.autograd.grad(matching, method.pool.keys)[0]
    with torch.no_grad():
        chosen = set(method.choose(method.model.model.encoder(FEATS).last_hidden_state, FEATS)[0].reshape(-1).tolist())
    assert all(keys_grad[i].any() == (i in chosen) for i in range(method.config.pool_size))
    # before anything is learned a test set is decoded by the plain backbone
    fresh = make(tiny, "l2p")
    with fresh.route(TEST0) as route:
        assert route.decoder_prefix == []
    with method.route(TRAIN0) as route:
        assert len(route.decoder_prefix) == method.config.decoder_prefix_positions() == 1 + method.config.top_n * L


def test_l2p_query_averages_the_speech_frames_not_the_padding(tiny):
    method = make(tiny, "l2p")
    train(method, TRAIN0, steps=1)
    feats = FEATS.clone()
    feats[0, :, 40:] = feats[0].min()  # row 0: 40 mel frames of audio, then the padding's floor value
    with torch.no_grad():
        states = method.model.model.encoder(feats).last_hidden_state
        keys = torch.randn(method.config.pool_size, states.shape[2], generator=torch.Generator().manual_seed(2))
        speech, everything = states[0, :20].mean(dim=0), states[0].mean(dim=0)  # 40 mel = 20 encoder frames
        keys[3], keys[5] = speech, everything
        method.pool.keys.copy_(keys)
    chosen, _ = method.choose(states, feats)
    assert chosen[0, 0] == 3  # the key equal to the speech frames' mean, not the whole window's
    assert method.pool.select(everything[None], 1)[0].item() == 5  # what the whole window's mean would pick
    # the loop's way in: the batch's features reach the route; without them the pool refuses to guess
    with pytest.raises(RuntimeError, match="log-mel features"), method.route(TEST0) as route, torch.no_grad():
        ids, _ = batch(route)
        method.model(input_features=feats, decoder_input_ids=ids)


@pytest.mark.parametrize("name", ["pnn", "piggyback"])
def test_language_id_routing_picks_a_set_and_decodes_with_it(tiny, name):
    method = make(tiny, name, eval_routing="lid")
    train(method, TRAIN0)  # records experience 0's language-ID profile from FEATS
    groups = method.route_batch(TEST0, FEATS)
    assert [k for g in groups for k in g.chosen] == ["0", "0"]  # its own training audio: its own set
    with torch.inference_mode(), groups[0].route:
        routed = method.model.generate(input_features=FEATS, language="es", task="transcribe", max_new_tokens=4)
    assert torch.equal(routed, decode(method, TEST0))  # the oracle's set, the same decode


def test_which_caches_stay_valid_is_decided_from_the_modules(tiny):
    from cl_asr.cl.encoder_cache import cross_attention_fingerprint, encoder_fingerprint
    from cl_asr.cl.fingerprint import Digests

    for name, cross_valid in (("pnn", True), ("piggyback", False), ("l2p", False)):
        method = make(tiny, name)
        train(method, TRAIN0, steps=1)
        with method.route(TEST0):
            # the encoder is never touched by these three: its outputs may be cached
            assert encoder_fingerprint(method.model, Digests()) is not None, name
            # pnn's extra layers run after the pretrained ones (a forward hook): their cross-attention is cached;
            # piggyback masks cross-attention projections, l2p reads the encoder states in a decoder pre-hook
            assert (cross_attention_fingerprint(method.model, Digests()) is not None) == cross_valid, name


@pytest.mark.parametrize("name", NAMES)
def test_decoding_leaves_the_state_unchanged(tiny, name):
    """The decode memo keys a set by the strategy's whole state, and a data-parallel run checks that every
    process holds the same state: decoding (each process its own batches) must not change it."""
    from cl_asr.cl.decode_key import strategy_state_digest
    from cl_asr.cl.fingerprint import Digests

    method = make(tiny, name)
    train(method, TRAIN0)
    before = strategy_state_digest(method, Digests())
    decode(method, TEST0)
    decode(method, BASE, FEATS[:1])
    assert strategy_state_digest(method, Digests()) == before


# -- checkpoints ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_the_state_survives_the_runners_checkpoint(tiny, name, tmp_path):
    method = make(tiny, name)
    train(method, TRAIN0)
    before = decode(method, TEST0)
    pristine = tiny.model
    save_checkpoint(tmp_path / "ckpt.pt", method, [0], [], [], {}, pristine, pristine_names(method, pristine))
    ckpt, _ = load_checkpoint(tmp_path / "ckpt.pt", torch.device("cpu"), pristine, tiny.tokenizer)
    loaded = ckpt["method"]
    assert loaded.experiences_trained == 1
    assert torch.equal(decode(loaded, TEST0), before)
    train(loaded, TRAIN1)  # and it goes on learning
    assert decode(loaded, TEST1).shape[0] == 2
