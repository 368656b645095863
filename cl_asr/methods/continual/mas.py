"""mas: full fine-tuning with Memory Aware Synapses (Aljundi et al. 2018), as CL-MASR runs it on Whisper
(speechbrain/benchmarks, benchmarks/CL_MASR/whisper/train_mas.py): after each experience, every parameter's
importance is the mean over its training utterances of |d ||F(x)||^2 / d theta|, F(x) the decoder's logits at the
labelled positions (teacher-forced with the reference transcript; the squared L2 norm over the vocabulary, averaged
over positions), one utterance per backward pass; importances are merged over experiences as
alpha * old + (1 - alpha) * new, and the loss gets lambda * sum Omega (theta - theta*)^2, theta* the weights after
the last experience.

One departure, on by default (`normalize`): each experience's importance is scaled to mean 1 before merging, as
ewc.py does its Fisher, so that lambda is on the scale of ewc's. CL-MASR's raw importances are huge on
Whisper, whose logits have squared norms of ~1e6: on whisper-base (three Esperanto utterances, measured) the mean
importance is ~5e3, so with lambda 1 a move of 7e-4 per weight (at most the quick profile's 24 AdamW steps at 3e-5)
would cost a penalty of ~2e5 against a loss of ~2 (computed from those importances, not from a training run): the
penalty would decide every step. `normalize: false` gives CL-MASR's exact penalty.

Avalanche's `MASPlugin` has the same penalty and merge, but does not run on this template: its importance pass
unpacks tuple batches of 2 or 3, calls `avalanche_forward` and takes `torch.norm(out, dim=1)` of a tensor output
(ours is a seq2seq model: logits per decoder position), loads with the dataset's `collate_fn` (ours is the
template's collator), and takes |grad| of a whole mini-batch's mean rather than per utterance. This file follows
ewc.py's structure (a plugin with importance and anchor lists over the trainable parameters) instead."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from avalanche.core import SupervisedPlugin
from torch.utils.data import DataLoader

from ..base import MethodConfig, register_method
from ..fft import FullFineTuning
from .der import logits_at_labels


@dataclass
class MASConfig(MethodConfig):
    mas_lambda: float = field(default=1.0, metadata={"help": "penalty weight: lambda * sum Omega (theta - theta*)^2",
                                                    "search": {"log_factor": 10}})
    alpha: float = field(default=0.5, metadata={"help": "merge of importances over experiences: alpha * old + "
                                                        "(1 - alpha) * new"})
    normalize: bool = field(
        default=True, metadata={"help": "scale each experience's importance to mean 1 before merging, as ewc does its "
                                        "Fisher (false: CL-MASR's raw importances)"})
    importance_batch_size: int = field(
        default=1, metadata={"help": "utterances per backward pass of the importance estimate (1: each utterance's "
                                     "own gradient magnitude, as the paper defines it)"})

    def __post_init__(self):
        super().__post_init__()
        if self.mas_lambda < 0 or not 0 <= self.alpha <= 1 or self.importance_batch_size < 1:
            raise ValueError(f"mas_lambda must be >= 0, alpha in [0, 1], importance_batch_size >= 1; got "
                             f"{self.mas_lambda}, {self.alpha}, {self.importance_batch_size}")


class MASPlugin(SupervisedPlugin, supports_distributed=True):
    """Importance and anchor per trainable parameter (None until the first experience ends: no penalty). Every
    process computes the importance over the whole experience, so all hold the same."""

    def __init__(self, method: "MAS"):
        super().__init__()
        self.method = method
        self.importance: list[torch.Tensor] | None = None
        self.anchor: list[torch.Tensor] | None = None
        self.raw_means: list[float] = []  # each experience's mean importance before normalising

    def penalty(self) -> torch.Tensor:
        """sum Omega (theta - theta*)^2 over the trainable parameters (0 before the first experience ends)."""
        if self.importance is None:
            return torch.zeros(())
        params = self.method.trainable_parameters()
        return sum((w * (p - a).pow(2)).sum() for p, w, a in zip(params, self.importance, self.anchor))

    def before_backward(self, strategy, **kwargs):
        if self.importance is None or self.method.config.mas_lambda == 0:
            return
        strategy.loss = strategy.loss + self.method.config.mas_lambda * self.penalty()

    def estimate(self, strategy, dataset=None) -> list[torch.Tensor]:
        """Mean over the batches (utterances, by default) of `dataset` (the experience's) of |gradient of the mean
        squared L2 norm of the logits at the labelled positions|, in float32; a batch with a non-finite gradient
        is left out."""
        params = self.method.trainable_parameters()
        total = [torch.zeros_like(p, dtype=torch.float32) for p in params]
        dataset = strategy.experience.dataset if dataset is None else dataset
        loader = DataLoader(dataset, batch_size=self.method.config.importance_batch_size,
                            shuffle=False, collate_fn=strategy.collator)
        n = 0
        for strategy.mbatch in loader:
            strategy._unpack_minibatch()
            strategy.model.zero_grad(set_to_none=True)
            logits = logits_at_labels(strategy, strategy.mbatch, autocast=False)
            logits.pow(2).sum(dim=-1).mean().backward()
            grads = [p.grad for p in params]
            if not all(bool(torch.isfinite(g).all()) for g in grads if g is not None):
                continue
            for t, g in zip(total, grads):
                if g is not None:
                    t += g.detach().abs()
            n += 1
        strategy.model.zero_grad(set_to_none=True)
        return [t / max(n, 1) for t in total]

    def after_training_exp(self, strategy, **kwargs):
        new = self.estimate(strategy)
        mean = float(sum(t.sum() for t in new) / sum(t.numel() for t in new))
        self.raw_means.append(mean)
        if self.method.config.normalize:
            new = [t / max(mean, 1e-30) for t in new]
        alpha = self.method.config.alpha
        self.importance = new if self.importance is None else [alpha * o + (1 - alpha) * f
                                                               for o, f in zip(self.importance, new)]
        self.anchor = [p.detach().clone() for p in self.method.trainable_parameters()]


@register_method("mas")
class MAS(FullFineTuning):
    description = ("full fine-tuning with a Memory Aware Synapses penalty (importance: output-norm gradient "
                   "magnitudes)")
    config_class = MASConfig

    def setup(self) -> None:
        super().setup()
        self.mas = MASPlugin(self)

    def plugins(self):
        return [self.mas]

    def info(self) -> dict:
        n = sum(p.numel() for p in self.trainable_parameters())
        return {"importance_and_anchor_params": 2 * n, "raw_mean_importance_per_experience": self.mas.raw_means}
