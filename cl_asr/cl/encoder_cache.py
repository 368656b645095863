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

Cross-attention keys and values. A decoder attends to the encoder output through each layer's
`encoder_attn.k_proj` / `v_proj`; where those are frozen too, the keys and values an utterance gives are as
constant as its encoder output, and recomputing them every step is most of a decoder-prompt step's work after
the encoder (500 positions x 6 layers x 2 projections). `EncoderCache.encode_for_decoder` returns them as well,
keyed by the utterance's key and a fingerprint of those projections (same rules: no grad, no hooks on them or
on their attention module or on the decoder, library classes only). Hooks on decoder *layers* are allowed:
prompt methods use them to change the hidden states, never the encoder output the layer is given. They are
held in memory only, within `cross_attention_mb` (12 MB per 10 s utterance on whisper-base: recomputing is
cheaper than reading them back from disk).
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from ..methods.base import tensor_digest

_LIBRARY_PREFIXES = ("torch.nn.", "transformers.")


def frozen_fingerprint(modules: list[nn.Module], stamp_cache: dict) -> str | None:
    """What `modules` compute, as a digest of their tensors; None when they are not plain frozen library
    modules (see the module doc)."""
    tensors, names = [], []
    for i, root in enumerate(modules):
        for name, p in root.named_parameters():
            if p.requires_grad:
                return None
            tensors.append(p)
            names.append(f"{i}.{name}")
        for name, b in root.named_buffers():
            tensors.append(b)
            names.append(f"{i}.{name}")
        for module in root.modules():
            if module._forward_hooks or module._forward_pre_hooks or "forward" in module.__dict__:
                return None
            if not type(module).__module__.startswith(_LIBRARY_PREFIXES):
                return None
            if module.training and isinstance(module, nn.Dropout) and module.p > 0:
                return None
    stamp = tuple((id(t), t._version) for t in tensors)
    if stamp not in stamp_cache:
        first = tensors[0] if tensors else torch.zeros(0)
        digest = tensor_digest(tensors, names)
        stamp_cache.clear()  # only the current state is asked for again
        stamp_cache[stamp] = f"{digest}:{first.device.type}:{first.dtype}:{torch.__version__}"
    return stamp_cache[stamp]


def encoder_fingerprint(encoder: nn.Module, stamp_cache: dict) -> str | None:
    """What the encoder computes, as a digest; None when its output may not be reused (see the module doc)."""
    config = getattr(encoder, "config", None)
    if encoder.training and config is not None and getattr(config, "encoder_layerdrop", 0.0) > 0:
        return None
    return frozen_fingerprint([encoder], stamp_cache)


def cross_attention_fingerprint(decoder: nn.Module, stamp_cache: dict) -> str | None:
    """What the decoder's cross-attention keys and values compute from the encoder output; None when they may
    not be reused (see the module doc)."""
    attentions = [layer.encoder_attn for layer in decoder.layers]
    for module in (decoder, *attentions):
        if module._forward_pre_hooks or "forward" in module.__dict__:  # could change the encoder states
            return None
        if not type(module).__module__.startswith(_LIBRARY_PREFIXES):
            return None
    if any(a._forward_hooks for a in attentions):
        return None
    return frozen_fingerprint([proj for a in attentions for proj in (a.k_proj, a.v_proj)], stamp_cache)


def cross_attention_cache(keys_values: list[tuple[torch.Tensor, torch.Tensor]]) -> EncoderDecoderCache:
    """A transformers cache whose cross-attention part is already filled (every layer marked updated, so the
    decoder uses these keys and values instead of projecting the encoder output) and whose self-attention
    part is empty (a training forward fills it as usual)."""
    cross = DynamicCache()
    for layer, (k, v) in enumerate(keys_values):
        cross.update(k[..., :0, :], v[..., :0, :], layer)  # creates the layer (dtype, device), copies nothing
        # set, not update(): update() concatenates onto the empty tensor, one more copy of everything
        cross.layers[layer].keys, cross.layers[layer].values = k, v
    return EncoderDecoderCache(DynamicCache(), cross)  # is_updated is set from the filled layers


class _MemoryLRU:
    """Tensors by key within a byte budget, least recently used pushed out first (to `spill`, if given)."""

    def __init__(self, budget: int, spill=None):
        self.budget, self.spill = budget, spill
        self.entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.bytes = 0

    def get(self, key: str) -> torch.Tensor | None:
        out = self.entries.get(key)
        if out is not None:
            self.entries.move_to_end(key)
        return out

    def put(self, key: str, out: torch.Tensor) -> None:
        size = out.numel() * out.element_size()
        if size > self.budget or key in self.entries:
            return
        self.entries[key] = out
        self.bytes += size
        while self.bytes > self.budget:
            old_key, old = self.entries.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()
            if self.spill is not None:
                self.spill(old_key, old)


