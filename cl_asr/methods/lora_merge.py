"""lora_merge: per-experience LoRA adapters trained separately, merged into one adapter that decodes every set.

Each experience trains its own peft LoRA adapter from the plain backbone (only that adapter active, as `lora`
trains it). After experience k the adapters 0..k are merged into ONE adapter, `merged`, with peft's
`add_weighted_adapter`, and that adapter alone is active at evaluation, for every test and preservation set
(no routing, no task identity). The per-experience adapters are kept (a later merge needs them); the merged one
is recomputed from them after every experience.

`merge` (each exact in what it computes on the weight deltas dW_i = s B_i A_i, s = alpha / r):

- `task_arithmetic` (Ilharco et al. 2023, "Editing Models with Task Arithmetic", ICLR): dW = lambda * sum_i dW_i,
  lambda = `merge_weight`. peft's `cat` combination: the adapters' A (scaled) and B stacked into one adapter of
  rank sum r_i, whose product is exactly that sum. (peft's `linear` combination averages A and B separately,
  which adds cross terms B_i A_j: peft itself calls it a rough approximation; not used.)
- `average`: dW = (1/n) sum_i dW_i, the uniform average of the task vectors (task arithmetic with lambda = 1/n;
  the weight average of Wortsman et al. 2022's model soups restricted to the adapters), also via `cat`.
- `ties` (Yadav et al. 2023, "TIES-Merging: Resolving Interference When Merging Models", NeurIPS): on each
  projection's full deltas dW_i: keep the `density` share of largest magnitudes, elect each entry's sign by the
  summed mass, average the entries that agree with it, times `merge_weight`; peft's `ties_svd` combination, then
  an SVD truncated to `merge_rank` makes it an adapter again (0: rank sum r_i, as the concatenation). peft trims
  per projection (the paper trims over the whole task vector) and, with one adapter, merges it as-is (linear).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch

from ..core import Target
from .base import register_method
from .lora_family import LoraFamily, LoraFamilyConfig

MERGED = "merged"
PEFT_COMBINATION = {"task_arithmetic": "cat", "average": "cat", "ties": "ties_svd"}


@dataclass
class LoraMergeConfig(LoraFamilyConfig):
    merge: Literal["task_arithmetic", "ties", "average"] = field(
        default="task_arithmetic",
        metadata={"help": "how the per-experience adapters become the one evaluated: task_arithmetic "
                  "(merge_weight x the sum of the deltas), average (their mean), ties (TIES-Merging: trim to "
                  "density, elect signs, disjoint mean, x merge_weight)"})
    merge_weight: float = field(
        default=1.0, metadata={"help": "lambda: scale of the merged task vector (task_arithmetic, ties)"})
    density: float = field(
        default=0.2, metadata={"help": "ties: share of each delta's entries kept (largest magnitudes)"})
    merge_rank: int = field(
        default=0, metadata={"help": "ties: rank of the merged adapter (SVD of the merged delta); 0 = the sum of "
                             "the merged adapters' ranks"})

    def __post_init__(self):
        super().__post_init__()
        if self.merge not in PEFT_COMBINATION:
            raise ValueError(f"merge must be one of {sorted(PEFT_COMBINATION)}, got {self.merge!r}")
        if not 0 < self.density <= 1:
            raise ValueError(f"density must be in (0, 1], got {self.density}")
        if self.merge_rank < 0:
            raise ValueError(f"merge_rank must be >= 0, got {self.merge_rank}")


@register_method("lora_merge")
class LoraMerge(LoraFamily):
    description = ("per-experience LoRAs (peft) trained separately, merged into one adapter for every set "
                   "(task arithmetic, TIES or average): task-agnostic")
    config_class = LoraMergeConfig

    def before_experience(self, target: Target, rows: Sequence[dict] = ()) -> None:
        name = self.add_adapter(target.index)
        self.use([name], trainable=name)  # trained from the plain backbone, as lora

    def merge_weights(self, n: int) -> list[float]:
        if self.config.merge == "average":
            return [1.0 / n] * n
        return [self.config.merge_weight] * n

    def merge_adapters(self) -> None:
        """(Re)build `merged` from every per-experience adapter."""
        if MERGED in self.lora.peft_config:
            with warnings.catch_warnings():  # peft says which adapter it activates instead: `use` decides after
                warnings.filterwarnings("ignore", message="Adapter merged was active")
                self.lora.delete_adapter(MERGED)
        learned = list(self.adapters)
        rank = self.config.merge_rank or sum(self.lora.peft_config[a].r for a in learned)
        extra = {"density": self.config.density, "svd_rank": rank, "svd_full_matrices": False} \
            if self.config.merge == "ties" else {}
        with torch.random.fork_rng():  # peft initialises the new adapter before overwriting it: keep the global RNG
            self.lora.add_weighted_adapter(learned, self.merge_weights(len(learned)), MERGED,
                                           combination_type=PEFT_COMBINATION[self.config.merge], **extra)

    def after_experience(self, target: Target) -> None:
        self.merge_adapters()
        super().after_experience(target)

    def eval_adapters(self) -> list[str]:
        return [MERGED] if self.lora is not None and MERGED in self.lora.peft_config else []

    def info(self) -> dict:
        merged = sum(p.numel() for p in self.adapter_params(MERGED)) if self.eval_adapters() else 0
        return {"merge": self.config.merge, "merged_adapter_params": merged}
