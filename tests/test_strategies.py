"""Every registered strategy on the tiny Whisper: which parameters learn, what stays bit-identical, that
`generate` still works with the method applied, and parameter counts against closed-form formulas."""
import copy

import pytest
import torch

from cl_asr.cl.decode_key import decode_key
from cl_asr.cl.fingerprint import Digests
from cl_asr.methods import METHODS, Target, get_method, method_config

FEATS = torch.randn(2, 80, 3000, generator=torch.Generator().manual_seed(0))
ROWS = [{"text": "La hundo dormas sur la tapiŝo."}, {"text": "Mi trinkas teon kun lakto."}]
TRAIN0 = Target("train", 0, "eo", "eo", "es")
TEST0 = Target("test", 0, "eo", "eo", "es")
BASE = Target("preservation", 0, "en", "en", "en")
L = 3  # prompt length in these tests

REQUIRED = ["zero_shot", "fft", "fft_spt", "lora", "adapter", "spt_input", "spt_encoder", "spt_decoder",
            "spt_entire", "dpt", "respt", "lpt", "spt4asr", "lapt", "replay", "ewc", "lwf", "joint"]
FULL = {"fft", "fft_spt", "replay", "ewc", "lwf", "joint"}  # these train the backbone itself


def make(name, model, tokenizer, **overrides):
    cfg = method_config(name, None, prompt_length=L)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    method = get_method(name)(cfg, model, tokenizer, seed=0)
    method.base_languages = ("en", "de", "es")
    method.features_of = lambda rows: FEATS[: len(rows)]
    method.setup()
    return method


def loss_on(method, model, target):
    with method.route(target) as route:
        b = FEATS.shape[0]
        prefix = torch.tensor([route.decoder_prefix] * b, dtype=torch.long).reshape(b, -1)
        dec = torch.tensor([[50258, 50262, 50359, 50363, 400, 500]] * b)
        labels = torch.cat([torch.full((b, prefix.shape[1] + 3), -100), torch.tensor([[400, 500, 50257]] * b)], 1)
        return model(input_features=FEATS, decoder_input_ids=torch.cat([prefix, dec], 1), labels=labels).loss


def test_every_strategy_the_issue_names_is_registered():
    assert set(REQUIRED) <= set(METHODS.names())
    for name in METHODS.names():
        cls = METHODS.get(name)
        assert cls.description, f"{name} has no description"
        for f in cls.config_class.__dataclass_fields__.values():
            assert f.metadata.get("help"), f"{name}: config field {f.name} does not say what it means"


@pytest.mark.parametrize("name", [n for n in REQUIRED if n != "zero_shot"])
def test_training_step_touches_only_the_intended_parameters(tiny, name):
    model = copy.deepcopy(tiny.model).eval()
    method = make(name, model, tiny.tokenizer)
    backbone_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    method.before_experience(TRAIN0, ROWS)
    params = method.trainable_parameters()
    assert params, f"{name} has nothing to train"
    opt = torch.optim.AdamW(method.param_groups(), lr=1e-2)
    for _ in range(2):  # two steps: zero-initialised branches (LoRA B, adapter up, MLPs) start moving
        opt.zero_grad()
        loss_on(method, model, TRAIN0).backward()
        trainable = {id(p) for p in params}
        for n, p in model.named_parameters():
            if id(p) not in trainable:
                assert p.grad is None or not p.grad.any(), f"{name}: {n} got a gradient but is not trainable"
        assert any(p.grad is not None and p.grad.any() for p in params), f"{name}: no trainable parameter learned"
        opt.step()
    method.end_experience(TRAIN0)

    frozen_after = {n: p.detach() for n, p in model.named_parameters() if "lora_" not in n}
    changed = [n for n, p in frozen_after.items()
               if not torch.equal(p, backbone_before[n.replace(".base_layer", "")])]
    if name in FULL:
        assert changed, f"{name} should change the backbone weights"
    else:
        assert not changed, f"{name} changed frozen backbone weights: {changed[:3]}"

    # generate works with the method applied, and base-language sets see the plain backbone (frozen methods)
    with torch.inference_mode():
        with method.route(TEST0) as route:
            prompt_ids = torch.tensor(route.decoder_prefix) if route.decoder_prefix else None
            out = model.generate(input_features=FEATS, language="es", task="transcribe", max_new_tokens=4,
                                 prompt_ids=prompt_ids)
        assert out.shape[0] == 2 and 1 <= out.shape[1] <= 4  # only the new tokens (max_new_tokens), no prefix
        if name not in FULL:
            with method.route(BASE):
                mine = model.generate(input_features=FEATS, language="en", max_new_tokens=4)
            plain = tiny.model.generate(input_features=FEATS, language="en", max_new_tokens=4)
            assert torch.equal(mine, plain), f"{name} changed how a base language is decoded"


