"""The Avalanche strategy for speech recognition with Whisper.

`ASRTemplate` is an Avalanche `SupervisedTemplate` adapted to sequence-to-sequence batches (FACTS §9):
dict mini-batches, a forward pass that lets the method route the batch (e.g. activate the experience's prompt
set), the model's own token-level cross-entropy as the criterion, and a fresh AdamW over the method's
trainable parameters at every experience. Evaluation keeps Avalanche's `eval(stream)` loop but decodes
with batched greedy `generate` instead of computing a loss; outputs land in `self.eval_outputs`.

Training loop, in the order Avalanche runs it for `train(experience)`:
    method.before_experience  ->  dataloader, AdamW  ->  epochs x (forward, loss, backward, clip, step)
    ->  method.after_experience
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.logging import BaseLogger
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch.autograd.graph import increment_version
from torch.utils.data import BatchSampler, DataLoader, RandomSampler
from tqdm.auto import tqdm
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from .. import distributed
from ..methods.base import Method, Target
from .collate import IGNORE, ASRCollator, with_prefix
from .decode_key import decode_key
from .encoder_cache import EncoderCache
from .fingerprint import Digests


class _IrrelevantGenerateWarnings(logging.Filter):
    """Every decode here caps max_new_tokens, while Whisper's generate always fills in a max_length too:
    transformers then warns on every batch that both are set. Drop exactly that message.

    Two more, each printed once per process, are about Whisper's own generate internals and do not apply:
    it passes suppress tokens alongside its generation config itself, and our decoder inputs are never
    padded (every row shares the same prefix), which is what the attention-mask warning guards against."""

    IRRELEVANT = ("seem to have been set", "together with generation-related arguments",
                  "The attention mask is not set with a batched input")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in self.IRRELEVANT)


logging.getLogger("transformers.generation.utils").addFilter(_IrrelevantGenerateWarnings())


@dataclass
class EvalOutput:
    target: Target
    ids: list[str]
    refs: list[str]
    hyps: list[str]
    seconds: float
    reused: bool  # True when an identical decode (same model state, same set) was already computed
    shareable: bool  # keyed by the plain model (equal across strategies), not by the strategy's own state
    routes: list[str | None]  # parameter set chosen per utterance (None = plain backbone)
    oracle_route: str | None  # the set the experience identity picks: routing is right where routes equal it

    @property
    def target_key(self) -> tuple[str, int]:
        return self.target.stream, self.target.index

    @property
    def routing_accuracy(self) -> float:
        return sum(r == self.oracle_route for r in self.routes) / max(1, len(self.routes))


class DecodeMemo:
    """Decodes (ids, references, hypotheses) keyed by everything that determines them (cl_asr/cl/decode_key.py);
    a plain backbone's outputs are computed once per run however many strategies and rows need them (e.g.
    base-language sets under prompt methods). `enabled=False` computes everything (run_suite.py --no-cache)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._store: dict[tuple, tuple] = {}

    def get(self, key: tuple):
        return self._store.get(key) if self.enabled else None

    def put(self, key: tuple, value: tuple) -> None:
        if self.enabled:
            self._store[key] = value


class _Progress(SupervisedPlugin, supports_distributed=True):
    """A tqdm bar per training experience, showing the running loss."""

    def __init__(self, enabled: bool):
        super().__init__()
        self.enabled, self.bar = enabled, None

    def before_training_exp(self, strategy, **kwargs):
        total = strategy.train_epochs * len(strategy.dataloader)
        self.bar = tqdm(total=total, desc=f"train {strategy.method.name} on {strategy.target.name}",
                        unit="step", disable=not self.enabled, leave=False)

    def after_training_iteration(self, strategy, **kwargs):
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{strategy.loss.item():.3f}")

    def after_training_exp(self, strategy, **kwargs):
        self.bar.close()


class _ShardedBatches:
    """Data parallelism (cl_asr.distributed): the batches one process would draw, in the same order, each cut
    to this process's contiguous shard (which can be empty when a batch has fewer rows than processes)."""

    def __init__(self, batches: BatchSampler, processes: distributed.Processes):
        self.batches, self.processes = batches, processes

    def __iter__(self):
        for batch in self.batches:
            yield np.array_split(batch, self.processes.world)[self.processes.rank].tolist()

    def __len__(self) -> int:
        return len(self.batches)


