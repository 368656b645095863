"""CL-MASR's A-GEM, DER++ and MAS (cl_asr/methods/continual/{agem,der,mas}.py) on the tiny Whisper, through the
real training loop (ASRTemplate) over two small experiences: what each method promises, the parameter counts,
and that its state survives the checkpoint (dill) round trip."""
import copy

import pytest
import torch
import torch.nn.functional as F
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.core import SupervisedPlugin

from cl_asr.backbones.window import set_encoder_window, window_feature_extractor
from cl_asr.checkpoints import load_checkpoint, pristine_names, save_checkpoint
from cl_asr.cl.collate import IGNORE, ASRCollator
from cl_asr.cl.decoding import DecodeMemo
from cl_asr.cl.template import ASRTemplate
from cl_asr.data.corpus import CorpusSpec, synthesize_corpus
from cl_asr.data.text_bank import load_sentences
from cl_asr.data.tts import Voice
from cl_asr.methods import Target, get_method, method_config
from cl_asr.methods.continual.agem import memory_size, project
from cl_asr.methods.continual.der import per_row

NAMES = ["agem", "der", "mas"]
TARGETS = {(s, i): Target(s, i, "eo", "eo", "es") for s in ("train", "test") for i in (0, 1)}


@pytest.fixture(scope="module")
def corpora():
    sentences = load_sentences("eo")[:6]
    voices = (Voice("eo", "m1"),)
    return [synthesize_corpus(CorpusSpec(f"test/clmasr/{i}", "eo", tuple(sentences[3 * i: 3 * i + 3]), voices),
                              progress=False) for i in (0, 1)]


def build(tiny, corpora, name, model=None, method=None, plugins=(), **overrides):
    """The method (new, or `method` as loaded from a checkpoint), its template and a two-experience benchmark."""
    if method is None:
        model = copy.deepcopy(tiny.model) if model is None else model
        set_encoder_window(model, 10)
        cfg = method_config(name, None)
        for k, v in overrides.items():
            setattr(cfg, k, v)
        method = get_method(name)(cfg, model, tiny.tokenizer, seed=0)
        method.setup()
    data = [AvalancheDataset([c]) for c in corpora]
    bench = benchmark_from_datasets(train=data, test=data)
    collator = ASRCollator(tiny.tokenizer, window_feature_extractor(tiny.feature_extractor, 10), {"eo": "es"})
    strategy = ASRTemplate(
        method=method, collator=collator, train_mb_size=2, train_epochs=1, eval_mb_size=2, max_new_tokens=4,
        target_of=lambda e: TARGETS[(e.origin_stream.name, e.current_experience)], memo=DecodeMemo(),
        progress=False, plugins=list(plugins))
    return method, strategy, bench


# -- what every one of them shares: full fine-tuning's parameters ---------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_every_backbone_weight_trains_and_the_counts_are_full_fine_tunings(tiny, corpora, name):
    method, strategy, bench = build(tiny, corpora, name)
    n_backbone = sum(p.numel() for p in method.model.parameters())  # the tiny Whisper, its encoder cut to 10 s
    d, positions = method.model.config.d_model, method.model.model.encoder.embed_positions.num_embeddings
    assert method.n_trainable() == n_backbone - positions * d  # every weight but the fixed sinusoidal positions
    assert method.stored_parameters_per_experience() == n_backbone  # the whole model, as fft / replay / ewc
    assert method.config.lr == 3e-5 and "search" in type(method.config).__dataclass_fields__["lr"].metadata
    before = {n: p.detach().clone() for n, p in method.model.named_parameters()}
    strategy.train(bench.train_stream[0])
    unchanged = [n for n, p in method.model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert not unchanged, unchanged[:3]


# -- A-GEM ----------------------------------------------------------------------------------------------------
def test_the_projection_leaves_no_negative_dot_product_with_the_reference():
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros(shape)) for shape in ((5, 3), (4,), (2,))]
    reference = [torch.randn(5, 3, generator=g), torch.randn(4, generator=g), torch.randn(2, generator=g)]
    params[0].grad = -reference[0] + 0.1 * torch.randn(5, 3, generator=g)  # points against the reference
    params[1].grad = torch.randn(4, generator=g)
    params[2].grad = None  # a parameter the batch did not reach: a zero gradient
    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])  # noqa: E731
    grad = flat([params[0].grad, params[1].grad, torch.zeros(2)])
    r = flat(reference)
    assert grad @ r < 0
    assert project(params, reference)
    projected = flat([p.grad for p in params])
    assert projected @ r >= -1e-5 * r.norm() * grad.norm()  # zero up to rounding: never against the memory
    assert torch.allclose(projected, grad - (grad @ r) / (r @ r) * r, atol=1e-6)  # the A-GEM update itself
    params[0].grad.add_(reference[0])  # now agreeing with the reference: left alone
    agreeing = flat([p.grad for p in params])
    assert agreeing @ r > 0 and not project(params, reference)
    assert torch.equal(flat([p.grad for p in params]), agreeing)


