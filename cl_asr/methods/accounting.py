"""Trainable parameters per strategy on a backbone, as `run_suite.py list strategies` shows them: each method is
set up on a fresh copy of the backbone and asked what it would train for a first experience."""
from __future__ import annotations

import copy

from ..core import Target
from .base import METHODS


def trainable_count(name: str, model, tokenizer) -> int:
    from . import method_config

    method = METHODS.get(name)(method_config(name), copy.deepcopy(model), tokenizer)
    method.setup()
    if not method.capabilities.trains:
        return 0
    first = Target("train", 0, "xx", "xx", "en")
    method.before_experience(first, [])
    return method.n_trainable()


def trainable_counts(backbone: str) -> dict[str, int]:
    from ..backbones import load_backbone

    b = load_backbone(backbone)
    return {name: trainable_count(name, b.model, b.tokenizer) for name in METHODS.names()}
