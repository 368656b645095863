"""The suite against what a user would write instead, measured side by side in one run.

Training peer: a Hugging Face `Seq2SeqTrainer` on the same utterances, batch size, window, number of steps,
learning rate, schedule and gradient clipping; for LoRA the model is made with peft's `get_peft_model` (same
config, same initial weights); for decoder prompts, which no library offers for Whisper, the Trainer trains the
same prompt method the suite trains (the closest a Trainer user can do: our prompt module, Trainer's loop). The
peer replays the suite's batch order (its own sampler would draw another one), so the two loss trajectories can
be compared step by step: they must agree within float noise, or the speed comparison would compare different
work. The suite's loop (ASRTemplate) encodes each utterance once where the encoder is frozen (warmed before the
first epoch in evaluation-sized batches), reuses cross-attention keys and values, projects only labelled
positions onto the vocabulary; the Trainer runs the whole model every step.

Evaluation peer: `pipeline("automatic-speech-recognition")` at batch 1 and at the suite's batch size, on the
same utterances and decoding settings; the transcripts must be the same.

The limit: the machine's dense matmul rate (fp32, and bf16 where supported), measured in the same run, and the
FFT step's achieved FLOP/s (counted with torch.utils.flop_counter): utilisation as a share of the matmul rate.

Targets (issue 21): decoder-prompt training >= 3x the peer on a cold cache; FFT and LoRA no slower than the
peer; FFT >= 70% of the matmul rate; evaluation >= 2x the batch-1 pipeline and no slower than the batched one.
"""
from __future__ import annotations

import copy
import time

import pytest
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.utils import AvalancheDataset
from avalanche.core import SupervisedPlugin

from cl_asr.cl.collate import ASRCollator, with_prefix
from cl_asr.cl.decoding import DecodeMemo
from cl_asr.cl.encoder_cache import EncoderCache
from cl_asr.cl.template import ASRTemplate
from cl_asr.methods import Target, get_method, method_config

from .conftest import WINDOW, record, record_figure

# the quick profile's schedule: 3 epochs of batch 4, 40-token decoding cap, 32 prompt vectors
EPOCHS, BATCH, EVAL_BATCH, MAX_NEW_TOKENS, PROMPT_LENGTH = 3, 4, 32, 40, 32
TRAIN = Target("train", 0, "eo", "eo", "es")
TEST = Target("test", 0, "eo", "eo", "es")
FAMILIES = {  # family -> (strategy, target ratio to the peer)
    "full fine-tuning (fft)": ("fft", 1.0),
    "LoRA (lora)": ("lora", 1.0),
    "decoder prompts (spt_decoder)": ("spt_decoder", 3.0),
}
MEASURED: dict[str, dict[str, float]] = {}
LOSSES: dict[str, dict[str, list[float]]] = {}
ORDERS: dict[str, list[list[int]]] = {}  # strategy -> the suite's batches (row indices), replayed by the peer
FFT_SECONDS: list[float] = []  # the suite's FFT training time, for its utilisation


def fresh_method(backbone, name):
    cfg = method_config(name, "quick", prompt_length=PROMPT_LENGTH)
    method = get_method(name)(cfg, copy.deepcopy(backbone.model), backbone.tokenizer, seed=0)
    method.setup()
    return method


def collator_for(backbone):
    return ASRCollator(backbone.tokenizer, backbone.feature_extractor, {"eo": "es"})


class _Steps(SupervisedPlugin):
    """Each training step's loss and batch (as row indices) of the suite's loop."""

    def __init__(self, ids: list[str]):
        super().__init__()
        self.index = {u: i for i, u in enumerate(ids)}
        self.losses, self.batches = [], []

    def after_training_iteration(self, strategy, **kwargs):
        self.losses.append(strategy.loss.item())
        self.batches.append([self.index[u] for u in strategy.mbatch["id"]])


def suite_training(method, data, collator, cache=None):
    bench = benchmark_from_datasets(train=[AvalancheDataset([data])], test=[AvalancheDataset([data])])
    steps = _Steps([data[i]["id"] for i in range(len(data))])
    strategy = ASRTemplate(
        method=method, collator=collator, target_of=lambda e: TRAIN, train_mb_size=BATCH, train_epochs=EPOCHS,
        eval_mb_size=EVAL_BATCH, max_new_tokens=MAX_NEW_TOKENS, memo=DecodeMemo(), progress=False,
        # cold by default: warmed before the first epoch, as in a run's first strategy and seed
        encoder_cache=cache if cache is not None else EncoderCache(), plugins=[steps],
    )
    strategy.train(bench.train_stream[0])
    return steps


