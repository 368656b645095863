"""Encoder outputs computed once per utterance, for models whose encoder is exactly a frozen function.

With a frozen, unprompted encoder (zero-shot evaluation, decoder-side prompts, text_spt's decoder-side
prompts and LoRA) an utterance's encoder output never changes, yet a plain loop recomputes it every epoch and every
evaluation; the encoder is most of Whisper's cost (FACTS §5). `EncoderCache.encode` returns the cached output
where it can and computes (and stores) the rest.

When may an output be reused? The key of an utterance is a digest of its log-mel features (so another window,
feature extractor or audio is another key) together with a fingerprint of the encoder: a digest of its
parameters and buffers (re-hashed only when a tensor is updated in place), the device type, dtype, the
autocast dtype in force (a bf16 run's outputs are not an fp32 run's) and the torch version. The fingerprint is None — nothing is cached or reused — whenever the encoder is not a plain frozen
function, which is checked on the module itself, not declared by a strategy:
- any encoder parameter requires grad (FFT, encoder LoRA, FFT+prompts: training needs its graph);
- any forward hook or pre-hook on the encoder or a submodule (encoder and input prompts, adapters, speaker
  prompts inject themselves this way);
- any submodule whose class comes from outside torch.nn / transformers (peft's LoRA layers), or whose
  `forward` was replaced on the instance;
- stochastic layers active in training mode (dropout or layer drop above zero).

Entries live in memory up to `memory_mb` (least recently used first out); entries pushed out go to `disk_dir`
(if given) up to `disk_mb`, as one file per utterance, written atomically.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from ..methods.base import tensor_digest

_LIBRARY_PREFIXES = ("torch.nn.", "transformers.")


def encoder_fingerprint(encoder: nn.Module, stamp_cache: dict) -> str | None:
    """What the encoder computes, as a digest; None when its output may not be reused (see the module doc)."""
    tensors, names = [], []
    for name, p in encoder.named_parameters():
        if p.requires_grad:
            return None
        tensors.append(p)
        names.append(name)
    for name, b in encoder.named_buffers():
        tensors.append(b)
        names.append(name)
    for module in encoder.modules():
        if module._forward_hooks or module._forward_pre_hooks or "forward" in module.__dict__:
            return None
        if not type(module).__module__.startswith(_LIBRARY_PREFIXES):
            return None
        if module.training and isinstance(module, nn.Dropout) and module.p > 0:
            return None
    config = getattr(encoder, "config", None)
    if encoder.training and config is not None and getattr(config, "encoder_layerdrop", 0.0) > 0:
        return None
    stamp = tuple((id(t), t._version) for t in tensors)
    if stamp not in stamp_cache:
        first = tensors[0] if tensors else torch.zeros(0)
        digest = tensor_digest(tensors, names)
        stamp_cache.clear()  # only the current state is asked for again
        stamp_cache[stamp] = f"{digest}:{first.device.type}:{first.dtype}:{torch.__version__}"
    return stamp_cache[stamp]


class EncoderCache:
    def __init__(self, memory_mb: float = 2048, disk_dir: Path | None = None, disk_mb: float = 0):
        self.memory_budget = int(memory_mb * 2**20)
        self.disk_dir = Path(disk_dir) if disk_dir is not None and disk_mb > 0 else None
        self.disk_budget = int(disk_mb * 2**20)
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._memory_bytes = 0
        self._disk: OrderedDict[str, int] = OrderedDict()  # key -> bytes, oldest first
        self._disk_bytes = 0
        self._stamps: dict[int, dict] = {}  # per encoder: version stamp -> fingerprint
        self.hits = self.misses = self.bypassed = 0
        if self.disk_dir is not None:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
            for f in sorted(self.disk_dir.glob("*.pt"), key=lambda f: f.stat().st_mtime):
                self._disk[f.stem] = f.stat().st_size
                self._disk_bytes += f.stat().st_size

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "bypassed": self.bypassed,
                "memory_mb": round(self._memory_bytes / 2**20, 1), "disk_mb": round(self._disk_bytes / 2**20, 1)}

    def fingerprint(self, encoder: nn.Module) -> str | None:
        weights = encoder_fingerprint(encoder, self._stamps.setdefault(id(encoder), {}))
        if weights is None:
            return None
        device = next(encoder.parameters()).device.type
        autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else "off"
        return f"{weights}:autocast={autocast}"

    def encode(self, encoder: nn.Module, input_features: torch.Tensor) -> torch.Tensor | None:
        """The encoder's last hidden state for a batch of log-mel features, from the cache where possible;
        None when the encoder's output may not be reused (then run the model as usual)."""
        fingerprint = self.fingerprint(encoder)
        if fingerprint is None:
            self.bypassed += input_features.shape[0]
            return None
        keys = [self._key(fingerprint, f) for f in input_features]
        found = [self._get(k) for k in keys]
        missing = [i for i, out in enumerate(found) if out is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            with torch.no_grad():
                computed = encoder(input_features[missing]).last_hidden_state
            for i, out in zip(missing, computed):
                found[i] = out.detach().clone()  # a slice would keep the whole batch's storage alive
                self._put_memory(keys[i], found[i])
        device = input_features.device
        return torch.stack([out.to(device) for out in found])

    # -- storage -------------------------------------------------------------------------------------------
    @staticmethod
    def _key(fingerprint: str, features: torch.Tensor) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(fingerprint.encode())
        h.update(f"{tuple(features.shape)}:{features.dtype}".encode())
        h.update(features.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def _get(self, key: str) -> torch.Tensor | None:
        out = self._memory.get(key)
        if out is not None:
            self._memory.move_to_end(key)
            return out
        if key in self._disk:
            path = self.disk_dir / f"{key}.pt"
            try:
                out = torch.load(path, map_location="cpu", weights_only=True)
            except (OSError, RuntimeError):  # removed or damaged by someone else: recompute it
                self._forget_disk(key)
                return None
            self._disk.move_to_end(key)
            self._put_memory(key, out)
            return out
        return None

    def _put_memory(self, key: str, out: torch.Tensor) -> None:
        size = out.numel() * out.element_size()
        if size > self.memory_budget:
            return
        self._memory[key] = out
        self._memory_bytes += size
        while self._memory_bytes > self.memory_budget:
            old_key, old = self._memory.popitem(last=False)
            self._memory_bytes -= old.numel() * old.element_size()
            self._spill(old_key, old)

    def _spill(self, key: str, out: torch.Tensor) -> None:
        if self.disk_dir is None or key in self._disk:
            return
        path = self.disk_dir / f"{key}.pt"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            torch.save(out.to("cpu"), tmp)
            os.replace(tmp, path)
        except OSError:  # a full disk only costs recomputation
            tmp.unlink(missing_ok=True)
            return
        size = path.stat().st_size
        self._disk[key] = size
        self._disk_bytes += size
        while self._disk_bytes > self.disk_budget and self._disk:
            self._forget_disk(next(iter(self._disk)))

    def _forget_disk(self, key: str) -> None:
        self._disk_bytes -= self._disk.pop(key, 0)
        (self.disk_dir / f"{key}.pt").unlink(missing_ok=True)
