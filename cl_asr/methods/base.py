"""The strategy interface. A strategy is one class in one file:

    @register_method("my_method")
    class MyMethod(Method):
        description = "one line shown by `run_suite.py list`"
        config_class = MyConfig          # a dataclass; defaults in baselines/my_method.yaml

        def setup(self): ...             # freeze / wrap the backbone, install hooks
        def trainable_parameters(self): ...
        def stored_parameters_per_experience(self): ...

Optional: `before_experience(target, rows)` / `after_experience` (e.g. create a prompt set, initialised from
the experience's rows, or freeze it), `route` (which
prompt set, if any, serves a given train or test set; what decoder prefix tokens it needs) and
`state_key` (what determines decoding of a set, so identical decodes are computed once).
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar, Iterator, Literal, Sequence

import torch
from torch import nn

from ..registry import Registry

METHODS: Registry[type["Method"]] = Registry("strategy")


def register_method(name: str):
    def decorator(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.register(name)(cls)

    return decorator


@dataclass
class MethodConfig:
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the gradient norm to this value (0 = off)"})
    schedule: Literal["constant", "linear"] = field(
        default="constant",
        metadata={"help": "learning-rate schedule within an experience: constant, or linear warm-up then linear "
                  "decay to zero"},
    )
    warmup: float = field(default=0.1, metadata={"help": "share of an experience's steps spent warming up (linear)"})

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup}")


@dataclass(frozen=True)
class Target:
    """A set the model is trained or evaluated on: a stream name, the experience index in it, its language
    (the true one) and the language token it is decoded with (a scenario setting, FACTS §3)."""

    stream: str  # "train" | "test" | "preservation"
    index: int
    name: str  # e.g. "eo"
    language: str
    decode_language: str

    @property
    def is_experience(self) -> bool:
        """True for the sets of a learned (or to-be-learned) experience, False for preservation sets."""
        return self.stream in ("train", "test")


@dataclass
class Route:
    """How the model must be run for a target: decoder tokens inserted before <|startoftranscript|>."""

    decoder_prefix: list[int] = field(default_factory=list)


class Method:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_class: ClassVar[type] = MethodConfig
    trains: ClassVar[bool] = True  # False for zero_shot: the runner skips training entirely

    def __init__(self, config, model: nn.Module, tokenizer, seed: int = 0):
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.seed = seed
        self.experiences_trained = 0  # how many experiences have finished training
        self._hash_cache: dict[tuple, str] = {}

    # -- what a strategy defines -------------------------------------------------------------------------
    def setup(self) -> None:
        """Prepare the backbone (freeze, wrap, install hooks). Called once, before any evaluation."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates during the current experience."""
        return []

    def stored_parameters_per_experience(self) -> int:
        """Parameters that must be kept for each learned experience (a checkpoint's worth of new state)."""
        return 0

    def before_experience(self, target: Target, rows: Sequence[dict] = ()) -> None:
        """Called before training on `target`; `rows` are its training rows (dicts with at least `text`)."""

    def after_experience(self, target: Target) -> None:
        pass

    @contextmanager
    def route(self, target: Target) -> Iterator[Route]:
        """Activate whatever serves `target` (e.g. its prompt set) for the duration of the block."""
        yield Route()

    def routed_state(self, target: Target) -> list[torch.Tensor] | None:
        """Tensors that, together with the pretrained backbone, fully determine decoding of `target`;
        None means 'exactly the pretrained backbone'."""
        return None if self.experiences_trained == 0 else [p for p in self.model.parameters()]

    # -- shared helpers ------------------------------------------------------------------------------------
    def state_key(self, target: Target) -> str:
        """A content hash of what determines decoding of `target` (identical keys decode identically)."""
        tensors = self.routed_state(target)
        if tensors is None:
            return "pretrained"
        # Hashing FFT's 72M weights takes ~0.3 s and every set of an evaluation pass asks for it: reuse the
        # hash until a tensor changes (in-place updates, e.g. optimiser steps, bump a tensor's _version).
        stamp = tuple((id(t), t._version) for t in tensors)
        if stamp not in self._hash_cache:
            h = hashlib.blake2b(digest_size=16)
            for t in tensors:
                h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            self._hash_cache = {stamp: h.hexdigest()}  # only the latest state is ever asked for again
        return self._hash_cache[stamp]

    def n_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def extra_modules(self) -> list[nn.Module]:
        """Modules a method owns outside the backbone (moved to the device with the model)."""
        return []


def freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
