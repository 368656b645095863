"""The rehearsal-free, task-agnostic LoRA strategies (olora, lora_merge, lora_moe) on the tiny Whisper: which
parameters learn, what stays bit-identical, parameter counts in closed form, `generate`, evaluation that does not
depend on the experience identity, O-LoRA's penalty, the merges against their closed forms, the MoE's router, and
a checkpoint round trip (peft's multi-adapter state and the hooks survive dill)."""
import copy

import pytest
import torch

from cl_asr.backbones.lid import LANGUAGE_CODES
from cl_asr.checkpoints import load_checkpoint, pristine_names, save_checkpoint
from cl_asr.cl.decode_key import decode_key
from cl_asr.cl.fingerprint import Digests
from cl_asr.methods import Target, get_method, method_config

NAMES = ["olora", "lora_merge", "lora_moe"]
FEATS = torch.randn(2, 80, 3000, generator=torch.Generator().manual_seed(0))
ROWS = [{"text": "La hundo dormas sur la tapiŝo."}, {"text": "Mi trinkas teon kun lakto."}]
TRAIN = [Target("train", i, lang, lang, "es") for i, lang in enumerate(["eo", "ia", "ga"])]
TEST = [Target("test", i, lang, lang, "es") for i, lang in enumerate(["eo", "ia", "ga"])]
BASE = Target("preservation", 0, "en", "en", "en")
DEC = torch.tensor([[50258, 50262, 50359, 50363, 400, 500]] * 2)
LABELS = torch.cat([torch.full((2, 3), -100), torch.tensor([[400, 500, 50257]] * 2)], 1)


def make(name, model, tokenizer, **overrides):
    cfg = method_config(name)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    method = get_method(name)(cfg, model, tokenizer, seed=0, base_languages=("en", "de", "es"),
                              features_of=lambda rows: FEATS[: len(rows)])
    method.setup()
    return method


class Step:  # what the plugins see of Avalanche's strategy: the loss they add their terms to
    def __init__(self, loss):
        self.loss = loss


def loss_with_plugins(method, model, target):
    with method.route(target):
        step = Step(model(input_features=FEATS, decoder_input_ids=DEC, labels=LABELS).loss)
    for plugin in method.plugins():
        plugin.before_backward(step)
    return step.loss


