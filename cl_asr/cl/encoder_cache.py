"""Encoder outputs computed once per utterance, for models whose encoder is exactly a frozen function.

With a frozen, unprompted encoder (zero-shot evaluation, decoder-side prompts, text_spt's decoder-side
prompts and LoRA) an utterance's encoder output never changes, yet a plain loop recomputes it every epoch and
every evaluation; the encoder is most of Whisper's cost (docs/whisper.md, "Where the time goes").
`EncoderCache.encode` returns the cached output where it can and computes (and stores) the rest.

When may an output be reused? The key of an utterance is a digest of its log-mel features (so another window,
feature extractor or audio is another key) together with a fingerprint of the encoder: a digest of its
parameters and buffers (re-hashed only when a tensor is updated in place), the device type, dtype, the
autocast dtype in force (a bf16 run's outputs are not an fp32 run's) and the torch version. The fingerprint
is None — nothing is cached or reused, a bypass is counted — whenever that is not proven on the modules
themselves (rules in cl_asr/cl/fingerprint.py), never on what a strategy declares:
- any encoder parameter requires grad (FFT, encoder LoRA, FFT+prompts: training needs its graph);
- any forward hook or pre-hook on the encoder or a submodule (encoder and input prompts, adapters, speaker
  prompts inject themselves this way), any pre-hook on the model or on WhisperModel (a cached output is handed
  in as `encoder_outputs`, so such a hook would see other inputs), any global module hook;
- any submodule whose class comes from outside torch.nn / transformers (peft's LoRA layers, unless disabled),
  or whose `forward` was replaced on the instance;
- dropout or layer drop active in training mode.

Entries live in memory up to `memory_mb` (least recently used first out); entries pushed out go to `disk_dir`
(if given) up to `disk_mb`, as one file per utterance, written atomically.

Cross-attention keys and values. A decoder attends to the encoder output through each layer's
`encoder_attn.k_proj` / `v_proj`; where those are frozen too, the keys and values an utterance gives are as
constant as its encoder output, and recomputing them every step is most of a decoder-prompt step's work after
the encoder (500 positions x 6 layers x 2 projections). `EncoderCache.encode_for_decoder` returns them as well,
keyed by the utterance's key and a fingerprint of those projections (same rules: no grad, no hooks on the
cross-attention modules, library classes only). On the decoder and its layers, forward hooks are allowed (they
see outputs) and so are `core.HiddenStatesPreHook`s (prompt methods use them; by construction they cannot
change the encoder states a layer is given); any other pre-hook there turns this cache off. Held in memory
only, within `cross_attention_mb` (12 MB per 10 s utterance on whisper-base: recomputing is cheaper than reading
them back from disk).
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from .fingerprint import (Digests, effective_modules, global_hooks_present, has_hooks, plain_class,
                          pre_hooks_touch_more_than_hidden_states, tensors_of)

def _stochastic(module: nn.Module) -> bool:
    """Dropout active: an nn.Dropout module, or Whisper's functional dropout (its config's rates) in training."""
    if not module.training:
        return False
    if isinstance(module, nn.Dropout):
        return module.p > 0
    config = getattr(module, "config", None)
    return config is not None and any(getattr(config, k, 0.0) > 0 for k in
                                      ("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop"))


def _entry_is_plain(model: nn.Module) -> bool:
    """With a cached encoder output the model is called with `encoder_outputs` instead of `input_features`: a
    pre-hook on the model or on WhisperModel (or a replaced forward) would see other inputs than it expects."""
    if any(module._forward_pre_hooks or not plain_class(module) for module in (model, model.model)):
        return False
    return not global_hooks_present()


def _fingerprint(modules: list[nn.Module] | None, digests: Digests) -> str | None:
    """A digest of what plain, frozen, deterministic `modules` compute; None where that is not proven."""
    if modules is None or any(has_hooks(m) or _stochastic(m) for m in modules):
        return None
    tensors, names = tensors_of(modules)
    if any(t.requires_grad for t in tensors):
        return None
    first = tensors[0] if tensors else torch.zeros(0)
    return f"{digests(tensors, names)}:{first.device.type}:{first.dtype}:{torch.__version__}"


def encoder_fingerprint(model: nn.Module, digests: Digests) -> str | None:
    """What the Whisper model's encoder computes, as a digest; None when its output may not be reused (see the
    module doc and cl_asr/cl/fingerprint.py)."""
    if not _entry_is_plain(model):
        return None
    return _fingerprint(effective_modules(model.model.encoder), digests)


def cross_attention_fingerprint(model: nn.Module, digests: Digests) -> str | None:
    """What the decoder's cross-attention keys and values compute from the encoder output; None when they may
    not be reused. The decoder and its layers must be plain modules; a layer may carry forward hooks (they see
    its output) and `HiddenStatesPreHook`s (they cannot change its encoder states), nothing else; the
    cross-attention modules carry no hook at all."""
    if not _entry_is_plain(model):
        return None
    decoder = model.model.decoder
    for module in (decoder, *decoder.layers):  # what hands each layer its encoder states
        if not plain_class(module) or pre_hooks_touch_more_than_hidden_states(module):
            return None
    projections = []
    for layer in decoder.layers:
        attention = effective_modules(layer.encoder_attn)
        if attention is None or any(has_hooks(m) for m in attention):
            return None
        projections += [m for m in attention if m is layer.encoder_attn.k_proj or m is layer.encoder_attn.v_proj]
    return _fingerprint(projections, digests)


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
        self._digests = Digests()
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

    def fingerprint(self, model: nn.Module) -> str | None:
        """What the encoder of Whisper `model` computes (None: not reusable), with the autocast dtype in force."""
        weights = encoder_fingerprint(model, self._digests)
        encoder = model.model.encoder
        if weights is None:
            return None
        device = next(encoder.parameters()).device.type
        autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else "off"
        return f"{weights}:autocast={autocast}"

    def encode(self, model: nn.Module, input_features: torch.Tensor) -> torch.Tensor | None:
        """The last hidden state of Whisper `model`'s encoder for a batch of log-mel features, from the cache
        where possible; None when the encoder's output may not be reused (then run the model as usual)."""
        found = self._encode(model, input_features)
        return None if found is None else self._stack(found[1], input_features.device)

    def encode_for_decoder(self, model: nn.Module, input_features: torch.Tensor
                           ) -> tuple[torch.Tensor, EncoderDecoderCache | None] | None:
        """`encode`, plus a cache holding each decoder layer's cross-attention keys and values for these
        utterances when those may be reused too (else None in its place: the decoder projects as usual)."""
        found = self._encode(model, input_features)
        if found is None:
            return None
        keys, outputs = found
        device = input_features.device
        states = self._stack(outputs, device)
        fingerprint = None
        if self._cross.budget > 0:  # 0: off, the decoder projects as usual
            fingerprint = cross_attention_fingerprint(model, self._digests)
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
                computed = self._project(model.model.decoder, states[missing])
            for i, t in zip(missing, computed):
                kv[i] = t.clone()
                self._cross.put(cross_keys[i], kv[i])
        # per utterance [layers, 2, heads, time, head_dim] -> per layer ([batch, heads, time, head_dim] x 2)
        kv = [t.to(device) for t in kv]
        return states, cross_attention_cache(
            [(torch.stack([t[layer, 0] for t in kv]), torch.stack([t[layer, 1] for t in kv]))
             for layer in range(kv[0].shape[0])])

    def warm(self, model: nn.Module, batches) -> int:
        """Compute and store ahead the outputs `encode_for_decoder` will be asked for, in the (large) batches
        given: before an experience's first epoch, so that its training steps find them cached instead of
        running the encoder a few utterances at a time (the first epoch's cost on a cold cache). The caller
        runs this in the same module state as its steps (the route entered, autocast as in training), so the
        keys are the ones the steps look up; a key that does not match only costs the work done here.
        Stops where the encoder may not be reused, and before what would not fit the memory budgets (entries
        pushed out before their first use would be work thrown away). Returns the utterances warmed."""
        # Budgets are checked against what this call adds (older entries give way, least recently used first,
        # as they would to the steps); bytes per utterance are read off the first batch's states.
        warmed, states_each, cross_each = 0, 0, 0
        for features in batches:
            if self.fingerprint(model) is None:
                return warmed  # nothing reusable: the steps run the encoder (and count the bypass) as before
            n = features.shape[0]
            if (warmed + n) * states_each > self._memory.budget:
                return warmed
            if (warmed + n) * cross_each <= self._cross.budget:
                states, _ = self.encode_for_decoder(model, features)
            else:  # the keys and values no longer fit: the steps project them from the cached states
                states = self.encode(model, features)
            if not warmed:  # an utterance's states, and its keys and values: 2 of the states' size per layer
                states_each = states[0].numel() * states.element_size()
                cross_each = 2 * len(model.model.decoder.layers) * states_each if self._cross.budget > 0 else 0
            warmed += n
        return warmed

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

    def _encode(self, model: nn.Module, input_features: torch.Tensor
                ) -> tuple[list[str], list[torch.Tensor]] | None:
        fingerprint = self.fingerprint(model)
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
                computed = model.model.encoder(input_features[missing]).last_hidden_state
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
