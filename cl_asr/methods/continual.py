"""Classic continual-learning baselines on full fine-tuning, adapted to sequence-to-sequence batches:
replay (experience replay), ewc (online elastic weight consolidation), lwf (learning without forgetting by
token-level distillation) and joint (all experiences at once: the reference for intransigence).

Each is FFT plus an Avalanche plugin: replay keeps Avalanche's experience-balanced reservoir buffer and mixes it
into the training set; EWC adds its penalty and LwF its distillation term to the loss before backward.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.storage_policy import ExperienceBalancedBuffer
from torch.utils.data import DataLoader

from ..cl.collate import IGNORE
from .base import MethodConfig, register_method
from .full import FullFineTuning


# -- replay -------------------------------------------------------------------------------------------------
@dataclass
class ReplayConfig(MethodConfig):
    buffer_size: int = field(default=16, metadata={"help": "utterances kept from past experiences, balanced across "
                                                           "experiences (reservoir sampling)"})

    def __post_init__(self):
        super().__post_init__()
        if self.buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {self.buffer_size}")


class ReplayPlugin(SupervisedPlugin, supports_distributed=True):
    """Mixes the buffer into each experience's training set (before the dataloader is built), then updates it."""

    def __init__(self, size: int):
        super().__init__()
        self.storage = ExperienceBalancedBuffer(max_size=size, adaptive_size=True)

    def after_train_dataset_adaptation(self, strategy, **kwargs):
        if len(self.storage.buffer):
            strategy.adapted_dataset = strategy.adapted_dataset.concat(self.storage.buffer)

    def after_training_exp(self, strategy, **kwargs):
        self.storage.post_adapt(strategy, strategy.experience)


@register_method("replay")
class Replay(FullFineTuning):
    description = "full fine-tuning with experience replay from a small balanced buffer of past utterances"
    config_class = ReplayConfig

    def setup(self) -> None:
        super().setup()
        self.replay = ReplayPlugin(self.config.buffer_size)

    def plugins(self):
        return [self.replay]

    def info(self) -> dict:
        return {"buffer_utterances": len(self.replay.storage.buffer)}


# -- EWC ----------------------------------------------------------------------------------------------------
@dataclass
class EWCConfig(MethodConfig):
    ewc_lambda: float = field(default=1.0, metadata={"help": "penalty weight on the mean-normalised Fisher"})
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


# -- LwF ----------------------------------------------------------------------------------------------------
@dataclass
class LwFConfig(MethodConfig):
    alpha: float = field(default=1.0, metadata={"help": "weight of the distillation term"})
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
    needs_logits = True  # the distillation plugin compares logits at every position

    def setup(self) -> None:
        super().setup()
        self.lwf = DistillationPlugin(self)

    def plugins(self):
        return [self.lwf]


# -- joint --------------------------------------------------------------------------------------------------
@register_method("joint")
class JointTraining(FullFineTuning):
    description = "full fine-tuning on all experiences at once (not continual: the reference for intransigence)"
    joint = True