def closed_form(name, cfg, model_config, n_backbone):
    """(trainable for the first experience, stored per experience) from the architecture alone."""
    d, ne, nd, mels = (model_config.d_model, model_config.encoder_layers, model_config.decoder_layers,
                       model_config.num_mel_bins)
    mlp = lambda i, h, o: i * h + h + h * o + o  # noqa: E731 - two Linear layers with biases
    prompts = {"spt_input": 2 * L * mels, "spt_encoder": L * d, "spt_decoder": L * d, "spt_entire": 2 * L * d,
               "dpt": L * d * (ne + nd), "respt": 2 * L * d, "lpt": 2 * L * d, "spt4asr": L * d * (ne + nd),
               "fft_spt": 2 * L * d}
    backbone = n_backbone - model_config.max_source_positions * d  # fixed sinusoidal positions are not trained
    if name == "zero_shot":
        return 0, 0
    if name in ("fft", "replay", "ewc", "lwf", "joint"):
        return backbone, n_backbone
    if name == "fft_spt":
        return backbone + prompts[name], n_backbone + prompts[name]
    if name == "lora":  # q and v of every attention block: encoder self, decoder self and cross
        per = (ne + 2 * nd) * 2 * 2 * cfg.rank * d
        return per, per
    if name == "adapter":  # after self-attention and after the feed-forward block of every layer
        per = (ne + nd) * 2 * (2 * d * cfg.bottleneck + cfg.bottleneck + d)
        return per, per
    if name == "lapt":  # shared S (first experience) + low-rank U [L, r] V [r, d] at the two sites
        low = 2 * (L * cfg.rank + cfg.rank * d)
        return 2 * L * d + low, low
    sites = {"spt4asr": ne + nd}.get(name, 2)
    extra = 0
    if cfg.reparameterization == "per_site":
        extra += sites * mlp(d, cfg.reparam_hidden, d)
    if cfg.language_conditioning:
        extra += d + sites * mlp(d, cfg.language_hidden, d)
    return prompts[name] + extra, prompts[name]


@pytest.mark.parametrize("name", REQUIRED)
def test_parameter_counts_are_the_closed_form(tiny, name):
    model = copy.deepcopy(tiny.model).eval()
    method = make(name, model, tiny.tokenizer)
    n_backbone = sum(p.numel() for p in tiny.model.parameters())
    trainable, stored = closed_form(name, method.config, model.config, n_backbone)
    if method.capabilities.trains:
        method.before_experience(TRAIN0, ROWS)
    assert method.n_trainable() == trainable
    assert method.stored_parameters_per_experience() == stored


def test_lora_counts_match_the_issue_formula_on_q_and_v(tiny):
    # LoRA r on q, v of N attention blocks stores 2 x N x 2 x r x d
    method = make("lora", copy.deepcopy(tiny.model), tiny.tokenizer, rank=4)
    method.before_experience(TRAIN0, ROWS)
    c = tiny.model.config
    n_attention = c.encoder_layers + 2 * c.decoder_layers
    assert method.stored_parameters_per_experience() == 2 * n_attention * 2 * 4 * c.d_model