def train(method, model, target, steps=1, check=None, end=True):
    """`steps` AdamW steps on `target` (with the plugins' loss terms); `check(params)` after each backward."""
    method.before_experience(target, ROWS)
    params = method.trainable_parameters()
    opt = torch.optim.AdamW(method.param_groups(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss_with_plugins(method, model, target).backward()
        if check is not None:
            check(params)
        opt.step()
    if end:
        method.end_experience(target)
    return params


def perturb(params, scale=0.05, seed=1):
    """Stands in for longer training: every given parameter moves visibly."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(scale * torch.randn(p.shape, generator=g))


def all_params(method):
    named = dict(method.model.named_parameters())
    for i, m in enumerate(method.extra_modules()):
        named.update({f"extra{i}.{n}": p for n, p in m.named_parameters()})
    return named


def per_adapter(config, c):
    """LoRA r on q and v of every attention (encoder self, decoder self and cross), d -> d: 2 r d each."""
    return (c.encoder_layers + 2 * c.decoder_layers) * len(config.target_modules) * 2 * config.rank * c.d_model


@pytest.mark.parametrize("name", NAMES)
def test_only_the_new_adapter_learns_and_everything_else_stays_bit_identical(tiny, name):
    model = copy.deepcopy(tiny.model).eval()
    method = make(name, model, tiny.tokenizer)
    train(method, model, TRAIN[0])
    before = {n: p.detach().clone() for n, p in all_params(method).items()}

    def check(params):
        mine = {id(p) for p in params}
        for n, p in all_params(method).items():
            if id(p) not in mine:
                assert p.grad is None or not p.grad.any(), f"{name}: {n} got a gradient but is not trainable"
        assert any(p.grad is not None and p.grad.any() for p in params), f"{name}: nothing learned"

    params = train(method, model, TRAIN[1], steps=2, check=check, end=False)
    names = {n for n, p in all_params(method).items() if any(p is q for q in params)}
    expected = {n for n in all_params(method) if ".exp1." in n and "lora_" in n}
    if name == "lora_moe":
        expected.add("extra0.keys.1")  # the new expert's key
    assert names == expected
    after = all_params(method)
    changed = [n for n, p in before.items() if not torch.equal(p, after[n])]
    assert not changed, changed[:3]  # backbone, earlier adapters (and keys) bit-identical
    assert any(after[n].any() for n in expected if "lora_B" in n)  # the new adapter left its zero start
    method.end_experience(TRAIN[1])
    assert method.trainable_parameters() == []  # nothing trains between experiences


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_are_the_closed_form(tiny, name):
    model = copy.deepcopy(tiny.model).eval()
    method = make(name, model, tiny.tokenizer)
    per = per_adapter(method.config, model.config)
    key = len(LANGUAGE_CODES) if name == "lora_moe" else 0  # the expert's key lives in language-ID space
    assert method.stored_parameters_per_experience() == per + key  # before any adapter: what it will create
    method.before_experience(TRAIN[0], ROWS)
    assert method.n_trainable() == per + key
    assert method.stored_parameters_per_experience() == per + key
    method.end_experience(TRAIN[0])
    method.before_experience(TRAIN[1], ROWS)
    assert method.n_trainable() == per + key  # per experience, not growing
    method.end_experience(TRAIN[1])
    if name == "lora_merge":  # task arithmetic concatenates: the merged adapter has rank 2r after two experiences
        assert method.info()["merged_adapter_params"] == 2 * per


@pytest.mark.parametrize("name", NAMES)
def test_generate_works_and_evaluation_does_not_depend_on_the_experience(tiny, name):
    model = copy.deepcopy(tiny.model).eval()
    method = make(name, model, tiny.tokenizer)
    digests = Digests()
    assert decode_key(method, TEST[0], digests)[1]  # nothing learned yet: the plain backbone, shared
    for target in TRAIN[:2]:
        perturb(train(method, model, target), seed=target.index + 1)
        method.after_experience(target)  # lora_merge re-merges the perturbed adapters
    with torch.inference_mode():
        plain = tiny.model(input_features=FEATS, decoder_input_ids=DEC).logits
        logits, tokens = [], []
        for target in [*TEST, BASE]:  # two learned experiences, one not yet learned, a base language
            with method.route(target):
                logits.append(model(input_features=FEATS, decoder_input_ids=DEC).logits)
                tokens.append(model.generate(input_features=FEATS, language="es", task="transcribe",
                                             max_new_tokens=4))
            groups = method.route_batch(target, FEATS)
            assert len(groups) == 1 and groups[0].chosen == [None, None]
    assert tokens[0].shape[0] == 2 and 1 <= tokens[0].shape[1] <= 4
    assert not torch.allclose(logits[0], plain)  # the adapters act
    for other_logits, other_tokens in zip(logits[1:], tokens[1:]):
        assert torch.equal(other_logits, logits[0]) and torch.equal(other_tokens, tokens[0])
    keys = {decode_key(method, target, digests) for target in [*TEST, BASE]}
    assert len(keys) == 1 and not next(iter(keys))[1]  # one key for every set: the strategy's whole state


def test_olora_keeps_earlier_adapters_active_and_its_penalty_measures_overlap(tiny):
    model = copy.deepcopy(tiny.model).eval()
    method = make("olora", model, tiny.tokenizer)
    train(method, model, TRAIN[0])
    method.before_experience(TRAIN[1], ROWS)
    layers = method.lora_layers()
    assert layers and all(set(layer.active_adapters) == {"exp0", "exp1"} for layer in layers)
    r, d = method.config.rank, model.config.d_model
    eye = torch.eye(d)
    with torch.no_grad():  # rows of A span the subspaces: exp0 e_0..e_{r-1}, exp1 e_r..e_{2r-1}
        for layer in layers:
            layer.lora_A["exp0"].weight.copy_(eye[:r])
            layer.lora_A["exp1"].weight.copy_(2 * eye[r: 2 * r])
    assert method.orthogonality_penalty().item() == 0.0
    assert method.penalty() is None or method.penalty().item() == 0.0
    with torch.no_grad():  # now exp1 shares one direction with exp0: |<e_0, 2 e_0>| = 2 per layer
        for layer in layers:
            layer.lora_A["exp1"].weight[0].copy_(2 * eye[0])
    assert method.orthogonality_penalty().item() == pytest.approx(2.0 * len(layers))
    assert method.penalty().item() == pytest.approx(method.config.orthogonal_weight * 2.0 * len(layers))
    method.penalty().backward()  # the penalty moves only the new adapter's A
    for layer in layers:
        assert layer.lora_A["exp1"].weight.grad.abs().sum() > 0
        assert layer.lora_A["exp0"].weight.grad is None
    method.config.l2_weight = 0.1
    l2 = sum(torch.linalg.vector_norm(p) for p in method.adapter_params("exp1")).item()
    assert method.l2_penalty().item() == pytest.approx(l2)


def ties_closed_form(deltas, weight, density):
    """TIES-Merging on full deltas: trim each to its largest `density` share, elect signs by summed mass,
    average the entries that agree, times the weight."""
    trimmed = []
    for d in deltas:
        k = int(density * d.numel())
        keep = torch.zeros(d.numel(), dtype=torch.bool)
        keep[d.abs().flatten().topk(k).indices] = True
        trimmed.append(d * keep.view_as(d))
    stack = torch.stack(trimmed)
    sign = torch.sign(stack.sum(0))
    agree = (torch.sign(stack) == sign) & (stack != 0)
    return weight * (stack * agree).sum(0) / agree.sum(0).clamp(min=1)


@pytest.mark.parametrize("merge,extra", [("task_arithmetic", {"merge_weight": 0.7}), ("average", {}),
                                         ("ties", {"density": 0.5, "merge_weight": 1.3, "merge_rank": 64})])
def test_lora_merge_merged_weights_equal_the_closed_form(tiny, merge, extra):
    model = copy.deepcopy(tiny.model).eval()
    method = make("lora_merge", model, tiny.tokenizer, merge=merge, **extra)
    for target in TRAIN[:2]:
        method.before_experience(target, ROWS)
        layers = method.lora_layers()
        active = {a for layer in layers for a in layer.active_adapters}
        assert active == {f"exp{target.index}"}  # trained from the plain backbone, alone
        perturb(method.trainable_parameters(), seed=target.index + 1)
        method.end_experience(target)
        assert {a for layer in layers for a in layer.active_adapters} == {"merged"}  # one adapter for every set
    w = {"task_arithmetic": 0.7, "average": 0.5, "ties": 1.3}[merge]
    for layer in method.lora_layers():
        deltas = [layer.get_delta_weight(a).detach() for a in ("exp0", "exp1")]
        merged = layer.get_delta_weight("merged").detach()
        expected = ties_closed_form(deltas, w, 0.5) if merge == "ties" else w * (deltas[0] + deltas[1])
        assert torch.allclose(merged, expected, atol=1e-6), (merge, (merged - expected).abs().max())


def test_lora_moe_router_gates_by_keys_and_keeps_base_languages_on_the_backbone(tiny):
    model = copy.deepcopy(tiny.model).eval()
    method = make("lora_moe", model, tiny.tokenizer)
    assert method.text_only_problem()  # it routes by the audio
    for target in TRAIN[:2]:
        train(method, model, target)
    router = method.router
    assert router.base_keys.shape == (3, len(LANGUAGE_CODES))
    gates = method.gates(FEATS)
    assert gates.shape == (2, 2) and (gates.sum(-1) <= 1 + 1e-6).all()
    en = torch.zeros(1, len(LANGUAGE_CODES))
    en[0, LANGUAGE_CODES.index("en")] = 1.0
    with torch.no_grad():  # sharp keys: an English query goes to the backbone, an expert's own query to it
        for i, key in enumerate(router.keys):
            key.copy_(torch.eye(len(LANGUAGE_CODES))[LANGUAGE_CODES.index(["fr", "it"][i])])
        assert router.gates_for(en, 0.1).max() < 1e-3
        own = router.gates_for(router.keys[1].detach()[None], 0.1)
        assert own[0, 1] > 0.99
    # no base keys: the only expert takes every utterance whole
    single = make("lora_moe", copy.deepcopy(tiny.model).eval(), tiny.tokenizer, base_keys=False)
    train(single, single.model, TRAIN[0])
    assert torch.allclose(single.gates(FEATS), torch.ones(2, 1))


@pytest.mark.parametrize("name", NAMES)
def test_the_checkpoint_keeps_every_adapter_and_goes_on(tiny, name, tmp_path):
    model = copy.deepcopy(tiny.model).eval()
    method = make(name, model, tiny.tokenizer)
    pristine_of = pristine_names(method, tiny.model)
    for target in TRAIN[:2]:
        perturb(train(method, model, target), seed=target.index + 1)
        method.after_experience(target)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, method, [0, 1], [], [], {}, tiny.model, pristine_of)
    ckpt, _ = load_checkpoint(path, torch.device("cpu"), tiny.model, tiny.tokenizer, method.features_of)
    loaded = ckpt["method"]
    assert loaded.adapters == ["exp0", "exp1"] and loaded.experiences_trained == 2
    with torch.inference_mode():
        mine = model(input_features=FEATS, decoder_input_ids=DEC).logits
        theirs = loaded.model(input_features=FEATS, decoder_input_ids=DEC).logits
    assert torch.equal(mine, theirs)
    train(loaded, loaded.model, TRAIN[2])  # a third adapter on the loaded state, trained and kept
    assert loaded.adapters == ["exp0", "exp1", "exp2"]