class _WithPrompts(torch.nn.Module):
    """The Whisper model and the prompt vectors hooked into it, as one module: what a Trainer user hands the
    Trainer so that its gradient clipping and optimiser see the prompts."""

    def __init__(self, model, prompts):
        super().__init__()
        self.model, self.prompts, self.config = model, torch.nn.ParameterList(prompts), model.config

    def forward(self, **inputs):
        return self.model(**inputs)


def _peer_model(method, backbone):
    """The model a Trainer user trains: for LoRA, peft's get_peft_model on the plain backbone with the same
    config and the same initial adapter weights; otherwise the method's own model (prompts hooked in)."""
    if method.name != "lora":
        model_params = {id(p) for p in method.model.parameters()}
        extra = [p for p in method.trainable_parameters() if id(p) not in model_params]
        return _WithPrompts(method.model, extra) if extra else method.model
    from peft import get_peft_model

    peer = get_peft_model(copy.deepcopy(backbone.model), method._peft_config())
    mine = {n.replace(".exp0.", ".default."): p for n, p in method.model.named_parameters() if "lora_" in n}
    theirs = {n.removeprefix("base_model.model."): p for n, p in peer.named_parameters() if "lora_" in n}
    assert mine.keys() == theirs.keys() and mine, "peft's LoRA layers differ from the method's"
    with torch.no_grad():
        for n, p in theirs.items():
            p.copy_(mine[n])
    return peer


