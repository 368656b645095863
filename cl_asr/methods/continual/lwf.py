"""lwf: full fine-tuning with learning-without-forgetting distillation (Li & Hoiem 2017) from the previous model,
token by token."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from avalanche.core import SupervisedPlugin

from ...cl.collate import IGNORE
from ..base import Capabilities, MethodConfig, register_method
from ..fft import FullFineTuning


@dataclass
class LwFConfig(MethodConfig):
    alpha: float = field(default=1.0, metadata={"help": "weight of the distillation term", "search": {"log_factor": 10}})
    temperature: float = field(default=2.0, metadata={"help": "softmax temperature of the distillation"})

    def __post_init__(self):
        super().__post_init__()
        if self.alpha < 0 or self.temperature <= 0:
            raise ValueError(f"alpha must be >= 0 and temperature > 0, got {self.alpha}, {self.temperature}")


class DistillationPlugin(SupervisedPlugin, supports_distributed=True):
    """Token-level distillation (Li & Hoiem 2017, for seq2seq): on every target position of the current batch,
    KL(previous model || current model) of the next-token distributions at temperature T, times T^2."""

    def __init__(self, method: "LwF"):
        super().__init__()
        self.method = method
        self.previous = None

    def before_backward(self, strategy, **kwargs):
        if self.previous is None or self.method.config.alpha == 0:
            return
        T = self.method.config.temperature
        with torch.no_grad():
            step = strategy.step_inputs  # what this step fed the model (cl_asr/cl/template.py, StepInputs)
            teacher = self.previous(**step.model_inputs, decoder_input_ids=step.decoder_input_ids).logits
        student = strategy.mb_output.logits
        mask = step.labels != IGNORE
        kl = torch.nn.functional.kl_div(
            torch.log_softmax(student[mask] / T, dim=-1), torch.log_softmax(teacher[mask] / T, dim=-1),
            log_target=True, reduction="batchmean",
        )
        strategy.loss = strategy.loss + self.method.config.alpha * T * T * kl

    def after_training_exp(self, strategy, **kwargs):
        self.previous = copy.deepcopy(strategy.model).eval()
        for p in self.previous.parameters():
            p.requires_grad_(False)


@register_method("lwf")
class LwF(FullFineTuning):
    description = "full fine-tuning with learning-without-forgetting distillation from the previous model"
    config_class = LwFConfig
    capabilities = Capabilities(full_logits=True)  # the distillation plugin compares logits at every position

    def setup(self) -> None:
        super().setup()
        self.lwf = DistillationPlugin(self)

    def plugins(self):
        return [self.lwf]
