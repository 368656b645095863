"""What a decode is keyed by in the run-wide decode memo: everything that can change it, found by the suite.

Two kinds of key, and a decode is reused only under an equal key:

- **The plain model.** While the strategy's route for a set is active, the model is checked module by module
  (cl_asr/cl/fingerprint.py): library classes only (a disabled peft layer counts as its base layer), no hook
  anywhere, no replaced `forward` or `generate`. Then the decode is a function of the model's weights and
  buffers, its generation config and the decoder prefix, and the key is a digest of those: shareable across
  strategies (zero-shot, FFT before training, prompt methods' base-language sets, LoRA with no adapter on).
- **The strategy's state.** Otherwise nothing proves the decode equal to another strategy's, so the key holds
  the strategy's identity (class, name, config, seed) and a digest of everything it owns: the model's
  parameters and buffers (adapters included), its `extra_modules()`, every tensor and plain value reachable
  from its attributes, and the hooks on the model. Such a decode is reused only by the same strategy in the
  same state (e.g. a set decoded twice in one pass), and counted as not shareable in run.json.

A strategy does not declare any of this: one written from the README gets right decodes without knowing that
the memo exists. What it cannot see is hidden Python state outside the method object (module globals): keep
state on the method, as the README says.
"""
from __future__ import annotations

import dataclasses
import hashlib

import torch
from torch import nn

from ..core import Target
from ..methods.base import Method, SetRoutedMethod
from .fingerprint import Digests, effective_modules, global_hooks_present, has_hooks, tensors_of

_PRIMITIVES = (int, float, str, bool, type(None))
# objects of these packages are not walked (tokenizers, peft models: their tensors are reached as modules)
_LIBRARIES = {"transformers", "torch", "tokenizers", "peft", "avalanche", "builtins", "numpy"}


def plain_model_digest(model: nn.Module, digests: Digests) -> str | None:
    """A digest of what `model` decodes; None unless it is proven a plain library model (see the module doc)."""
    if global_hooks_present() or "generate" in model.__dict__:
        return None
    modules = effective_modules(model)
    if modules is None or any(has_hooks(m) for m in modules):
        return None
    tensors, names = tensors_of(modules)
    generation = getattr(model, "generation_config", None)
    return f"{digests(tensors, names)}:{generation.to_json_string() if generation is not None else ''}"


def _reachable(value, tensors: dict, plain: list, path: str, seen: set, depth: int) -> None:
    """Tensors (by id) and plain values reachable from `value`, through containers, modules and objects."""
    if isinstance(value, _PRIMITIVES):
        plain.append(f"{path}={value!r}")
        return
    if id(value) in seen or depth > 6:
        return
    seen.add(id(value))
    if torch.is_tensor(value):
        tensors.setdefault(id(value), (path, value))
    elif isinstance(value, nn.Module):
        for name, t in (*value.named_parameters(), *value.named_buffers()):
            tensors.setdefault(id(t), (f"{path}.{name}", t))
    elif isinstance(value, dict):
        for k, v in value.items():
            _reachable(v, tensors, plain, f"{path}[{k!r}]", seen, depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        for i, v in enumerate(items):
            _reachable(v, tensors, plain, f"{path}[{i}]", seen, depth + 1)
    elif callable(value) and getattr(value, "__closure__", None):
        for i, cell in enumerate(value.__closure__):
            try:
                _reachable(cell.cell_contents, tensors, plain, f"{path}.<cell{i}>", seen, depth + 1)
            except ValueError:  # an empty cell
                pass
    elif hasattr(value, "__dict__") and not isinstance(value, type) and \
            type(value).__module__.split(".")[0] not in _LIBRARIES:
        # objects of ours or of the user's methods file (prompt injectors, ...): their attributes count too
        _reachable(vars(value), tensors, plain, path, seen, depth + 1)


def _hooks_on(model: nn.Module) -> list[str]:
    out = []
    for name, module in model.named_modules():
        for kind, hooks in (("pre", module._forward_pre_hooks), ("post", module._forward_hooks)):
            for h in hooks.values():
                fn = getattr(h, "fn", h)
                out.append(f"{name}:{kind}:{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}")
    return out


def strategy_state_digest(method: Method, digests: Digests) -> str:
    """The strategy's identity and a digest of everything it owns (see the module doc)."""
    tensors: dict[int, tuple[str, torch.Tensor]] = {}
    plain: list[str] = []
    seen = {id(method.tokenizer)}
    _reachable(method.model, tensors, plain, "model", seen, 0)
    for i, module in enumerate(method.extra_modules()):
        _reachable(module, tensors, plain, f"extra[{i}]", seen, 0)
    for name, value in sorted(vars(method).items()):
        if name not in ("model", "tokenizer", "config", "features_of"):
            _reachable(value, tensors, plain, name, seen, 0)
    hooks = _hooks_on(method.model)
    for module in method.extra_modules():
        hooks += _hooks_on(module)
    names, values = zip(*tensors.values()) if tensors else ((), ())
    config = dataclasses.asdict(method.config) if dataclasses.is_dataclass(method.config) else repr(method.config)
    identity = f"{type(method).__module__}.{type(method).__qualname__}:{method.name}:{config!r}:seed={method.seed}"
    h = hashlib.blake2b(digest_size=16)
    for part in (identity, *plain, *hooks, digests(list(values), list(names))):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def decode_key(method: Method, target: Target, digests: Digests) -> tuple[str, bool]:
    """(key, shareable): the key of decoding `target` with `method` as it is now; shareable is True for a
    plain-model key (equal across strategies where the models are equal)."""
    per_row = method.routes_per_row(target)
    # an active parameter set is never the plain backbone: key it by the strategy without activating it
    # (activating may need a batch, e.g. target-speaker prompts need the rows' enrolment embeddings)
    active_set = isinstance(method, SetRoutedMethod) and method.oracle_key(target) is not None
    if not per_row and not active_set:
        with method.route(target) as route:
            digest = plain_model_digest(method.model, digests)
            prefix = list(route.decoder_prefix)
        if digest is not None:
            return f"plain:{digest}:prefix={prefix}", True
    return f"strategy:{strategy_state_digest(method, digests)}", False