def trainer_training(method, backbone, data, collator, order, output_dir):
    """Seq2SeqTrainer on the same batches (replaying `order`), returning its per-step losses."""
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments
    from torch.utils.data import Sampler

    rows = [data[i] for i in range(len(data))]
    method.before_experience(TRAIN, rows)
    model = _peer_model(method, backbone)
    cfg = method.config
    epochs = [sum(order[e * len(order) // EPOCHS: (e + 1) * len(order) // EPOCHS], []) for e in range(EPOCHS)]

    class Replay(Sampler):  # epoch e yields the suite's epoch-e row order (consecutive batches of BATCH)
        def __init__(self):
            self.epoch = 0

        def __len__(self):
            return len(rows)

        def __iter__(self):
            self.epoch += 1
            return iter(epochs[self.epoch - 1])

    class Peer(Seq2SeqTrainer):
        def _get_train_sampler(self, train_dataset=None):
            return Replay()

    args = Seq2SeqTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=BATCH, num_train_epochs=EPOCHS,
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay, max_grad_norm=cfg.grad_clip,
        lr_scheduler_type=cfg.schedule,  # warm-up as the suite's make_optimizer: a share of the steps, at least 1
        warmup_steps=max(1, round(cfg.warmup * len(order))) if cfg.schedule == "linear" else 0,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False, disable_tqdm=True, dataloader_num_workers=0, seed=0)

    with method.route(TRAIN) as route:
        def collate(batch_rows):
            batch = collator(batch_rows)
            ids, labels = with_prefix(batch["decoder_input_ids"], batch["labels"], route.decoder_prefix)
            return {"input_features": batch["input_features"], "decoder_input_ids": ids, "labels": labels}

        params = [p for p in model.parameters() if p.requires_grad] if method.name == "lora" else \
            method.trainable_parameters()
        optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        trainer = Peer(model=model, args=args, train_dataset=rows, data_collator=collate,
                       optimizers=(optimiser, None))
        trainer.train()
    method.after_experience(TRAIN)
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def warm_cache(backbone, data, collator) -> EncoderCache:
    """The encoder outputs of `data` as an earlier seed or decoder-side strategy of the same run left them."""
    cache = EncoderCache()
    model = copy.deepcopy(backbone.model)
    for p in model.parameters():
        p.requires_grad_(False)
    rows = [data[i] for i in range(len(data))]
    cache.warm(model, [collator(rows[i: i + EVAL_BATCH])["input_features"] for i in range(0, len(rows), EVAL_BATCH)])
    return cache


def _measure(name: str, variant: str, seconds: float, units: int, unit: str, target):
    MEASURED.setdefault(name, {})[variant] = seconds
    if len(MEASURED[name]) == 2:
        record(name, MEASURED[name]["reference"], MEASURED[name]["optimised"], units, unit, target)


def _same_trajectory(family: str):
    """Step-by-step losses of suite and peer (the same batches): equal within float noise. The tolerance is
    relative, 2%: the two differ in summation order (labelled positions only vs. every position, cached vs.
    recomputed encoder output), differences that grow over the steps but stay far below what another batch
    order or learning rate gives (tens of percent here)."""
    got = LOSSES.get(family, {})
    if len(got) < 2:
        return
    suite, peer = got["optimised"], got["reference"]
    assert len(suite) == len(peer), (len(suite), len(peer))
    worst = max(abs(a - b) / max(abs(b), 1e-6) for a, b in zip(suite, peer))
    record_figure(f"training, {family}: largest step-loss difference to the peer", f"{worst:.2%}")
    assert worst <= 0.02, list(zip(suite, peer))


@pytest.mark.parametrize("variant", ["optimised", "reference"])  # the suite first: the peer replays its order
@pytest.mark.parametrize("family", list(FAMILIES))
def test_training_throughput(benchmark, whisper_base, train_speech, family, variant, tmp_path):
    name, target = FAMILIES[family]
    collator = collator_for(whisper_base)
    if variant == "optimised":
        def loop(method):
            steps = suite_training(method, train_speech, collator)
            ORDERS[name] = steps.batches
            return steps.losses
    else:
        if name not in ORDERS:
            pytest.skip("run together with the suite's variant (the peer replays its batch order)")

        def loop(method):
            return trainer_training(method, whisper_base, train_speech, collator, ORDERS[name], tmp_path)
    losses = benchmark.pedantic(loop, setup=lambda: ((fresh_method(whisper_base, name),), {}), rounds=2,
                                iterations=1)
    LOSSES.setdefault(family, {})[variant] = losses
    _measure(f"training, {family} vs Seq2SeqTrainer", variant, benchmark.stats.stats.min,
             EPOCHS * len(train_speech), "utt", target)
    _same_trajectory(family)
    if name == "fft" and variant == "optimised":
        FFT_SECONDS.append(benchmark.stats.stats.min)


def test_training_throughput_with_encoder_outputs_already_cached(benchmark, whisper_base, train_speech):
    """Steady state of decoder-side training: every seed after the first, and every other decoder-side strategy
    of a run, finds the training sets' encoder outputs cached (the peer recomputes them regardless)."""
    collator = collator_for(whisper_base)
    cache = warm_cache(whisper_base, train_speech, collator)
    args = lambda: ((fresh_method(whisper_base, "spt_decoder"), train_speech, collator, cache), {})  # noqa: E731
    benchmark.pedantic(suite_training, setup=args, rounds=2, iterations=1)
    family = "decoder prompts (spt_decoder)"
    peer = MEASURED.get(f"training, {family} vs Seq2SeqTrainer", {}).get("reference")
    if peer is None:
        pytest.skip("run together with test_training_throughput (the peer is measured there)")
    record(f"training, {family}, encoder outputs already cached, vs Seq2SeqTrainer", peer,
           benchmark.stats.stats.min, EPOCHS * len(train_speech), "utt", 3.0)


def test_fft_utilisation_of_the_matmul_rate(whisper_base, train_speech):
    """FFT's achieved FLOP/s in the suite's loop, as a share of this machine's dense fp32 matmul rate measured
    now: the FLOPs of one whole training run counted (torch.utils.flop_counter: matmuls, forward and backward,
    exactly what the suite's steps compute, labelled-position projection included) divided by the time the
    timed runs above took."""
    from .utilisation import count_flops, matmul_flops_per_second

    if not FFT_SECONDS:
        pytest.skip("run together with test_training_throughput (FFT's training time is measured there)")
    collator = collator_for(whisper_base)
    method = fresh_method(whisper_base, "fft")
    flops = count_flops(lambda: suite_training(method, train_speech, collator))
    achieved = flops / FFT_SECONDS[0]
    peak32 = matmul_flops_per_second(torch.float32)
    record_figure("dense matmul rate, fp32 (2048^3)", f"{peak32 / 1e9:.0f} GFLOP/s")
    bf16 = matmul_flops_per_second(torch.bfloat16, size=1024, repeats=2, warmup=1)
    record_figure("dense matmul rate, bf16 (1024^3)", f"{bf16 / 1e9:.1f} GFLOP/s")
    steps = EPOCHS * -(-len(train_speech) // BATCH)
    record_figure(f"FFT training step (batch {BATCH}, {WINDOW} s window), counted",
                  f"{flops / steps / 1e9:.0f} GFLOP, forward + backward")
    share = achieved / peak32
    bound = "" if share >= 0.7 else (" (target 70% NOT met: the step also runs attention softmax, layer norms, "
                                     "GELU, the fused AdamW over 72M weights and the log-mel features, none of "
                                     "them counted matmul FLOPs, and its matmuls are smaller than 2048^3)")
    record_figure("FFT utilisation of the fp32 matmul rate", f"{achieved / 1e9:.0f} GFLOP/s = {share:.1%}{bound}")  # .1%: 69.5% is not "70%"


def reference_decoding(method, data, collator, batch_size=1):
    """transformers' ASR pipeline on the same audio, window, language and token cap."""
    from transformers import pipeline

    tokenizer = copy.deepcopy(method.tokenizer)
    tokenizer.pad_token_id = method.model.config.eos_token_id  # as the pipeline's batching error asks
    asr = pipeline("automatic-speech-recognition", model=method.model, tokenizer=tokenizer,
                   feature_extractor=collator.feature_extractor, device=method.model.device)
    audio = [{"raw": data[i]["audio"]["array"], "sampling_rate": data[i]["audio"]["sampling_rate"]}
             for i in range(len(data))]
    out = asr(audio, batch_size=batch_size, generate_kwargs={"language": "es", "task": "transcribe",
                                                              "max_new_tokens": MAX_NEW_TOKENS})
    return [o["text"].strip() for o in out]


def suite_decoding(method, data, collator):
    bench = benchmark_from_datasets(train=[AvalancheDataset([data])], test=[AvalancheDataset([data])])
    strategy = ASRTemplate(
        method=method, collator=collator, target_of=lambda e: TEST, train_mb_size=BATCH, train_epochs=1,
        eval_mb_size=EVAL_BATCH, max_new_tokens=MAX_NEW_TOKENS, memo=DecodeMemo(), progress=False,
        encoder_cache=EncoderCache(),  # cold: every encoder output is computed
    )
    strategy.eval(bench.test_stream)
    return [h.strip() for h in strategy.eval_outputs[("test", 0)].hyps]


HYPS: dict[str, list[str]] = {}


@pytest.mark.parametrize("variant", ["optimised", "pipeline, batch 1", f"pipeline, batch {EVAL_BATCH}"])
def test_evaluation_throughput(benchmark, whisper_base, speech, variant):
    collator = collator_for(whisper_base)
    method = fresh_method(whisper_base, "zero_shot")
    if variant == "optimised":
        loop, args = suite_decoding, (method, speech, collator)
    else:
        loop, args = reference_decoding, (method, speech, collator, 1 if "batch 1" in variant else EVAL_BATCH)
    HYPS[variant] = benchmark.pedantic(loop, args=args, rounds=2, iterations=1)
    assert len(HYPS[variant]) == len(speech)
    MEASURED.setdefault("evaluation", {})[variant] = benchmark.stats.stats.min
    if variant != "optimised" and "optimised" in HYPS:
        same = sum(a == b for a, b in zip(HYPS["optimised"], HYPS[variant]))
        record_figure(f"evaluation: transcripts equal to {variant}'s", f"{same} of {len(speech)}")
        # float rounding (batched vs batch-1 matmuls) may flip one greedy choice
        assert same >= len(speech) - 1, list(zip(HYPS["optimised"], HYPS[variant]))
        suite = MEASURED["evaluation"]["optimised"]
        record(f"evaluation (zero-shot), batch {EVAL_BATCH} vs {variant}", benchmark.stats.stats.min, suite,
               len(speech), "utt", 2.0 if "batch 1" in variant else 1.0)
