"""pnn: progressive networks (Rusu et al. 2016, arXiv 1606.04671) as CL-MASR adapts them to Whisper.

The paper's variant (a whole new column per task, with lateral adapters from every layer of every earlier
column) would copy Whisper once per experience. CL-MASR (Della Libera et al. 2023, arXiv 2310.16931;
speechbrain/benchmarks, benchmarks/CL_MASR/whisper/train_pnn.py and hparams/train_pnn.yaml) instead freezes the
whole model and, per new language, appends `num_new_decoder_layers: 1` fresh `WhisperDecoderLayer` on top of the
decoder stack (below the decoder's final layer norm); the layers of earlier languages stay in the stack, frozen.
This file builds exactly that:

- the backbone is frozen; experience j owns a *column* of `new_layers` new decoder layers;
- the decoder that serves experience j is the pretrained decoder, then the columns of experiences 0..j in order
  (each frozen once its experience ends), then the decoder's final layer norm: column j reads the output of the
  earlier columns, the only "lateral" path CL-MASR keeps (serial, not the paper's per-layer adapters);
- a column is chosen by `SetRoutedMethod` routing: the experience's own (oracle), or the one Whisper's language
  ID points to (`eval_routing: lid`); a base language, or an experience not learned yet, decodes with no column
  (the pretrained decoder exactly).

The columns run from a forward hook on the last pretrained decoder layer, installed only while a column is
active, with the layer's own arguments (causal mask, encoder states, KV cache): `generate` keeps working and the
new layers get their own slots in the KV cache. Differences from CL-MASR: it also adds a new language token and
trains the whole (shared) token embedding; here every experience decodes with the scenario's language token
and the embedding stays frozen, so earlier experiences are never touched. `init: identity` (default) zeroes the
new layers' output projections so an untrained column is the identity; `init: random` is CL-MASR's
(PyTorch's default initialisation of a new `WhisperDecoderLayer`).
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
class ProgressiveConfig(SetRoutedConfig):
    new_layers: int = field(
        default=1,
        metadata={"help": "decoder layers each experience's column adds on top of the decoder stack (CL-MASR "
                  "num_new_decoder_layers)"})
    init: Literal["identity", "random"] = field(
        default="identity",
        metadata={"help": "identity: the new layers' output projections (self-attention, cross-attention, fc2) "
                  "start at zero, so an untrained column leaves the decoder unchanged; random: PyTorch's default "
                  "initialisation of a new WhisperDecoderLayer (CL-MASR)"})

    def __post_init__(self):
        super().__post_init__()
        if self.new_layers < 1:
            raise ValueError(f"new_layers must be at least 1, got {self.new_layers}")


def decoder_layer_size(config) -> int:
    """Parameters of one WhisperDecoderLayer: two attentions (q, v, out with bias, k without), three layer norms,
    fc1 and fc2."""
    d, f = config.d_model, config.decoder_ffn_dim
    attention = 4 * d * d + 3 * d
    return 2 * attention + 3 * 2 * d + (d * f + f) + (f * d + d)


def _ensure_cache_slots(cache, n_layers: int) -> None:
    """A KV cache built for the pretrained decoder's layers (transformers pre-allocates one slot per
    `config.decoder_layers`) gets empty slots for the columns' layers too."""
    from transformers.cache_utils import DynamicLayer, EncoderDecoderCache

    parts = [cache.self_attention_cache, cache.cross_attention_cache] if isinstance(cache, EncoderDecoderCache) \
        else [cache]
    for part in parts:
        layers = getattr(part, "layers", None)
        if layers is None or getattr(part, "layer_class_to_replicate", None) is not None:
            continue  # no list to extend, or one that grows by itself on update
        while len(layers) < n_layers:
            layers.append(DynamicLayer())