class EncoderCache:
    def __init__(self, memory_mb: float = 2048, disk_dir: Path | None = None, disk_mb: float = 0,
                 cross_attention_mb: float = 2048):
        self.disk_dir = Path(disk_dir) if disk_dir is not None and disk_mb > 0 else None
        self.disk_budget = int(disk_mb * 2**20)
        self._memory = _MemoryLRU(int(memory_mb * 2**20), spill=self._spill)
        self._cross = _MemoryLRU(int(cross_attention_mb * 2**20))  # memory only: cheaper to recompute than read
        self._disk: OrderedDict[str, int] = OrderedDict()  # key -> bytes, oldest first
        self._disk_bytes = 0
        self._stamps: dict[int, dict] = {}  # per module: version stamp -> fingerprint
        self.hits = self.misses = self.bypassed = 0
        self.cross_hits = self.cross_misses = self.cross_bypassed = 0
        if self.disk_dir is not None:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
            for f in sorted(self.disk_dir.glob("*.pt"), key=lambda f: f.stat().st_mtime):
                self._disk[f.stem] = f.stat().st_size
                self._disk_bytes += f.stat().st_size

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "bypassed": self.bypassed,
                "memory_mb": round(self._memory.bytes / 2**20, 1), "disk_mb": round(self._disk_bytes / 2**20, 1),
                "cross_attention": {"hits": self.cross_hits, "misses": self.cross_misses,
                                    "bypassed": self.cross_bypassed, "memory_mb": round(self._cross.bytes / 2**20, 1)}}

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
        found = self._encode(encoder, input_features)
        return None if found is None else self._stack(found[1], input_features.device)

    def encode_for_decoder(self, encoder: nn.Module, decoder: nn.Module, input_features: torch.Tensor
                           ) -> tuple[torch.Tensor, EncoderDecoderCache | None] | None:
        """`encode`, plus a cache holding each decoder layer's cross-attention keys and values for these
        utterances when those may be reused too (else None in its place: the decoder projects as usual)."""
        found = self._encode(encoder, input_features)
        if found is None:
            return None
        keys, outputs = found
        device = input_features.device
        states = self._stack(outputs, device)
        fingerprint = None
        if self._cross.budget > 0:  # 0: off, the decoder projects as usual
            fingerprint = cross_attention_fingerprint(decoder, self._stamps.setdefault(id(decoder), {}))
        if fingerprint is None:
            self.cross_bypassed += len(keys)
            return states, None
        cross_keys = [self._key(fingerprint, k) for k in keys]
        kv = [self._cross.get(k) for k in cross_keys]
        missing = [i for i, t in enumerate(kv) if t is None]
        self.cross_hits += len(kv) - len(missing)
        self.cross_misses += len(missing)
        if missing:
            with torch.no_grad():
                computed = self._project(decoder, states[missing])
            for i, t in zip(missing, computed):
                kv[i] = t.clone()
                self._cross.put(cross_keys[i], kv[i])
        # per utterance [layers, 2, heads, time, head_dim] -> per layer ([batch, heads, time, head_dim] x 2)
        kv = [t.to(device) for t in kv]
        return states, cross_attention_cache(
            [(torch.stack([t[layer, 0] for t in kv]), torch.stack([t[layer, 1] for t in kv]))
             for layer in range(kv[0].shape[0])])

    @staticmethod
    def _project(decoder: nn.Module, states: torch.Tensor) -> torch.Tensor:
        """What each cross-attention layer computes from `states` (as WhisperAttention does), per utterance."""
        per_layer = []
        for layer in decoder.layers:
            attn = layer.encoder_attn
            shape = (states.shape[0], -1, attn.num_heads, attn.head_dim)
            k = attn.k_proj(states).view(shape).transpose(1, 2)
            v = attn.v_proj(states).view(shape).transpose(1, 2)
            per_layer.append(torch.stack([k, v], dim=1))  # [batch, 2, heads, time, head_dim]
        return torch.stack(per_layer, dim=1)  # [batch, layers, 2, heads, time, head_dim]

    def _encode(self, encoder: nn.Module, input_features: torch.Tensor
                ) -> tuple[list[str], list[torch.Tensor]] | None:
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
                self._memory.put(keys[i], found[i])
        return keys, found

    @staticmethod
    def _stack(outputs: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        return torch.stack([out.to(device) for out in outputs])

    # -- storage -------------------------------------------------------------------------------------------
    @staticmethod
    def _key(fingerprint: str, content: torch.Tensor | str) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(fingerprint.encode())
        if isinstance(content, str):  # another entry's key (cross-attention of an utterance's encoder output)
            h.update(content.encode())
        else:
            h.update(f"{tuple(content.shape)}:{content.dtype}".encode())
            h.update(content.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def _get(self, key: str) -> torch.Tensor | None:
        out = self._memory.get(key)
        if out is not None:
            return out
        if key in self._disk:
            path = self.disk_dir / f"{key}.pt"
            try:
                out = torch.load(path, map_location="cpu", weights_only=True)
            except (OSError, RuntimeError):  # removed or damaged by someone else: recompute it
                self._forget_disk(key)
                return None
            self._disk.move_to_end(key)
            self._memory.put(key, out)
            return out
        return None

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