class _EmptyIsNone:
    """Collate a shard; an empty one is None (this process sits the step out)."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, rows):
        return self.collate(rows) if rows else None


class _NoLogger(BaseLogger):
    """Results are written by the runner, not by Avalanche's loggers (an empty list makes it warn)."""


class ASRTemplate(SupervisedTemplate):
    def __init__(
        self,
        *,
        method: Method,
        collator: ASRCollator,
        target_of: Callable[[object], Target],
        train_mb_size: int,
        train_epochs: int,
        eval_mb_size: int,
        max_new_tokens: int,
        device: str | torch.device = "cpu",
        memo: DecodeMemo | None = None,
        memo_context: tuple = (),
        seed: int = 0,
        progress: bool = True,
        plugins: list | None = None,
        encoder_cache: EncoderCache | None = None,
        precision: str = "fp32",
        loader_workers: int = 0,
    ):
        self.method = method
        # Speed (none of these changes what is computed, beyond float rounding): encoder outputs reused where
        # the encoder is a frozen function; the loss's vocabulary projection only at labelled positions;
        # bf16 autocast if asked for; fused AdamW; loader workers feeding the device.
        self.encoder_cache = encoder_cache
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
        self.precision = precision
        self.loader_workers = loader_workers
        self._decoded_together: dict[tuple, tuple] = {}  # this evaluation pass's sets decoded in shared batches
        self._digests = Digests()  # tensor digests for decode-memo keys, re-hashed only when a tensor changes
        # Training faults: a step whose loss or gradient is NaN/inf is skipped (nothing is updated) and counted;
        # config.max_nonfinite_in_a_row in a row end the experience's training, recorded in `faults`.
        self.max_nonfinite_in_a_row = method.config.max_nonfinite_in_a_row
        self.faults: list[dict] = []
        self._skip_step = False
        self.collator = collator
        self.target_of = target_of
        self.max_new_tokens = max_new_tokens
        self.memo = memo if memo is not None else DecodeMemo()
        self.memo_context = memo_context
        self.seed = seed
        self.progress = progress
        self.eval_outputs: dict[tuple[str, int], EvalOutput] = {}
        self.processes = distributed.current()  # None: this process does all the work
        self._labelled = 0  # labelled tokens of this process's shard of the current batch
        for m in method.extra_modules():
            m.to(device)
        method.features_of = lambda rows: collator(list(rows))["input_features"]

        # The optimiser is rebuilt for every experience (make_optimizer); Avalanche wants one up front.
        placeholder = torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
        super().__init__(
            model=method.model,
            optimizer=placeholder,
            train_mb_size=train_mb_size,
            train_epochs=train_epochs,
            eval_mb_size=eval_mb_size,
            device=device,
            plugins=[_Progress(progress), *method.plugins(), *(plugins or [])],
            # Avalanche allows loggers in the main process only (cl_asr.distributed)
            evaluator=EvaluationPlugin(loggers=[_NoLogger()] if distributed.is_main() else []),
        )

    # -- the current set ---------------------------------------------------------------------------------
    @property
    def target(self) -> Target:
        return self.target_of(self.experience)

    # -- Avalanche hooks, adapted to dict batches --------------------------------------------------------
    @property
    def mb_x(self):
        return self.mbatch["input_features"]

    @property
    def mb_y(self):
        return self.mbatch["labels"]

    @property
    def mb_task_id(self):
        return torch.zeros(len(self.mbatch["id"]), dtype=torch.long)

    def _unpack_minibatch(self):
        self.mbatch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in self.mbatch.items()}

    def _before_training_exp(self, **kwargs):
        # First: the method may create (and initialise from the data) the parameters to optimise.
        data = self.experience.dataset
        self._phase = self.method.phase_for_epoch(0, self.train_epochs)
        self.method.set_phase(self._phase)
        self.method.before_experience(self.target, [data[i] for i in range(len(data))])
        self._stop_training = False  # a previous experience may have been ended by non-finite losses
        self._skipped, self._skipped_in_a_row, self._step = 0, 0, 0
        super()._before_training_exp(**kwargs)

    def _before_training_epoch(self, **kwargs):
        phase = self.method.phase_for_epoch(self.clock.train_exp_epochs, self.train_epochs)
        if phase != self._phase:  # a two-step method's next step trains other parameters: fresh optimiser
            self.method.set_phase(phase)
            self.make_optimizer()
            self._phase = phase
        super()._before_training_epoch(**kwargs)

    def _after_training_exp(self, **kwargs):
        if self._skipped:
            ended = self._skipped_in_a_row >= self.max_nonfinite_in_a_row
            self.faults.append({
                "experience": self.target.name, "skipped_steps": self._skipped, "steps": self._step,
                "ended_early": ended,
                "reason": (f"{self._skipped_in_a_row} non-finite losses or gradients in a row: training on "
                           f"{self.target.name} stopped after step {self._step}, the parameters as they were "
                           "before the first of them" if ended else
                           f"{self._skipped} of {self._step} steps had a non-finite loss or gradient and were skipped"),
            })
        self._phase = None
        self.method.after_experience(self.target)
        self.method.experiences_trained += 1
        super()._after_training_exp(**kwargs)

    def _loader_options(self) -> dict:
        workers = self.loader_workers
        return {"num_workers": workers, "persistent_workers": False, "pin_memory": self.device.type == "cuda",
                **({"prefetch_factor": 4} if workers else {})}

    def make_train_dataloader(self, shuffle=True, **kwargs):
        g = torch.Generator().manual_seed(self.seed * 7919 + self.experience.current_experience)
        if self.processes is not None:  # the same batches as one process (same sampler, same generator), sharded
            batches = BatchSampler(RandomSampler(self.adapted_dataset, generator=g), self.train_mb_size, False)
            # generator=g too: the loader draws its workers' base seed from it first, as the one-process loader does
            self.dataloader = DataLoader(self.adapted_dataset, batch_sampler=_ShardedBatches(batches, self.processes),
                                         generator=g, collate_fn=_EmptyIsNone(self.collator), **self._loader_options())
            return
        self.dataloader = DataLoader(
            self.adapted_dataset, batch_size=self.train_mb_size, shuffle=shuffle, generator=g,
            collate_fn=self.collator, **self._loader_options(),
        )

    def make_eval_dataloader(self, **kwargs):
        if self.processes is not None:  # the one-process batches, dealt round-robin: this process's share
            batches = list(BatchSampler(range(len(self.adapted_dataset)), self.eval_mb_size, False))
            self._eval_batch_numbers = list(range(self.processes.rank, len(batches), self.processes.world))
            self.dataloader = DataLoader(self.adapted_dataset, batch_sampler=[batches[i] for i in self._eval_batch_numbers],
                                         collate_fn=self.collator, **self._loader_options())
            return
        self.dataloader = DataLoader(
            self.adapted_dataset, batch_size=self.eval_mb_size, shuffle=False, collate_fn=self.collator,
            **self._loader_options(),
        )

    def training_epoch(self, **kwargs):
        """Avalanche's loop (SGDUpdate.training_epoch); with several processes, one whose shard of a batch is
        empty sits out forward and backward but joins the gradient sum in optimizer_step."""
        if self.processes is None:
            return super().training_epoch(**kwargs)
        for self.mbatch in self.dataloader:
            if self._stop_training:
                break
            here = self.mbatch is not None
            self._labelled = 0
            if here:
                self._unpack_minibatch()
                self._labelled = int((self.mbatch["labels"] != IGNORE).sum())
            self._before_training_iteration(**kwargs)
            self.optimizer.zero_grad()
            self.loss = self._make_empty_loss()
            if here:
                self._before_forward(**kwargs)
                self.mb_output = self.forward()
                self._after_forward(**kwargs)
                self.loss += self.criterion()
                self._before_backward(**kwargs)
                self.backward()
                self._after_backward(**kwargs)
            else:
                self._step += 1
                self._skip_step = False
            self._before_update(**kwargs)
            self.optimizer_step()
            self._after_update(**kwargs)
            self._after_training_iteration(**kwargs)

    def autocast(self):
        """bf16 autocast when the profile asks for it (fp32 otherwise: on CPUs without bf16 units it is slower)."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def cached_encoder_states(self, feats: torch.Tensor) -> torch.Tensor | None:
        if self.encoder_cache is None:
            return None
        with self.autocast():
            return self.encoder_cache.encode(self.model, feats)

    def make_optimizer(self, **kwargs):
        params = self.method.trainable_parameters()
        if not params:
            raise RuntimeError(f"strategy {self.method.name!r} has nothing to train for {self.target.name}")
        cfg = self.method.config
        # fused: one kernel per step instead of a loop over tensors (2.5x faster on FFT's 72M weights on CPU)
        fused = all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in params)
        self._fused_params = params if fused else []
        self.optimizer = torch.optim.AdamW(self.method.param_groups(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                           fused=fused or None)
        self.last_trainable = sum(p.numel() for p in params)
        self.scheduler = None
        if cfg.schedule == "linear":
            total = max(1, self.train_epochs * len(self.dataloader))
            warm = max(1, round(cfg.warmup * total))
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda step: min((step + 1) / warm, max(0.0, (total - step) / max(1, total - warm)))
            )

    def forward(self):
        self.method.observe_batch(self.mbatch)
        with self.method.route(self.target) as route:
            ids, labels = with_prefix(self.mbatch["decoder_input_ids"], self.mbatch["labels"], route.decoder_prefix)
            feats = self.mbatch["input_features"]
            if feats is None:  # text-only batch: the decoder attends to the method's stand-in for audio
                w = self.model.model.decoder.embed_tokens.weight
                states = self.method.text_only_encoder_states(ids.shape[0], w.device, w.dtype)
                self.mb_model_inputs = {"encoder_outputs": (states,)}
            else:
                self.mb_model_inputs = {"input_features": feats}
            self.mb_decoder_input_ids, self.mb_labels = ids, labels  # for plugins (e.g. LwF's teacher)
            inputs = self.mb_model_inputs
            if feats is not None:
                inputs = self._cached_decoder_inputs(feats) or inputs
            with self.autocast():
                if self.method.needs_logits:
                    return self.model(**inputs, decoder_input_ids=ids, labels=labels)
                return self._loss_at_labels(inputs, ids, labels)

    def _cached_decoder_inputs(self, feats: torch.Tensor) -> dict | None:
        """Cached encoder outputs and, where the cross-attention projections are frozen too, the keys and
        values each decoder layer would compute from them; None when the encoder must run."""
        if self.encoder_cache is None:
            return None
        with self.autocast():
            found = self.encoder_cache.encode_for_decoder(self.model, feats)
        if found is None:
            return None
        states, cross = found
        if cross is None:
            return {"encoder_outputs": (states,)}
        return {"encoder_outputs": (states,), "past_key_values": cross, "use_cache": True}

    def _loss_at_labels(self, inputs: dict, ids: torch.Tensor, labels: torch.Tensor) -> Seq2SeqLMOutput:
        """The model's own token cross-entropy, with the vocabulary projection (52k x d) applied only where
        there is a label: prompt and prefix positions are most of a prompted decoder's sequence."""
        hidden = self.model.model(**inputs, decoder_input_ids=ids).last_hidden_state
        where = labels != IGNORE
        logits = self.model.proj_out(hidden[where])
        return Seq2SeqLMOutput(loss=F.cross_entropy(logits.float(), labels[where]))

    def criterion(self):
        return self.mb_output.loss

    def backward(self):
        self._step += 1
        self._skip_step = not bool(torch.isfinite(self.loss).all())
        if not self._skip_step:
            super().backward()

    def optimizer_step(self):
        params = self.method.trainable_parameters()
        if self.processes is not None:  # the whole batch's gradient on every process, or a skip everywhere
            self._skip_step = distributed.sum_gradients(params, self._labelled, self._skip_step)
        if not self._skip_step:
            if self.method.config.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(params, self.method.config.grad_clip)
                self._skip_step = not bool(torch.isfinite(norm))
            else:
                self._skip_step = any(not bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)
        if self._skip_step:  # leave the parameters (and the optimiser's moments) as they were
            self.optimizer.zero_grad(set_to_none=True)
            self._skipped += 1
            self._skipped_in_a_row += 1
            if self._skipped_in_a_row >= self.max_nonfinite_in_a_row:
                self.stop_training()
            return
        self._skipped_in_a_row = 0
        self.optimizer.step()
        if self._fused_params:
            # the fused kernel updates in place without bumping the tensors' version counters, which is how
            # state keys (decode memo) and encoder fingerprints notice a change: bump them
            increment_version(self._fused_params)
        if self.scheduler is not None:
            self.scheduler.step()

    # -- evaluation: greedy decoding -------------------------------------------------------------------
    def memo_key(self, target: Target) -> tuple:
        return self.memo_key_and_shareable(target)[0]

    def memo_key_and_shareable(self, target: Target) -> tuple[tuple, bool]:
        key, shareable = decode_key(self.method, target, self._digests)
        return (*self.memo_context, target.stream, target.index, target.decode_language, self.max_new_tokens,
                key), shareable

    def _before_eval(self, **kwargs):
        super()._before_eval(**kwargs)
        if self.processes is not None:  # the decode memo's keys hold a digest of the model state: equal everywhere
            keys = [self.memo_key(self.target_of(e)) for e in self.current_eval_stream]
            if any(theirs != keys for theirs in distributed.gather_objects(keys)):
                raise RuntimeError(f"{self.method.name}: the processes' models differ at an evaluation pass; they must "
                                   "stay equal after every step (cl_asr.distributed): a bug, please report it")
        self._decoded_together = self.decode_sets_together(list(self.current_eval_stream))

    def decode_sets_together(self, experiences: list) -> dict[tuple, tuple]:
        """One model decodes every set alike (no per-set prompt or routing: FFT, zero-shot, replay, ...): decode
        the sets of an evaluation pass that are not memoised in shared batches of `eval_mb_size` rows, each row
        with its own language token. Batches of one set are as small as the set; decoding steps are bound by
        reading the weights, so a batch of 72 rows costs about as much as one of 12 (measured: 6 x 12 rows took
        2.0x as long as 1 x 72). Rows are sorted by audio length so a batch's rows end at similar steps."""
        m = type(self.method)
        if m.route is not Method.route or m.route_batch is not Method.route_batch or len(experiences) < 2:
            return {}
        pending = []  # (key, target, rows)
        for exp in experiences:
            target = self.target_of(exp)
            key = self.memo_key(target)
            if self.memo.get(key) is None and not any(k == key for k, _, _ in pending):
                data = exp.dataset
                pending.append((key, target, [data[i] for i in range(len(data))]))
        if len(pending) < 2 or any("audio" not in row for _, _, rows in pending for row in rows):
            return {}
        start = time.perf_counter()
        flat = [(j, row) for j, (_, _, rows) in enumerate(pending) for row in rows]
        order = sorted(range(len(flat)), key=lambda i: -len(flat[i][1]["audio"]["array"]))
        hyps: list[str] = [""] * len(flat)
        firsts = list(range(0, len(order), self.eval_mb_size))
        if self.processes is not None:  # batches dealt round-robin; hypotheses gathered below
            firsts = firsts[self.processes.rank::self.processes.world]
        bar = tqdm(firsts, desc=f"decode {self.method.name} {len(pending)} sets",
                   unit="batch", disable=not self.progress, leave=False)
        for first in bar:
            chosen = order[first: first + self.eval_mb_size]
            batch = self.collator([flat[i][1] for i in chosen])
            feats = batch["input_features"].to(self.device)
            languages = [pending[flat[i][0]][1].decode_language for i in chosen]
            self.method.observe_batch(batch)
            with self.autocast(), torch.inference_mode():
                out = self.model.generate(**self._audio_inputs(feats), language=languages, task="transcribe",
                                          max_new_tokens=self.max_new_tokens)
            for i, text in zip(chosen, self.method.tokenizer.batch_decode(out, skip_special_tokens=True)):
                hyps[i] = text
        if self.processes is not None:
            for part, theirs in enumerate(distributed.gather_objects(hyps)):
                for first in range(part * self.eval_mb_size, len(order), self.processes.world * self.eval_mb_size):
                    for i in order[first: first + self.eval_mb_size]:
                        hyps[i] = theirs[i]
        seconds = (time.perf_counter() - start) / len(flat)
        decoded, at = {}, 0
        for key, target, rows in pending:
            n = len(rows)
            decoded[key] = ([r["id"] for r in rows], [r["text"] for r in rows], hyps[at: at + n], [None] * n, None,
                            seconds * n)
            at += n
        return decoded

    def _audio_inputs(self, feats: torch.Tensor) -> dict:
        """What `generate` gets for the audio: cached encoder outputs where the encoder may be cached."""
        states = self.cached_encoder_states(feats)
        if states is None:
            return {"input_features": feats}
        return {"encoder_outputs": BaseModelOutput(last_hidden_state=states)}

    def eval_epoch(self, **kwargs):
        target = self.target
        key, shareable = self.memo_key_and_shareable(target)
        start = time.perf_counter()
        cached = self.memo.get(key)
        together = self._decoded_together.pop(key, None)
        if together is not None:  # decoded in this pass's shared batches: computed here, not reused
            ids, refs, hyps, routes, oracle, seconds = together
            self.memo.put(key, (ids, refs, hyps, routes, oracle))
            self.eval_outputs[(target.stream, target.index)] = EvalOutput(
                target, list(ids), list(refs), list(hyps), seconds, False, shareable, list(routes), oracle)
            return
        if cached is None:
            ids, refs, hyps, routes, oracle = [], [], [], [], None
            bar = tqdm(self.dataloader, desc=f"decode {self.method.name} {target.stream}/{target.name}",
                       unit="batch", disable=not self.progress, leave=False)
            decoded = []  # (batch number, ids, refs, hypotheses, routes, oracle)
            for number, self.mbatch in enumerate(bar):
                self._unpack_minibatch()
                decoded.append((number, self.mbatch["id"], self.mbatch["text"], *self.decode_batch(target)))
            if self.processes is not None:  # every process decoded its share of the batches: gather them all
                mine = [(self._eval_batch_numbers[n], *rest) for n, *rest in decoded]  # numbered as in one process
                decoded = sorted((piece for part in distributed.gather_objects(mine) for piece in part),
                                 key=lambda piece: piece[0])
            for _, batch_ids, batch_refs, batch_hyps, batch_routes, oracle in decoded:
                ids += batch_ids
                refs += batch_refs
                hyps += batch_hyps
                routes += batch_routes
            self.memo.put(key, (ids, refs, hyps, routes, oracle))
        else:
            ids, refs, hyps, routes, oracle = cached
        self.eval_outputs[(target.stream, target.index)] = EvalOutput(
            target, list(ids), list(refs), list(hyps), time.perf_counter() - start, cached is not None,
            shareable, list(routes), oracle,
        )

    @torch.inference_mode()
    def decode_batch(self, target: Target) -> tuple[list[str], list[str | None], str | None]:
        """Greedy decoding of the current batch: (hypotheses, set chosen per row, the oracle's set)."""
        tok = self.method.tokenizer
        feats = self.mbatch["input_features"]
        hyps: list[str] = [""] * feats.shape[0]
        routes: list[str | None] = [None] * feats.shape[0]
        oracle = None
        for group in self.method.route_batch(target, feats):
            oracle = group.oracle
            self.method.observe_batch({k: (v[group.rows] if torch.is_tensor(v) else [v[i] for i in group.rows])
                                       for k, v in self.mbatch.items()})
            with group.route as route, self.autocast():
                prompt_ids = torch.tensor(route.decoder_prefix, device=self.device) if route.decoder_prefix else None
                out = self.model.generate(
                    **self._audio_inputs(feats[group.rows]),
                    language=target.decode_language,
                    task="transcribe",
                    max_new_tokens=self.max_new_tokens,
                    prompt_ids=prompt_ids,
                )
            for row, text, chosen in zip(group.rows, tok.batch_decode(out, skip_special_tokens=True), group.chosen):
                hyps[row], routes[row] = text, chosen
        return hyps, routes, oracle
