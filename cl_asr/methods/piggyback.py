"""piggyback: PiggyBack (Mallya et al. 2018, arXiv 1801.06519): a learned binary mask per experience over chosen
weights of the frozen backbone.

Per experience and per masked weight tensor W a real-valued mask M (initialised to `mask_init`) is learned; the
forward pass uses W * B with B = 1 where M >= `threshold`, else 0. The threshold has no gradient, so the
straight-through estimator passes dL/dB on to M unchanged (the paper's rule, and CL-MASR's `Threshold`); W never
changes. After its experience only B is kept, packed 8 masked weights to a byte: one bit per masked weight.

Which weights: CL-MASR's choice for Whisper (speechbrain/benchmarks, benchmarks/CL_MASR/whisper/train_pb.py):
every parameter of the last two decoder layers (`layers: last:2`, `masked: all`: the attention and feed-forward
weights and biases and the layer norms); `masked: linear_weights` masks only the Linear layers' weight matrices,
as the paper masks only convolution and fully connected weights. Differences from CL-MASR: it also adds a new
language token and trains the whole (shared) token embedding; here the embedding stays frozen, every experience
decodes with the scenario's language token, and the masks are the only state an experience adds.

The mask set is chosen by `SetRoutedMethod` routing (the experience's own, or by Whisper's language ID); base
languages decode with no mask (the pretrained weights). Masking is applied by giving each masked module an
instance `forward` that computes with the masked tensors while a set is active (removed afterwards), so the
suite's caches see a module that is not the library's own and recompute what it feeds.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core import Route, Target
from .base import SetRoutedConfig, SetRoutedMethod, freeze, register_method
from .prompts.engine import parse_layers


@dataclass
class PiggybackConfig(SetRoutedConfig):
    layers: str = field(
        default="last:2",
        metadata={"help": "decoder layers whose weights are masked: last:K, all, first or a list like 0,3 "
                  "(CL-MASR: the last two)"})
    masked: Literal["all", "linear_weights"] = field(
        default="all",
        metadata={"help": "all: every parameter of those layers, biases and layer norms included (CL-MASR); "
                  "linear_weights: the Linear layers' weight matrices only (the paper masks conv and FC weights)"})
    mask_init: float = field(default=1e-2, metadata={"help": "initial value of every real-valued mask entry"})
    threshold: float = field(
        default=5e-3, metadata={"help": "a weight is kept (mask 1) where its real-valued mask is >= this"})

    def __post_init__(self):
        super().__post_init__()
        if not (math.isfinite(self.mask_init) and math.isfinite(self.threshold)) or self.mask_init < self.threshold:
            raise ValueError(f"mask_init ({self.mask_init}) must be finite and at least threshold ({self.threshold}): "
                             "a mask starting below the threshold removes every masked weight before training")


class BinariseSTE(torch.autograd.Function):
    """Forward: 1 where mask >= threshold, else 0 (exactly); backward: the gradient passes straight through."""

    @staticmethod
    def forward(ctx, mask: torch.Tensor, threshold: float) -> torch.Tensor:
        return (mask >= threshold).to(mask.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


_BITS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def pack_bits(binary: torch.Tensor) -> torch.Tensor:
    """A 0/1 tensor as bytes, eight entries to a byte (zero-padded at the end)."""
    flat = binary.detach().reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    flat = torch.cat([flat, flat.new_zeros(pad)]).reshape(-1, 8)
    return (flat * _BITS.to(flat.device)).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    n = math.prod(shape)
    bits = (packed.unsqueeze(1) & _BITS.to(packed.device)) > 0
    return bits.reshape(-1)[:n].reshape(tuple(shape)).to(dtype)


class PackedMask(nn.Module):
    """An experience's binary masks, one bit per masked weight: all of them flattened in order into one uint8
    buffer, with their names and shapes."""

    def __init__(self, masks: dict[str, torch.Tensor]):
        super().__init__()
        self.slots = list(masks)
        self.shapes = [tuple(m.shape) for m in masks.values()]
        self.register_buffer("bits", pack_bits(torch.cat([m.reshape(-1) for m in masks.values()])))

    def unpack(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        sizes = [math.prod(shape) for shape in self.shapes]
        flat = unpack_bits(self.bits, (sum(sizes),), dtype)
        return {slot: part.reshape(shape) for slot, part, shape in zip(self.slots, flat.split(sizes), self.shapes)}


def _masked_forward(module: nn.Module, tensors: dict[str, torch.Tensor]):
    weight, bias = tensors.get("weight", module.weight), tensors.get("bias", module.bias)
    if isinstance(module, nn.Linear):
        return lambda x: F.linear(x, weight, bias)
    return lambda x: F.layer_norm(x, module.normalized_shape, weight, bias, module.eps)


@register_method("piggyback")
class Piggyback(SetRoutedMethod):
    description = ("PiggyBack: a learned binary mask per experience on the frozen weights of the last two decoder "
                   "layers (straight-through threshold; CL-MASR's Whisper placement)")
    config_class = PiggybackConfig

    def setup(self) -> None:
        freeze(self.model)
        decoder = self.model.model.decoder
        chosen = parse_layers(self.config.layers, len(decoder.layers), "layers")
        # (module name, parameter name) of every masked tensor, in a fixed order
        self.targets: list[tuple[str, str]] = []
        for k in chosen:
            prefix = f"model.decoder.layers.{k}"
            for name, module in decoder.layers[k].named_modules():
                own = list(module.named_parameters(recurse=False))
                if not own:
                    continue
                if not isinstance(module, (nn.Linear, nn.LayerNorm)):
                    raise ValueError(f"piggyback: cannot mask {type(module).__name__} {prefix}.{name}")
                for pname, _ in own:
                    if self.config.masked == "all" or (isinstance(module, nn.Linear) and pname == "weight"):
                        self.targets.append((f"{prefix}.{name}", pname))
        self.mask_sets = nn.ModuleDict()  # experience key -> real-valued masks being learned (ParameterDict)
        self.binary_sets = nn.ModuleDict()  # experience key -> its PackedMask, after its experience
        self._training_key: str | None = None
        self._patched: list[nn.Module] = []

    @staticmethod
    def slot(module_name: str, pname: str) -> str:
        return f"{module_name}.{pname}".replace(".", "_")

    def _tensor(self, module_name: str, pname: str) -> torch.Tensor:
        return getattr(self.model.get_submodule(module_name), pname)

    def n_masked(self) -> int:
        return sum(self._tensor(m, p).numel() for m, p in self.targets)

    def extra_modules(self):
        return [self.mask_sets, self.binary_sets]

    # -- mask sets -------------------------------------------------------------------------------------------
    def before_experience(self, target: Target, rows: Sequence[dict] = ()) -> None:
        key = self.set_key(target.index)
        self.record_routing_profile(target.index, rows)
        if key not in self.mask_sets and key not in self.binary_sets:
            self.mask_sets[key] = nn.ParameterDict({
                self.slot(m, p): nn.Parameter(torch.full_like(self._tensor(m, p), self.config.mask_init,
                                                              dtype=torch.float32))
                for m, p in self.targets})
        elif key in self.binary_sets:  # shared mode never packs; a separate set is learned once
            raise RuntimeError(f"piggyback: set {key} was already learned and packed")
        self._training_key = key

    def after_experience(self, target: Target) -> None:
        key = self._training_key
        if key is not None and self.config.mode == "separate":
            with torch.no_grad():  # only the binary mask is kept: one bit per masked weight
                self.binary_sets[key] = PackedMask({slot: BinariseSTE.apply(real, self.config.threshold)
                                                    for slot, real in self.mask_sets[key].items()})
            del self.mask_sets[key]
        self._training_key = None

    def trainable_parameters(self):
        return [] if self._training_key is None else list(self.mask_sets[self._training_key].parameters())

    def stored_parameters_per_experience(self) -> int:
        """Separate mode keeps one bit per masked weight, counted here as 32-bit parameters (bits / 32, rounded
        up); shared mode keeps the real-valued mask (one value per masked weight) to go on training it."""
        n = self.n_masked()
        return n if self.config.mode == "shared" else math.ceil(n / 32)

    def binary_masks(self, key: str, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Set `key`'s 0/1 masks (differentiable towards the real-valued masks while these are being learned)."""
        if key in self.mask_sets:
            return {slot: BinariseSTE.apply(real, self.config.threshold).to(dtype)
                    for slot, real in self.mask_sets[key].items()}
        return self.binary_sets[key].unpack(dtype)

    def info(self) -> dict:
        kept = {}
        with torch.no_grad():
            for key in self.binary_sets:
                masks = self.binary_masks(key)
                kept[key] = round(float(sum(m.sum() for m in masks.values()) / self.n_masked()), 6)
        return {"masked_weights": self.n_masked(), "mask_bits_per_experience": self.n_masked(),
                "kept_share_per_set": kept}

    # -- routing ---------------------------------------------------------------------------------------------
    def _set_exists(self, key: str) -> bool:
        return key in self.mask_sets or key in self.binary_sets

    @contextmanager
    def activate(self, key: str | None, conditioning: dict | None = None):
        if key is None:
            yield Route()
            return
        masks = self.binary_masks(key, torch.float32)
        per_module: dict[str, dict[str, torch.Tensor]] = {}
        for m, p in self.targets:
            w = self._tensor(m, p)
            per_module.setdefault(m, {})[p] = w * masks[self.slot(m, p)].to(device=w.device, dtype=w.dtype)
        self._patched = []
        try:
            for m, tensors in per_module.items():
                module = self.model.get_submodule(m)
                module.forward = _masked_forward(module, tensors)  # instance forward: not the library module
                self._patched.append(module)
            yield Route()
        finally:
            for module in self._patched:
                del module.forward
            self._patched = []
