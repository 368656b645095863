"""The Avalanche strategy for speech recognition with Whisper: Avalanche glue and one training step.

`ASRTemplate` is an Avalanche `SupervisedTemplate` adapted to sequence-to-sequence batches (docs/whisper.md,
"Avalanche 0.6 with a seq2seq model"): dict mini-batches, a forward pass inside the method's route for the
experience (e.g. its prompt set active), the model's own token-level cross-entropy, and a fresh AdamW over the
method's trainable parameters at every experience. Evaluation is `Decoding` (cl_asr/cl/decoding.py); how batches
reach one or several processes is `DataParallel` (cl_asr/cl/data_parallel.py); skipped NaN/inf steps are the
`NonFiniteSteps` plugin (cl_asr/cl/nonfinite.py).

Training, in the order Avalanche runs it for `train(experience)`:
    method.before_experience  ->  dataloader, AdamW  ->  epochs x (forward, loss, backward, clip, step)
    ->  method.end_experience (after_experience, then the count of trained experiences)
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch.autograd.graph import increment_version
from transformers.modeling_outputs import Seq2SeqLMOutput
from transformers.optimization import get_scheduler

from .. import distributed
from ..core import Target
from ..methods.base import Method
from . import language_tokens
from .collate import IGNORE, ASRCollator, with_prefix
from .data_parallel import DataParallel
from .decoding import DecodeMemo, Decoding
from .encoder_cache import EncoderCache
from .fingerprint import Digests
from .nonfinite import NonFiniteSteps
from .progress import NoLogger, TrainingProgress


@dataclass
class StepInputs:
    """What a training step fed the model, for plugins that run a model of their own on the same batch (LwF's
    teacher): the model's inputs (features, or cached / stand-in encoder states), the decoder ids with the
    route's prefix, and the labels aligned with them."""

    target: Target
    model_inputs: dict
    decoder_input_ids: torch.Tensor
    labels: torch.Tensor