@register_method("pnn")
class ProgressiveNetworks(SetRoutedMethod):
    description = ("progressive networks as CL-MASR adapts them to Whisper: each experience stacks a new decoder "
                   "layer on top of the frozen decoder and the earlier experiences' layers (arXiv 2310.16931)")
    config_class = ProgressiveConfig

    def setup(self) -> None:
        freeze(self.model)
        self.columns = nn.ModuleDict()  # experience key -> ModuleList of new WhisperDecoderLayers
        self._training_key: str | None = None
        self._stack: list[nn.Module] = []  # the layers run after the pretrained decoder, while a column is active
        self._handle = None

    # -- columns -------------------------------------------------------------------------------------------
    def _new_column(self, index: int) -> nn.ModuleList:
        from transformers.models.whisper.modeling_whisper import WhisperDecoderLayer

        config = self.model.model.config
        p = next(self.model.parameters())
        with torch.random.fork_rng():
            torch.manual_seed(self.seed * 1000 + index)
            layers = nn.ModuleList(WhisperDecoderLayer(config, layer_idx=config.decoder_layers + i)
                                   for i in range(self.config.new_layers))
        if self.config.init == "identity":
            for layer in layers:
                for linear in (layer.self_attn.out_proj, layer.encoder_attn.out_proj, layer.fc2):
                    nn.init.zeros_(linear.weight)
                    nn.init.zeros_(linear.bias)
        return layers.to(device=p.device, dtype=p.dtype)

    def stack_for(self, key: str) -> list[nn.Module]:
        """The new layers that serve set `key`, bottom to top: in separate mode the columns of experiences
        0..key (CL-MASR keeps earlier languages' layers in the stack), in shared mode the one column."""
        if key == "shared":
            return list(self.columns["shared"])
        below = sorted(int(k) for k in self.columns if int(k) <= int(key))
        return [layer for k in below for layer in self.columns[str(k)]]

    def extra_modules(self):
        return [self.columns]

    def before_experience(self, target: Target, rows: Sequence[dict] = ()) -> None:
        key = self.set_key(target.index)
        self.record_routing_profile(target.index, rows)
        if key not in self.columns:
            self.columns[key] = self._new_column(target.index)
        self.columns[key].requires_grad_(True)
        self._training_key = key

    def after_experience(self, target: Target) -> None:
        key = self._training_key
        if key is not None and self.config.mode == "separate":  # done: frozen under the later columns
            for p in self.columns[key].parameters():
                p.requires_grad_(False)
                p.grad = None
        self._training_key = None

    def trainable_parameters(self):
        return [] if self._training_key is None else list(self.columns[self._training_key].parameters())

    def stored_parameters_per_experience(self) -> int:
        return self.config.new_layers * decoder_layer_size(self.model.model.config)

    def info(self) -> dict:
        return {"columns": len(self.columns), "layers_per_column": self.config.new_layers}

    # -- routing -------------------------------------------------------------------------------------------
    def _set_exists(self, key: str) -> bool:
        return key in self.columns

    def _run_columns(self, module, args, kwargs, output):
        if not self._stack:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        rest, extra = args[1:], dict(kwargs)
        extra.pop("hidden_states", None)
        cache = extra.get("cache", extra.get("past_key_values"))
        if cache is not None:
            _ensure_cache_slots(cache, len(self.model.model.decoder.layers) + len(self._stack))
        for layer in self._stack:
            hidden = layer(hidden, *rest, **extra)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    @contextmanager
    def activate(self, key: str | None, conditioning: dict | None = None):
        if key is None:
            yield Route()
            return
        self._stack = self.stack_for(key)
        n = len(self.model.model.decoder.layers)
        for position, layer in enumerate(self._stack):  # their own KV-cache slots, after the pretrained layers'
            layer.self_attn.layer_idx = layer.encoder_attn.layer_idx = n + position
            layer.train(self.model.training)
        self._handle = self.model.model.decoder.layers[-1].register_forward_hook(self._run_columns, with_kwargs=True)
        try:
            yield Route()
        finally:
            self._handle.remove()
            self._handle = None
            self._stack = []
