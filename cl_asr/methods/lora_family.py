"""Shared machinery of the rehearsal-free, task-agnostic LoRA strategies (olora, lora_merge, lora_moe).

Like `lora` (cl_asr/methods/lora.py) each experience gets its own peft LoRA adapter on the frozen backbone (named
exp0, exp1, ... in one `LoraModel`, injected in place so that `generate` keeps working), with the same
projections, rank, alpha and seeded initialisation, so a family member's first adapter starts exactly as
`lora`'s does. Unlike `lora`, no adapter is chosen per set: every test and preservation set of an evaluation
pass is decoded by one and the same model, whatever experience it belongs to (task-agnostic).

The model has one configuration at a time, set by the strategy between experiences: `before_experience`
activates what training on the experience uses (`use(active, trainable)`), `after_experience` what evaluation
uses. `route` stays Method's (nothing per set), so evaluation cannot depend on the experience identity, and the
suite may decode all sets of a pass in shared batches. Before the first experience no adapter exists: the plain
backbone, shared with zero_shot's decodes.

peft's own enable/disable/set_adapter also flip `requires_grad`; `use` sets it afterwards so that exactly the
adapter being trained (plus what a subclass adds, e.g. lora_moe's key) has gradients.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn

from .base import Capabilities, Method, MethodConfig, freeze


@dataclass
class LoraFamilyConfig(MethodConfig):
    rank: int = field(default=8, metadata={"help": "LoRA rank r of each experience's adapter",
                                           "search": {"choices": [4, 8, 16, 32]}})
    alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator (update scaled by alpha / r)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA branch"})
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj"],
        metadata={"help": "projection names to adapt, in every encoder self-attention and decoder self- and "
                  "cross-attention (Whisper: q_proj, k_proj, v_proj, out_proj; fc1, fc2 are the MLPs)"})

    def __post_init__(self):
        super().__post_init__()
        if self.rank < 1:
            raise ValueError(f"rank must be at least 1, got {self.rank}")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one projection")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def adapter_name(index: int) -> str:
    return f"exp{index}"


class LoraFamily(Method):
    """One peft LoRA adapter per experience, every set decoded by the same model (see the module doc).
    Subclasses choose what is active for training and for evaluation."""

    config_class = LoraFamilyConfig
    capabilities = Capabilities(task_agnostic=True)

    def setup(self) -> None:
        freeze(self.model)
        self.lora = None  # peft LoraModel, created with the first adapter
        self.adapters: list[str] = []  # one per learned (or current) experience, in stream order
        self.training_adapter: str | None = None
        self.trainable: list[nn.Parameter] = []

    # -- peft adapters ------------------------------------------------------------------------------------
    def peft_config(self):
        """The same peft LoraConfig as `lora`'s adapters (rank, alpha, dropout, target modules from the config)."""
        from .lora import LoRA

        return LoRA._peft_config(self)

    def add_adapter(self, index: int) -> str:
        """Create experience `index`'s adapter (once; B = 0, so it starts as the identity) and return its name."""
        name = adapter_name(index)
        if name in self.adapters:
            return name
        from peft.tuners.lora import LoraModel

        with torch.random.fork_rng():
            torch.manual_seed(self.seed * 1000 + index)  # as lora: LoRA's A init draws from the global RNG
            if self.lora is None:
                self.lora = LoraModel(self.model, self.peft_config(), name)
            else:
                self.lora.peft_config[name] = self.peft_config()
                self.lora.inject_adapter(self.model, name)
        self.adapters.append(name)
        return name

    def adapter_params(self, name: str) -> list[nn.Parameter]:
        tag = f".{name}."
        return [p for n, p in self.model.named_parameters() if tag in n + "." and "lora_" in n]

    def lora_layers(self) -> list[nn.Module]:
        """peft's LoRA layers (one per adapted projection), in model order."""
        from peft.tuners.lora import LoraLayer

        return [m for m in self.model.modules() if isinstance(m, LoraLayer)]

    def extra_trainable(self) -> list[nn.Parameter]:
        """Parameters outside the adapters trained with the current one (lora_moe: its key)."""
        return []

    def use(self, active: Sequence[str], trainable: str | None = None) -> None:
        """Activate `active` adapters (summed; none: the plain backbone) and make only `trainable`'s parameters
        (and `extra_trainable()`) require gradients."""
        if self.lora is not None:
            if active:
                self.lora.enable_adapter_layers()
                self.lora.set_adapter(list(active), inference_mode=True)
            else:
                self.lora.disable_adapter_layers()
        self.training_adapter = trainable
        self.trainable = (self.adapter_params(trainable) + self.extra_trainable()) if trainable else []
        chosen = {id(p) for p in self.trainable}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in chosen)
            if id(p) not in chosen:
                p.grad = None  # a frozen adapter's last gradient is never used again
        for p in self.trainable:  # extra parameters may live outside the model
            p.requires_grad_(True)

    @contextmanager
    def plain_backbone(self) -> Iterator[None]:
        """Every adapter off for the block (peft's disable/enable also flip requires_grad: put back after)."""
        if self.lora is None:
            yield
            return
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        self.lora.disable_adapter_layers()
        try:
            yield
        finally:
            self.lora.enable_adapter_layers()
            for p, flag in flags:
                p.requires_grad_(flag)

    # -- the contract ---------------------------------------------------------------------------------------
    def trainable_parameters(self):
        return list(self.trainable)

    def after_experience(self, target) -> None:
        self.use(self.eval_adapters())

    def eval_adapters(self) -> list[str]:
        """The adapters active at evaluation (after an experience): all learned ones, by default."""
        return list(self.adapters)

    def lora_modules(self) -> list[nn.Module]:
        """The projections LoRA adapts (counted from the model, for the closed-form parameter count)."""
        return [m for n, m in self.model.named_modules() if n.split(".")[-1] in self.config.target_modules
                and isinstance(m, nn.Linear)]

    def adapter_size(self) -> int:
        """Parameters of one experience's adapter: what peft created, or (before any) what it will create."""
        if self.adapters:
            return sum(p.numel() for p in self.adapter_params(self.adapters[0]))
        r = self.config.rank
        return sum(r * (m.in_features + m.out_features) for m in self.lora_modules())

    def stored_parameters_per_experience(self) -> int:
        return self.adapter_size()