class ASRTemplate(DataParallel, Decoding, SupervisedTemplate):
    def __init__(self, *, method: Method, collator: ASRCollator, target_of: Callable[[object], Target],
                 train_mb_size: int, train_epochs: int, eval_mb_size: int, max_new_tokens: int,
                 device: str | torch.device = "cpu", memo: DecodeMemo | None = None, memo_context: tuple = (),
                 seed: int = 0, progress: bool = True, plugins: list | None = None,
                 encoder_cache: EncoderCache | None = None, precision: str = "fp32", loader_workers: int = 0):
        self.method = method
        # Speed (none of these changes what is computed, beyond float rounding): encoder outputs reused where
        # the encoder is a frozen function; the loss's vocabulary projection only at labelled positions;
        # bf16 autocast if asked for; fused AdamW; loader workers feeding the device.
        self.encoder_cache = encoder_cache
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
        self.precision, self.loader_workers = precision, loader_workers
        self.collator, self.target_of, self.max_new_tokens, self.seed, self.progress = (
            collator, target_of, max_new_tokens, seed, progress)
        self.memo = memo if memo is not None else DecodeMemo()
        self.memo_context = memo_context
        self._digests = Digests()  # tensor digests for decode-memo keys, re-hashed only when a tensor changes
        self._decoded_together: dict[tuple, tuple] = {}  # this evaluation pass's sets decoded in shared batches
        self.eval_outputs: dict = {}
        self.nonfinite = NonFiniteSteps(method.config.max_nonfinite_in_a_row)
        self.skip_update = False  # set by `nonfinite` (and the gradient check): this step changes nothing
        self.step_inputs: StepInputs | None = None
        self.processes = distributed.current()  # None: this process does all the work
        for m in method.extra_modules():
            m.to(device)
        # The optimiser is rebuilt for every experience (make_optimizer); Avalanche wants one up front.
        placeholder = torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
        super().__init__(
            model=method.model, optimizer=placeholder, train_mb_size=train_mb_size, train_epochs=train_epochs,
            eval_mb_size=eval_mb_size, device=device,
            # NonFiniteSteps last: it judges the loss after every plugin's terms (EWC's penalty, LwF's distillation)
            plugins=[TrainingProgress(progress), *self.data_parallel_plugins(), *method.plugins(), *(plugins or []),
                     self.nonfinite],
            # Avalanche allows loggers in the main process only (cl_asr.distributed)
            evaluator=EvaluationPlugin(loggers=[NoLogger()] if distributed.is_main() else []),
        )

    @property
    def faults(self) -> list[dict]:  # training faults so far (the NonFiniteSteps plugin's records)
        return self.nonfinite.faults

    @faults.setter
    def faults(self, records: list[dict]) -> None:
        self.nonfinite.faults = records

    @property
    def target(self) -> Target:
        return self.target_of(self.experience)

    # -- Avalanche hooks, adapted to dict batches --------------------------------------------------------
    mb_x = property(lambda self: self.mbatch["input_features"])
    mb_y = property(lambda self: self.mbatch["labels"])
    mb_task_id = property(lambda self: torch.zeros(len(self.mbatch["id"]), dtype=torch.long))

    def _unpack_minibatch(self):
        self.mbatch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in self.mbatch.items()}
        self.mbatch = language_tokens.with_new_tokens(self.mbatch, self.method)  # [language_token=new]

    def trained_parameters(self) -> list[torch.nn.Parameter]:  # the method's, plus a new language token's row
        return language_tokens.trained_parameters(self.method, self.target if self.is_training else None)

    def _before_training_exp(self, **kwargs):
        # First: the method may create (and initialise from the data) the parameters to optimise.
        data = self.experience.dataset
        self._phase = self.method.phase_for_epoch(0, self.train_epochs) if self.method.capabilities.phases else None
        if self._phase is not None:
            self.method.set_phase(self._phase)
        rows = [data[i] for i in range(len(data))]
        self.method.before_experience(self.target, rows)
        self.learn_fusion_lm(rows, self.target.index)  # (a training experience's target: stream "train")
        self._stop_training = False  # a previous experience may have been ended by non-finite losses
        super()._before_training_exp(**kwargs)

    def _before_training_epoch(self, **kwargs):
        phases = self.method.capabilities.phases
        phase = self.method.phase_for_epoch(self.clock.train_exp_epochs, self.train_epochs) if phases else None
        if phase != self._phase:  # a two-step method's next step trains other parameters: fresh optimiser
            self.method.set_phase(phase)
            self.make_optimizer()
            self._phase = phase
        if self.clock.train_exp_epochs == 0:
            self._warm_encoder_cache()
        super()._before_training_epoch(**kwargs)

    def _warm_encoder_cache(self) -> None:
        """Before an experience's first epoch, its encoder outputs in evaluation-sized batches where the cache may
        reuse them (EncoderCache.warm). One process only: with several, each would encode every shard."""
        rows = [self.adapted_dataset[i] for i in range(len(self.adapted_dataset))]
        if self.encoder_cache is not None and self.processes is None and rows and "audio" in rows[0]:
            size = self.eval_mb_size
            batches = self._features_inside_route([rows[i: i + size] for i in range(0, len(rows), size)])
            self.encoder_cache.warm(self.model, batches)
            batches.close()  # leaves the route if warm stopped early

    def _features_inside_route(self, chunks):
        """Each chunk's features, yielded while the method's route for it is entered (as in a training step)."""
        conditioned = bool(self.method.capabilities.conditioning)
        for chunk in chunks:
            batch = self.collator(chunk) if conditioned else None
            with self.method.route(self.target, self.conditioning(batch) if conditioned else None), self.autocast():
                if self.encoder_cache.fingerprint(self.model) is None:
                    return  # not reusable (checked before any features are made): each step runs the encoder
                yield (batch or self.collator(chunk))["input_features"].to(self.device)

    def _after_training_exp(self, **kwargs):
        self._phase = None
        self.method.end_experience(self.target)
        super()._after_training_exp(**kwargs)

    def autocast(self):  # bf16 if the profile asks for it (fp32 otherwise: slower on CPUs without bf16 units)
        bf16 = self.precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def make_optimizer(self, **kwargs):
        params = self.trained_parameters()
        if not params:
            raise RuntimeError(f"strategy {self.method.name!r} has nothing to train for {self.target.name}")
        cfg = self.method.config
        # fused: one kernel per step instead of a loop over tensors (2.5x faster on FFT's 72M weights on CPU)
        fused = all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in params)
        self._fused_params = params if fused else []
        extra = params[len(self.method.trainable_parameters()):]  # a new language token's row
        self.optimizer = torch.optim.AdamW([*self.method.param_groups(), *([{"params": extra}] if extra else [])],
                                           lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)
        self.last_trainable = sum(p.numel() for p in params)
        self.scheduler = None
        if cfg.schedule == "linear":  # transformers' linear warm-up then linear decay to zero
            total = max(1, self.train_epochs * len(self.dataloader))
            self.scheduler = get_scheduler("linear", self.optimizer, num_warmup_steps=max(1, round(cfg.warmup * total)),
                                           num_training_steps=total)

    # -- one training step -------------------------------------------------------------------------------
    def forward(self):
        with self.method.route(self.target, self.conditioning(self.mbatch)) as route:
            ids, labels = with_prefix(self.mbatch["decoder_input_ids"], self.mbatch["labels"], route.decoder_prefix)
            feats = self.mbatch["input_features"]
            if feats is None:  # text-only batch: the decoder attends to the method's stand-in for audio
                w = self.model.model.decoder.embed_tokens.weight
                states = self.method.text_only_encoder_states(ids.shape[0], w.device, w.dtype)
                plain = {"encoder_outputs": (states,)}
            else:
                plain = {"input_features": feats}
            self.step_inputs = StepInputs(self.target, plain, ids, labels)
            inputs = (self._cached_decoder_inputs(feats) if feats is not None else None) or plain
            with self.autocast():
                if self.method.capabilities.full_logits:
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

    def criterion(self):  # the model's own token cross-entropy (or _loss_at_labels')
        return self.mb_output.loss

    def backward(self):
        if not self.skip_update:  # NonFiniteSteps: no backward through a NaN/inf loss
            super().backward()

    def optimizer_step(self):
        params = self.trained_parameters()
        if not self.skip_update:
            if self.method.config.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(params, self.method.config.grad_clip)
                self.skip_update = not bool(torch.isfinite(norm))
            else:
                self.skip_update = any(not bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)
        if self.skip_update:  # leave the parameters (and the optimiser's moments) as they were
            self.optimizer.zero_grad(set_to_none=True)
            return
        self.optimizer.step()
        if self._fused_params:
            # the fused kernel updates in place without bumping the tensors' version counters, which is how
            # decode-memo keys and encoder fingerprints notice a change: bump them
            increment_version(self._fused_params)
        if self.scheduler is not None:
            self.scheduler.step()