class _Spy(SupervisedPlugin):
    """Records the A-GEM reference of each step and the gradient the optimiser then gets."""

    def __init__(self, agem):
        super().__init__()
        self.agem, self.seen = agem, []

    def before_training_iteration(self, strategy, **kwargs):
        self.reference = self.agem.reference  # A-GEM's plugin runs first: this step's reference

    def before_update(self, strategy, **kwargs):  # after A-GEM's projection
        if self.reference is not None:
            params = strategy.method.trainable_parameters()
            dot = sum(float((p.grad * r).sum()) for p, r in zip(params, self.reference)
                      if p.grad is not None and r is not None)
            norms = [sum(float(t.pow(2).sum()) for t in ts if t is not None) ** 0.5
                     for ts in ([p.grad for p in params], self.reference)]
            self.seen.append((dot, norms[0] * norms[1]))


def test_agem_keeps_a_memory_and_never_steps_against_its_gradient(tiny, corpora):
    method, strategy, bench = build(tiny, corpora, "agem", memory_ratio=1.0, lr=1e-2)
    spy = _Spy(method.agem)
    strategy.plugins.insert(strategy.plugins.index(method.agem) + 1, spy)
    strategy.train(bench.train_stream[0])
    assert [len(m) for m in method.agem.memory] == [3] and not spy.seen  # no memory, no reference: plain FFT
    assert [r["id"] for r in method.agem.memory[0]] == list(corpora[0]["id"])
    strategy.train(bench.train_stream[1])
    assert len(spy.seen) == 2 == method.agem.steps  # every step of the second experience had a reference
    assert all(dot >= -1e-5 * scale for dot, scale in spy.seen), spy.seen
    assert method.agem.reference is None  # a step's reference is dropped after use (not checkpointed)
    assert method.info()["memory_utterances"] == 6
    assert memory_size(0.1, 32) == 3 and memory_size(0.1, 4) == 1  # CL-MASR's 10%, at least one utterance


# -- DER++ ----------------------------------------------------------------------------------------------------
def test_der_stores_the_logits_of_the_model_at_storage_time(tiny, corpora):
    method, strategy, bench = build(tiny, corpora, "der", memory_ratio=1.0)
    strategy.train(bench.train_stream[0])
    rows = [row for row, _ in method.der.buffer]
    assert [r["id"] for r in rows] == list(corpora[0]["id"]) and method.model.training
    with torch.no_grad():
        now = per_row(strategy, rows)
    for (row, stored), (logits, labels) in zip(method.der.buffer, now):
        assert stored.dtype == torch.float16 and stored.shape == (len(labels), tiny.model.config.vocab_size)
        assert torch.equal(stored, logits.half())  # the model's logits at its labelled positions, as stored
    kept = [stored.clone() for _, stored in method.der.buffer]
    strategy.train(bench.train_stream[1])  # training goes on: what was stored stays as it was
    assert len(method.der.buffer) == 6
    assert all(torch.equal(a, b) for a, (_, b) in zip(kept, method.der.buffer[:3]))
    assert method.info()["stored_logit_bytes"] == 2 * method.info()["stored_logit_values"]


def test_der_loss_is_ce_plus_alpha_mse_plus_beta_ce_on_the_buffer(tiny, corpora):
    method, strategy, bench = build(tiny, corpora, "der", memory_ratio=1.0, replay_batch=2)
    strategy.train(bench.train_stream[0])
    with torch.no_grad():  # the model moves away from the stored logits
        for p in method.trainable_parameters():
            p.add_(0.01 * torch.randn_like(p))
    base = torch.tensor(2.5)

    def loss_with(alpha, beta):
        method.config.alpha, method.config.beta = alpha, beta
        strategy.loss = base.clone()
        with torch.no_grad():
            method.der.before_backward(strategy)
        return float(strategy.loss)

    assert loss_with(0.0, 0.0) == 2.5  # plain cross-entropy on the current batch
    sample = method.der.sample(strategy, "logits")
    with torch.no_grad():
        now = torch.cat([lg for lg, _ in per_row(strategy, [row for row, _ in sample])])
    mse = F.mse_loss(now, torch.cat([s for _, s in sample]).float()).item()
    assert mse > 0 and loss_with(1.0, 0.0) == pytest.approx(2.5 + mse, rel=1e-5)
    labelled = [row for row, _ in method.der.sample(strategy, "labels")]
    batch = strategy.collator(labelled)
    with torch.no_grad():
        ce = method.model(input_features=batch["input_features"], decoder_input_ids=batch["decoder_input_ids"],
                          labels=batch["labels"]).loss.item()  # the model's own loss on those buffer rows
    assert loss_with(0.0, 1.0) == pytest.approx(2.5 + ce, rel=1e-5)
    assert loss_with(0.3, 0.7) == pytest.approx(2.5 + 0.3 * mse + 0.7 * ce, rel=1e-5)


