"""Test strategies whose loss turns NaN on chosen training steps (loaded with --methods-from), to check that
non-finite steps are skipped and counted, and that too many in a row end an experience without ending the run."""
from __future__ import annotations

from dataclasses import dataclass, field

from avalanche.core import SupervisedPlugin

from cl_asr.methods.base import MethodConfig, register_method
from cl_asr.methods.fft import FullFineTuning


@dataclass
class NaNLossConfig(MethodConfig):
    nan_steps: list = field(default_factory=list, metadata={"help": "training steps (from 1, over the whole run) "
                                                            "whose loss is made NaN"})
    max_nonfinite_in_a_row: int = 2  # micro trains 2 steps per experience


class _PoisonLoss(SupervisedPlugin):
    def __init__(self, steps):
        super().__init__()
        self.steps, self.count = set(steps), 0

    def before_backward(self, strategy, **kwargs):
        self.count += 1
        if self.count in self.steps:
            strategy.loss = strategy.loss * float("nan")


@register_method("nan_once")
class NaNOnce(FullFineTuning):
    """One NaN step (the first of the first experience): skipped and counted, training goes on."""
    description = "test: full fine-tuning with a NaN loss on the first step"
    config_class = NaNLossConfig

    def plugins(self):
        return [_PoisonLoss(self.config.nan_steps or [1])]


@register_method("nan_always_second")
class NaNAlwaysInSecond(FullFineTuning):
    """NaN on every step of the second experience (micro: 2 steps per experience, steps 3-4): the limit of 2 in a
    row ends that experience; the third trains normally."""
    description = "test: full fine-tuning whose loss is NaN throughout the second experience"
    config_class = NaNLossConfig

    def plugins(self):
        return [_PoisonLoss(self.config.nan_steps or [3, 4])]