def test_residual_prompts_are_folded_into_plain_prompts_after_training(tiny):
    model = copy.deepcopy(tiny.model).eval()
    method = make("respt", model, tiny.tokenizer)
    method.before_experience(TRAIN0, ROWS)
    opt = torch.optim.AdamW(method.trainable_parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        loss_on(method, model, TRAIN0).backward()
        opt.step()
    produced = {k: v.detach().clone() for k, v in method.prompt_sets["0"].materialise().items()}
    assert not torch.equal(produced["encoder.0"], method.prompt_sets["0"].raw["encoder_0"])  # the MLP acts
    method.after_experience(TRAIN0)
    folded = method.prompt_sets["0"]
    assert len(folded.mlps) == 0 and sum(p.numel() for p in folded.parameters()) == 2 * L * model.config.d_model
    assert folded.materialise().keys() == produced.keys()
    for site, value in folded.materialise().items():
        assert torch.allclose(value, produced[site])


def test_deep_prompts_can_target_the_last_encoder_layers(tiny):
    model = copy.deepcopy(tiny.model).eval()
    method = make("dpt", model, tiny.tokenizer, encoder_layers="last:1", decoder_layers="none")
    assert method.sites == ["encoder.1"]
    method.before_experience(TRAIN0, ROWS)
    with method.route(TRAIN0):
        enc = model.model.encoder(FEATS).last_hidden_state
    assert enc.shape[1] == 1500 + L  # prepended at the first prompted layer
    with pytest.raises(ValueError, match="encoder_layers"):
        make("dpt", copy.deepcopy(tiny.model), tiny.tokenizer, encoder_layers="last:9")


def test_input_prompt_frames_go_before_the_audio(tiny):
    model = copy.deepcopy(tiny.model).eval()
    method = make("spt_input", model, tiny.tokenizer)
    method.before_experience(TRAIN0, ROWS)
    seen = {}
    h = model.model.encoder.conv1.register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
    with method.route(TRAIN0), torch.no_grad():
        model.model.encoder(FEATS)
    h.remove()
    frames = method.prompt_sets["0"].raw["input"].detach().T
    assert torch.equal(seen["x"][0, :, : 2 * L], frames)
    assert torch.equal(seen["x"][0, :, 2 * L:], FEATS[0, :, : 3000 - 2 * L])


def test_lapt_starts_a_new_language_from_the_most_similar_known_one(tiny):
    model = copy.deepcopy(tiny.model).eval()
    method = make("lapt", model, tiny.tokenizer)
    method.before_experience(TRAIN0, ROWS)
    assert method.similar["eo"] in ("en", "de", "es")  # only base languages are known yet
    with torch.no_grad():
        for p in method.languages["0"].parameters():
            p.add_(0.5)
    method.end_experience(TRAIN0)
    # the same audio again: the learned language is the closest candidate (cosine 1), its matrices are copied
    method.before_experience(Target("train", 1, "ia", "ia", "es"), ROWS)
    assert method.similar["ia"] == "eo"
    first, second = dict(method.languages["0"].named_parameters()), dict(method.languages["1"].named_parameters())
    assert first.keys() == second.keys() and len(first) == 2 * len(method.sites)  # U and V at every site
    for k, a in first.items():
        assert torch.equal(a, second[k]), k
    # S is learned with the first language only (shared_updates: first)
    shared = {id(p) for p in method.shared.parameters()}
    assert not shared & {id(p) for p in method.trainable_parameters()}


def test_language_id_routing_sends_utterances_to_the_closest_profile(tiny):
    from cl_asr.backbones.lid import language_distribution

    model = copy.deepcopy(tiny.model).eval()
    method = make("spt_decoder", model, tiny.tokenizer, eval_routing="lid")
    method.before_experience(TRAIN0, ROWS)  # records experience 0's LID profile from FEATS
    method.end_experience(TRAIN0)
    expected = language_distribution(model, tiny.tokenizer, FEATS).mean(0)
    assert torch.allclose(method.lid_profiles[0], expected)
    groups = method.route_batch(TEST0, FEATS)
    chosen = [k for g in groups for k in g.chosen]
    assert chosen == ["0", "0"]  # its own training audio: closest to its own profile
    assert groups[0].oracle == "0"
    assert method.route_batch(BASE, FEATS)[0].oracle is None  # for a base set the right answer is 'no set'
    assert not decode_key(method, TEST0, Digests())[1]  # any set may serve any row: keyed by the whole state


def test_user_config_overrides_are_checked(tiny):
    with pytest.raises(ValueError, match="at least one site"):
        make("spt_entire", copy.deepcopy(tiny.model), tiny.tokenizer, encoder_layers="none",
             decoder_layers="none").config.__post_init__()


PROMPT_METHODS = ["spt_input", "spt_encoder", "spt_decoder", "spt_entire", "dpt", "respt", "lpt", "spt4asr", "lapt",
                  "fft_spt"]


@pytest.mark.parametrize("name", PROMPT_METHODS + ["lora", "adapter"])
def test_separate_and_shared_modes(tiny, name):
    """separate: a new parameter set per experience, earlier ones untouched; shared: one set for all."""
    train1, test1 = Target("train", 1, "ia", "ia", "es"), Target("test", 1, "ia", "ia", "es")
    for mode in ("separate", "shared"):
        model = copy.deepcopy(tiny.model).eval()
        method = make(name, model, tiny.tokenizer, mode=mode)
        for target in (TRAIN0, train1):
            method.before_experience(target, ROWS)
            with torch.no_grad():
                for p in method.trainable_parameters():
                    p.add_(0.01 * (target.index + 1))  # stands in for training (each experience its own)
            method.end_experience(target)
        keys = (method.oracle_key(TEST0), method.oracle_key(test1))
        assert keys == (("0", "1") if mode == "separate" else ("shared", "shared"))
        assert not decode_key(method, TEST0, Digests())[1]  # a set is active: keyed by the strategy's state


def test_the_methods_of_cl_masr_and_the_rehearsal_free_lora_methods_are_registered():
    # issue 20: each has its own test file (test_clmasr_methods.py, test_clmasr_columns_masks_prompts.py,
    # test_lora_family.py); the reference strategy of CL-MASR's FWT: test_clmasr_protocol.py
    new = {"agem", "der", "mas", "pnn", "piggyback", "l2p", "olora", "lora_merge", "lora_moe", "single_task"}
    assert new <= set(METHODS.names())
    agnostic = {n for n in METHODS.names() if METHODS.get(n).capabilities.task_agnostic}
    assert agnostic == {"l2p", "olora", "lora_merge", "lora_moe"}
