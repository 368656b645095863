"""lora: low-rank adaptation of the attention projections (peft), one adapter per experience.

peft's LoRA layers are injected into the Whisper model in place (`LoraModel`), so `generate` and the hooks of
other methods keep working. In `separate` mode each experience gets its own adapter (parameter isolation, like
a prompt set per experience) and base-language sets are decoded with every adapter disabled; `shared` trains
one adapter through all experiences.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from ..core import Route, Target
from .base import SetRoutedConfig, SetRoutedMethod, freeze, register_method


@dataclass
class LoraMethodConfig(SetRoutedConfig):
    rank: int = field(default=8, metadata={"help": "LoRA rank r", "search": {"choices": [4, 8, 16, 32]}})
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


@register_method("lora")
class LoRA(SetRoutedMethod):
    description = "LoRA on the attention q/v projections of encoder and decoder (peft), frozen backbone"
    config_class = LoraMethodConfig

    def setup(self) -> None:
        freeze(self.model)
        self.lora = None  # peft LoraModel, created with the first adapter
        self.adapters: list[str] = []
        self._training_key: str | None = None

    def _peft_config(self):
        from peft import LoraConfig

        c = self.config
        return LoraConfig(r=c.rank, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=list(c.target_modules),
                          bias="none", init_lora_weights=True)

    def before_experience(self, target: Target, rows: Sequence[dict] = ()) -> None:
        key = self.set_key(target.index)
        self.record_routing_profile(target.index, rows)  # before the new adapter exists: the plain model's view
        if key not in self.adapters:
            from peft.tuners.lora import LoraModel

            with torch.random.fork_rng():
                torch.manual_seed(self.seed * 1000 + target.index)  # LoRA's A init draws from the global RNG
                if self.lora is None:
                    self.lora = LoraModel(self.model, self._peft_config(), f"exp{key}")
                else:
                    self.lora.peft_config[f"exp{key}"] = self._peft_config()
                    self.lora.inject_adapter(self.model, f"exp{key}")
            self.adapters.append(key)
        self._training_key = key

    def after_experience(self, target: Target) -> None:
        self._training_key = None

    def _adapter_params(self, key: str) -> list[nn.Parameter]:
        tag = f".exp{key}."
        return [p for n, p in self.model.named_parameters() if tag in n + "." and "lora_" in n]

    def trainable_parameters(self):
        if self._training_key is None:
            return []
        params = self._adapter_params(self._training_key)
        for p in params:
            p.requires_grad_(True)
        return params

    def lora_modules(self) -> list[nn.Module]:
        """The projections LoRA adapts (counted from the model, for the closed-form parameter count)."""
        return [m for n, m in self.model.named_modules() if n.split(".")[-1] in self.config.target_modules
                and isinstance(m, nn.Linear)]

    def stored_parameters_per_experience(self) -> int:
        if self.adapters:  # what peft actually created
            return sum(p.numel() for p in self._adapter_params(self.adapters[0]))
        r = self.config.rank  # before the first experience: what it will create
        return sum(r * (m.in_features + m.out_features) for m in self.lora_modules())

    def _set_exists(self, key: str) -> bool:
        return key in self.adapters

    @contextmanager
    def activate(self, key: str | None, conditioning: dict | None = None):
        if self.lora is None:
            yield Route()
            return
        # peft's enable/disable/set_adapter also flip requires_grad; the optimiser's choice must not change
        flags = [(p, p.requires_grad) for p in self.model.parameters()]

        def restore():
            for p, flag in flags:
                p.requires_grad_(flag)

        if key is None:
            self.lora.disable_adapter_layers()
        else:
            self.lora.enable_adapter_layers()
            self.lora.set_adapter(f"exp{key}")
        restore()
        try:
            yield Route()
        finally:
            self.lora.enable_adapter_layers()
            restore()
