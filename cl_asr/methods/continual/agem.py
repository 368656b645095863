"""agem: full fine-tuning with Averaged Gradient Episodic Memory (A-GEM, Chaudhry et al. 2019), as CL-MASR runs it
on Whisper (speechbrain/benchmarks, benchmarks/CL_MASR/whisper/train_agem.py): an episodic memory of past
experiences' utterances; at every step the gradient of the current batch is projected, where it points against
the gradient on a sample of the memory, onto the half-space where the memory's loss does not increase to first
order (the A-GEM update of Chaudhry et al. 2019).

Avalanche's `AGEMPlugin` is the algorithm this follows (reference gradient before the iteration, projection after
backward, one memory per experience), but it does not run on this template: it unpacks tuple batches
(`mb[0], mb[1], mb[-1]`), calls `avalanche_forward` and `strategy._criterion` (ours is the method's seq2seq loss
in `ASRTemplate.forward`), draws the memory with a default-collating loader (ours needs `ASRCollator`), projects in
`after_backward`, before the data-parallel gradient sum (`GradientSum`, `before_update`), and shuffles with the
global `random`. Here the memory keeps dataset rows, collated by the template's collator; the reference gradient
comes from the template's own forward; the projection is done in `before_update`, after the gradient sum, over
the method's trainable parameters, tensor by tensor (no flat 2 x 72M copy)."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

import torch
from avalanche.core import SupervisedPlugin

from ...cl.collate import IGNORE
from ..base import MethodConfig, register_method
from ..fft import FullFineTuning


@dataclass
class AGEMConfig(MethodConfig):
    memory_ratio: float = field(
        default=0.1, metadata={"help": "utterances kept in the episodic memory per learned experience, as a share of "
                                       "its training set (at least one)"})
    sample_size: int = field(
        default=0, metadata={"help": "memory utterances the reference gradient is computed on at every step "
                                     "(0: the training batch size)"})

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.memory_ratio <= 1 or self.sample_size < 0:
            raise ValueError(f"memory_ratio must be in (0, 1] and sample_size >= 0, got {self.memory_ratio}, "
                             f"{self.sample_size}")


def memory_size(ratio: float, n: int) -> int:
    """Utterances kept of an experience of `n` training utterances: round(ratio x n), at least one."""
    return min(n, max(1, round(ratio * n)))


def by_modality(rows: Sequence[dict]) -> list[list[int]]:
    """Indices of the rows with audio and of those without (text-only), each a batch of its own (the collator
    refuses a batch that mixes them); empty groups left out."""
    audio = [i for i, r in enumerate(rows) if "audio" in r]
    text = [i for i, r in enumerate(rows) if "audio" not in r]
    return [g for g in (audio, text) if g]


@torch.no_grad()
def project(params: Sequence[torch.Tensor], reference: Sequence[torch.Tensor | None]) -> bool:
    """A-GEM's projection in place on the parameters' gradients (a missing gradient counts as zero): where
    g.r < 0, g <- g - (g.r / r.r) r, whose dot product with r is then zero; otherwise g is left alone. Returns
    whether it projected."""
    pairs = [(p, r) for p, r in zip(params, reference) if r is not None]
    dot = sum(float(torch.dot(p.grad.reshape(-1), r.reshape(-1))) for p, r in pairs if p.grad is not None)
    if not dot < 0:
        return False
    rr = sum(float(torch.dot(r.reshape(-1), r.reshape(-1))) for _, r in pairs)
    if not rr > 0:
        return False
    for p, r in pairs:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.add_(r, alpha=-dot / rr)
    return True


class AGEMPlugin(SupervisedPlugin, supports_distributed=True):
    """The episodic memory (rows of each learned experience), the reference gradient on a memory sample before
    every iteration, and the projection before the update. Every process draws the same sample (seeded by the
    method's seed, experience and iteration) and computes the same reference gradient, so the projection of the
    summed gradient agrees across processes."""

    def __init__(self, method: "AGEM"):
        super().__init__()
        self.method = method
        self.memory: list[list[dict]] = []  # per learned experience, the rows kept of it
        self.reference: list[torch.Tensor | None] | None = None  # this step's only: never checkpointed
        self.steps = self.projected = 0

    def sample(self, strategy) -> list[dict]:
        rows = [r for kept in self.memory for r in kept]
        n = min(len(rows), self.method.config.sample_size or strategy.train_mb_size)
        rng = random.Random(f"{self.method.seed}:agem:{self.method.experiences_trained}:"
                            f"{strategy.clock.train_exp_iterations}")
        return [rows[i] for i in sorted(rng.sample(range(len(rows)), n))]

    def before_training_iteration(self, strategy, **kwargs):
        self.reference = None
        if not self.memory:
            return
        rows, current = self.sample(strategy), strategy.mbatch
        params = self.method.trainable_parameters()
        strategy.model.zero_grad(set_to_none=True)
        try:
            batches = [strategy.collator([rows[i] for i in group]) for group in by_modality(rows)]
            total = sum(int((b["labels"] != IGNORE).sum()) for b in batches)
            for strategy.mbatch in batches:  # the memory's mean token loss, over one batch per modality
                share = int((strategy.mbatch["labels"] != IGNORE).sum()) / total
                strategy._unpack_minibatch()
                (strategy.forward().loss * share).backward()
        finally:
            strategy.mbatch = current
        reference = [None if p.grad is None else p.grad.detach().clone() for p in params]
        strategy.model.zero_grad(set_to_none=True)
        if all(bool(torch.isfinite(r).all()) for r in reference if r is not None):
            self.reference = reference  # a non-finite reference gradient: this step is not projected

    def before_update(self, strategy, **kwargs):
        reference, self.reference = self.reference, None
        if reference is None or strategy.skip_update:
            return
        self.steps += 1
        self.projected += project(self.method.trainable_parameters(), reference)

    def after_training_exp(self, strategy, **kwargs):
        data = strategy.experience.dataset
        index = self.method.experiences_trained  # already counted: the template ends the method's experience first
        rng = random.Random(f"{self.method.seed}:agem-memory:{index}")
        keep = sorted(rng.sample(range(len(data)), memory_size(self.method.config.memory_ratio, len(data))))
        self.memory.append([data[i] for i in keep])


@register_method("agem")
class AGEM(FullFineTuning):
    description = ("full fine-tuning with A-GEM: each step's gradient projected so as not to increase the loss on a "
                   "sample of an episodic memory of past utterances")
    config_class = AGEMConfig

    def setup(self) -> None:
        super().setup()
        self.agem = AGEMPlugin(self)

    def plugins(self):
        return [self.agem]

    def info(self) -> dict:
        return {"memory_utterances": sum(len(kept) for kept in self.agem.memory),
                "projected_steps": self.agem.projected, "steps_with_reference": self.agem.steps}
