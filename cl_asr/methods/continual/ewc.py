"""ewc: full fine-tuning with an online EWC penalty (Kirkpatrick et al. 2017; Schwarz et al. 2018), the Fisher
importance from the seq2seq loss."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from avalanche.core import SupervisedPlugin
from torch.utils.data import DataLoader

from ..base import MethodConfig, register_method
from ..fft import FullFineTuning


@dataclass
class EWCConfig(MethodConfig):
    ewc_lambda: float = field(default=1.0, metadata={"help": "penalty weight on the mean-normalised Fisher", "search": {"log_factor": 10}})
    decay: float = field(default=1.0, metadata={"help": "online EWC: old importance is multiplied by this before "
                                                        "the new experience's is added"})

    def __post_init__(self):
        super().__post_init__()
        if self.ewc_lambda < 0 or not 0 <= self.decay <= 1:
            raise ValueError(f"ewc_lambda must be >= 0 and decay in [0, 1], got {self.ewc_lambda}, {self.decay}")


class EWCPlugin(SupervisedPlugin, supports_distributed=True):
    """Online EWC (Schwarz et al. 2018): importance = squared gradients of the seq2seq loss per mini-batch over
    the experience just learned (the empirical Fisher, as Avalanche computes it), normalised to mean 1 so the
    penalty weight does not depend on the loss scale; penalty = lambda/2 * sum F (theta - theta*)^2."""

    def __init__(self, method: "EWC"):
        super().__init__()
        self.method = method
        self.fisher: list[torch.Tensor] | None = None
        self.anchor: list[torch.Tensor] | None = None

    def before_backward(self, strategy, **kwargs):
        if self.fisher is None or self.method.config.ewc_lambda == 0:
            return
        params = self.method.trainable_parameters()
        penalty = sum((f * (p - a).pow(2)).sum() for p, f, a in zip(params, self.fisher, self.anchor))
        strategy.loss = strategy.loss + 0.5 * self.method.config.ewc_lambda * penalty

    def after_training_exp(self, strategy, **kwargs):
        params = self.method.trainable_parameters()
        new = [torch.zeros_like(p) for p in params]
        loader = DataLoader(strategy.experience.dataset, batch_size=strategy.train_mb_size, shuffle=False,
                            collate_fn=strategy.collator)
        n = 0
        for strategy.mbatch in loader:
            strategy._unpack_minibatch()
            strategy.model.zero_grad(set_to_none=True)
            strategy.forward().loss.backward()
            for f, p in zip(new, params):
                if p.grad is not None:
                    f += p.grad.detach().pow(2)
            n += 1
        strategy.model.zero_grad(set_to_none=True)
        mean = sum(f.sum() for f in new) / sum(f.numel() for f in new)  # normalised: the 1/n cancels
        new = [f / mean.clamp_min(1e-30) for f in new]
        decay = self.method.config.decay
        self.fisher = new if self.fisher is None else [decay * o + f for o, f in zip(self.fisher, new)]
        self.anchor = [p.detach().clone() for p in params]


@register_method("ewc")
class EWC(FullFineTuning):
    description = "full fine-tuning with an online EWC penalty (Fisher importance from the seq2seq loss)"
    config_class = EWCConfig

    def setup(self) -> None:
        super().setup()
        self.ewc = EWCPlugin(self)

    def plugins(self):
        return [self.ewc]

    def info(self) -> dict:
        n = sum(p.numel() for p in self.trainable_parameters())
        return {"importance_and_anchor_params": 2 * n}
