"""What the caches may key on, decided from the modules themselves, never from what a strategy declares.

A cache skips work: the encoder-output cache skips the encoder (and whatever a pre-hook on the model would
have done to its inputs), the cross-attention cache skips each decoder layer's key/value projections of the
encoder states, and the decode memo skips a whole decode. Reuse is right only where the skipped work is a
pure function of tensors the key covers. These checks say when that is proven:

- every module on the skipped path is a library class (torch.nn / transformers) without an instance-level
  `forward`, or a peft tuner layer whose adapters are disabled (then it computes exactly its `base_layer`);
- no forward hook or pre-hook on the skipped path (a hook can compute anything from anything), and no global
  module hook at all; the exceptions are transformers' own observe-only hooks (output capturing) and, where
  stated, `core.HiddenStatesPreHook`, which by construction cannot touch a decoder layer's encoder states;
- no dropout active, no parameter that requires grad where training needs the graph (the encoder's).

Where a check fails the cache computes, and counts a bypass.
"""
from __future__ import annotations

import hashlib
import weakref
from typing import Iterator

import torch
from torch import nn

from ..core import HiddenStatesPreHook, tensor_digest

LIBRARY_PREFIXES = ("torch.nn.", "transformers.")


def global_hooks_present() -> bool:
    """Hooks registered with torch.nn.modules.module.register_module_forward(_pre)_hook run on every module."""
    m = torch.nn.modules.module
    return bool(getattr(m, "_global_forward_hooks", None) or getattr(m, "_global_forward_pre_hooks", None))


def _is_disabled_tuner(module: nn.Module) -> bool:
    """A peft tuner layer (LoRA, ...) with its adapters disabled and not merged computes `base_layer(x)`."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(module, BaseTunerLayer) and module.disable_adapters and not module.merged


def effective_modules(root: nn.Module) -> Iterator[nn.Module] | None:
    """The modules that compute `root`'s output (a disabled tuner layer stands for its base layer), or None
    when one of them is not a plain library module (see the module doc). Hooks are checked by the callers,
    which differ in what they allow."""
    out: list[nn.Module] = []
    stack = [root]
    while stack:
        module = stack.pop()
        if _is_disabled_tuner(module):
            if has_hooks(module):
                return None
            stack.append(module.base_layer)
            continue
        if not plain_class(module):
            return None
        out.append(module)
        stack.extend(reversed(list(module.children())))
    return out


def library_hook(hook) -> bool:
    """A hook of transformers' own (it installs observe-only hooks that capture hidden states when asked to)."""
    return getattr(hook, "__module__", "").startswith("transformers.")


def has_hooks(module: nn.Module) -> bool:
    """True when a hook other than the library's own could change what `module` computes."""
    return any(not library_hook(h) for h in (*module._forward_hooks.values(), *module._forward_pre_hooks.values()))


def pre_hooks_touch_more_than_hidden_states(module: nn.Module) -> bool:
    """True when a pre-hook other than the library's own and `HiddenStatesPreHook`s could change `module`'s
    inputs besides its hidden states (a decoder layer's encoder states, say)."""
    return any(not (library_hook(h) or isinstance(h, HiddenStatesPreHook)) for h in module._forward_pre_hooks.values())


def plain_class(module: nn.Module) -> bool:
    """A library class (torch.nn / transformers) whose `forward` was not replaced on the instance."""
    return type(module).__module__.startswith(LIBRARY_PREFIXES) and "forward" not in module.__dict__


def tensors_of(modules: list[nn.Module]) -> tuple[list[torch.Tensor], list[str]]:
    """Parameters and buffers directly owned by `modules`, with positional names (for digests)."""
    tensors, names = [], []
    for i, module in enumerate(modules):
        for name, t in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)):
            if t is not None:
                tensors.append(t)
                names.append(f"{i}.{type(module).__name__}.{name}")
    return tensors, names


class Digests:
    """Digests of tensor lists, each tensor re-hashed only when it changes (an in-place update bumps its
    `_version`; the fused optimiser's updates are bumped by the training loop). Entries hold weak references,
    so a freed tensor whose id is reused by a new one is never mistaken for it."""

    def __init__(self):
        self._per_tensor: dict[int, tuple[weakref.ref, int, str]] = {}

    def _one(self, t: torch.Tensor) -> str:
        if t.is_inference():  # no version counter to watch: hash it every time
            return tensor_digest([t])
        entry = self._per_tensor.get(id(t))
        if entry is not None and entry[0]() is t and entry[1] == t._version:
            return entry[2]
        digest = tensor_digest([t])
        self._per_tensor[id(t)] = (weakref.ref(t), t._version, digest)
        if len(self._per_tensor) > 100_000:  # drop entries of freed tensors
            self._per_tensor = {k: v for k, v in self._per_tensor.items() if v[0]() is not None}
        return digest

    def __call__(self, tensors: list[torch.Tensor], names: list[str]) -> str:
        h = hashlib.blake2b(digest_size=16)
        for name, t in zip(names, tensors, strict=True):
            h.update(f"{name}:{self._one(t)};".encode())
        return h.hexdigest()
