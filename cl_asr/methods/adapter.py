"""adapter: bottleneck adapters (Houlsby et al. 2019; Wav2Seq prompting, arXiv 2310.02971) after the attention
and feed-forward blocks of every encoder and decoder layer, one adapter set per experience.

An adapter maps a block's output h to h + up(act(down(h))) before the residual connection, with `up` starting at
zero so an untrained adapter is the identity. AdapterHub's `adapters` package pins transformers 4.57, so this is
a small in-house module installed with forward hooks on `self_attn` and `fc2` (nothing in the model is replaced,
so `generate` and the other methods' hooks are untouched). Base-language sets run with no adapter active.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
from torch import nn

from ..core import Route, Target
from .base import SetRoutedConfig, SetRoutedMethod, freeze, register_method


@dataclass
class AdapterConfig(SetRoutedConfig):
    bottleneck: int = field(default=64, metadata={"help": "adapter bottleneck width m (d -> m -> d)"})
    activation: Literal["relu", "gelu"] = field(default="relu", metadata={"help": "non-linearity in the bottleneck"})

    def __post_init__(self):
        super().__post_init__()
        if self.bottleneck < 1:
            raise ValueError(f"bottleneck must be at least 1, got {self.bottleneck}")


class Bottleneck(nn.Module):
    def __init__(self, d: int, m: int, activation: str):
        super().__init__()
        self.down, self.up = nn.Linear(d, m), nn.Linear(m, d)
        self.act = nn.ReLU() if activation == "relu" else nn.GELU()
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


def adapter_sites(model: nn.Module) -> list[str]:
    """Names of the modules whose output an adapter follows: self_attn and fc2 of every layer."""
    whisper = model.model
    sites = []
    for part, layers in (("encoder", whisper.encoder.layers), ("decoder", whisper.decoder.layers)):
        for i in range(len(layers)):
            sites += [f"model.{part}.layers.{i}.self_attn", f"model.{part}.layers.{i}.fc2"]
    return sites


@register_method("adapter")
class BottleneckAdapters(SetRoutedMethod):
    description = ("bottleneck adapters after attention and feed-forward in every layer "
                   "(Wav2Seq prompting arXiv 2310.02971), frozen backbone")
    config_class = AdapterConfig

    def setup(self) -> None:
        freeze(self.model)
        self.adapter_sets = nn.ModuleDict()  # experience key -> ModuleDict(site -> Bottleneck)
        self.active: nn.ModuleDict | None = None
        self._training_key: str | None = None
        self.sites = adapter_sites(self.model)
        # installed while a set is active only: without one the backbone is exactly the pretrained model
        self._handles: list = []

    def _make_hook(self, site: str):
        key = site.replace(".", "_")

        def hook(module, args, output):
            if self.active is None:
                return None
            if isinstance(output, tuple):  # attention returns (hidden, weights, ...)
                return (self.active[key](output[0]), *output[1:])
            return self.active[key](output)

        return hook

    def extra_modules(self):
        return [self.adapter_sets]

    def before_experience(self, target: Target, rows: Sequence[dict] = ()) -> None:
        key = self.set_key(target.index)
        self.record_routing_profile(target.index, rows)
        if key not in self.adapter_sets:
            d = self.model.model.config.d_model
            with torch.random.fork_rng():
                torch.manual_seed(self.seed * 1000 + target.index)
                new = nn.ModuleDict({s.replace(".", "_"): Bottleneck(d, self.config.bottleneck, self.config.activation)
                                     for s in self.sites})
            self.adapter_sets[key] = new.to(next(self.model.parameters()).device)
        self._training_key = key

    def after_experience(self, target: Target) -> None:
        self._training_key = None

    def trainable_parameters(self):
        return [] if self._training_key is None else list(self.adapter_sets[self._training_key].parameters())

    def stored_parameters_per_experience(self) -> int:
        d, m = self.model.model.config.d_model, self.config.bottleneck
        return len(self.sites) * (2 * d * m + m + d)

    def _set_exists(self, key: str) -> bool:
        return key in self.adapter_sets

    @contextmanager
    def activate(self, key: str | None, conditioning: dict | None = None):
        self.active = self.adapter_sets[key] if key is not None else None
        if self.active is not None:
            modules = dict(self.model.named_modules())
            self._handles = [modules[s].register_forward_hook(self._make_hook(s)) for s in self.sites]
        try:
            yield Route()
        finally:
            self.active = None
            for h in self._handles:
                h.remove()
            self._handles = []