# -- MAS ------------------------------------------------------------------------------------------------------
def test_mas_importance_is_the_mean_output_norm_gradient_and_the_penalty_vanishes_at_the_anchor(tiny, corpora):
    method, strategy, bench = build(tiny, corpora, "mas", normalize=False)  # CL-MASR's raw importances
    assert method.mas.importance is None and method.mas.penalty().item() == 0.0  # nothing learned yet
    strategy.loss = torch.tensor(1.5)
    method.mas.before_backward(strategy)
    assert float(strategy.loss) == 1.5
    strategy.train(bench.train_stream[0])
    params = method.trainable_parameters()
    importance = method.mas.importance
    assert all((w >= 0).all() for w in importance) and any((w > 0).any() for w in importance)
    assert method.mas.penalty().item() == 0.0  # at the anchor: the weights after the experience
    # the paper's importance for one parameter, by hand: mean over utterances of |d mean_t ||logits_t||^2 / d w|
    w = method.model.model.decoder.layer_norm.weight
    index = next(i for i, p in enumerate(params) if p is w)
    grads = []
    for row in corpora[0]:
        batch = strategy.collator([row])
        method.model.zero_grad(set_to_none=True)
        logits = method.model(input_features=batch["input_features"],
                              decoder_input_ids=batch["decoder_input_ids"]).logits
        logits[batch["labels"] != IGNORE].pow(2).sum(-1).mean().backward()
        grads.append(w.grad.abs().clone())
    method.model.zero_grad(set_to_none=True)
    assert torch.allclose(importance[index], torch.stack(grads).mean(0), rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        w.add_(0.1)
    expected = float((importance[index] * 0.01).sum())
    assert method.mas.penalty().item() == pytest.approx(expected, rel=1e-4)
    with torch.no_grad():
        w.sub_(0.1)
    old = [t.clone() for t in importance]
    strategy.train(bench.train_stream[1])
    # the second experience's own importance (the model has not moved since it was computed)
    new = method.mas.estimate(strategy, bench.train_stream[1].dataset)
    merged = [0.5 * o + 0.5 * n for o, n in zip(old, new)]  # alpha 0.5 (CL-MASR)
    assert all(torch.allclose(m, t, rtol=1e-4, atol=1e-7) for m, t in zip(merged, method.mas.importance))


# -- checkpoints ----------------------------------------------------------------------------------------------
def _state(method) -> tuple[list[str], list[torch.Tensor]]:
    """(utterance ids kept, tensors kept) of the method's own state."""
    if method.name == "agem":
        return [r["id"] for kept in method.agem.memory for r in kept], []
    if method.name == "der":
        return [row["id"] for row, _ in method.der.buffer], [logits for _, logits in method.der.buffer]
    return [], method.mas.importance + method.mas.anchor


@pytest.mark.parametrize("name", NAMES)
def test_the_state_survives_the_checkpoint_and_training_resumes(tiny, corpora, name, tmp_path):
    method, strategy, bench = build(tiny, corpora, name, memory_ratio=1.0) if name != "mas" else \
        build(tiny, corpora, name)
    strategy.train(bench.train_stream[0])
    pristine = copy.deepcopy(tiny.model)
    set_encoder_window(pristine, 10)
    save_checkpoint(tmp_path / "ckpt.pt", method, [0], [], [], {}, pristine, pristine_names(method, pristine))
    ckpt, _ = load_checkpoint(tmp_path / "ckpt.pt", torch.device("cpu"), pristine, tiny.tokenizer)
    loaded = ckpt["method"]
    plugin = loaded.plugins()[0]
    assert plugin.method is loaded and loaded.experiences_trained == 1
    (ids, tensors), (ids_after, tensors_after) = _state(method), _state(loaded)
    assert ids == ids_after and (ids or tensors) and len(tensors) == len(tensors_after)
    assert all(torch.equal(a, b) for a, b in zip(tensors, tensors_after))
    if name == "mas":  # the anchor is the loaded model's weights; by default the importance has mean 1
        assert loaded.mas.penalty().item() == 0.0
        n = sum(t.numel() for t in loaded.mas.importance)
        assert sum(t.sum() for t in loaded.mas.importance).item() / n == pytest.approx(1.0, rel=1e-4)
        assert loaded.info()["raw_mean_importance_per_experience"][0] > 0
    _, resumed, bench = build(tiny, corpora, name, method=loaded)
    resumed.train(bench.train_stream[1])
    assert loaded.experiences_trained == 2
    if name != "mas":
        assert len(_state(loaded)[0]) == 2 * len(ids)  # the second experience joined the memory
