"""olora: O-LoRA, orthogonal subspace learning (Wang et al. 2023, "Orthogonal Subspace Learning for Language Model
Continual Learning", Findings of EMNLP 2023, arXiv 2310.14152).

Each experience trains a new LoRA adapter (peft) while every earlier experience's adapter stays frozen and
active: the model is always the backbone plus the sum of all adapters learned so far, at training and at
evaluation alike, so no task identity is needed at test time (every set is decoded by the same model). The new
adapter is kept out of the earlier ones' subspaces by a penalty on its down-projections A (peft's lora_A,
[r, d_in]), as the released O-LoRA code computes it, summed over the adapted projections:

    L = L_asr + orthogonal_weight * sum_old sum |A_old A_new^T| + l2_weight * sum_{p in new adapter} ||p||_2

(A_new^T A_old in the paper's column convention; the absolute entries summed, as the code does; the L2 term is
the norm, not its square, of each of the new adapter's matrices).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from avalanche.core import SupervisedPlugin

from ..core import Target
from .base import register_method
from .lora_family import LoraFamily, LoraFamilyConfig


@dataclass
class OLoraConfig(LoraFamilyConfig):
    orthogonal_weight: float = field(
        default=0.5, metadata={"help": "lambda_1: weight of the orthogonality penalty sum |A_old A_new^T| between "
                               "the new adapter's A matrices and every earlier adapter's",
                               "search": {"log_factor": 10}})
    l2_weight: float = field(
        default=0.0, metadata={"help": "lambda_2: weight of the L2 norm of the new adapter's matrices"})

    def __post_init__(self):
        super().__post_init__()
        if self.orthogonal_weight < 0 or self.l2_weight < 0:
            raise ValueError(f"orthogonal_weight and l2_weight must be >= 0, got {self.orthogonal_weight}, "
                             f"{self.l2_weight}")


class OLoraPenalty(SupervisedPlugin, supports_distributed=True):
    """Adds O-LoRA's orthogonality and L2 terms to the training loss (every process adds the same terms)."""

    def __init__(self, method: "OLoRA"):
        super().__init__()
        self.method = method

    def before_backward(self, strategy, **kwargs):
        extra = self.method.penalty()
        if extra is not None:
            strategy.loss = strategy.loss + extra


@register_method("olora")
class OLoRA(LoraFamily):
    description = ("O-LoRA: a new LoRA per experience kept orthogonal to the earlier ones' (frozen, summed) "
                   "subspaces; all adapters active at test, task-agnostic (Wang et al. 2023)")
    config_class = OLoraConfig

    def setup(self) -> None:
        super().setup()
        self.olora_penalty = OLoraPenalty(self)

    def plugins(self):
        return [self.olora_penalty]

    def before_experience(self, target: Target, rows: Sequence[dict] = ()) -> None:
        name = self.add_adapter(target.index)
        self.use(self.adapters, trainable=name)  # earlier adapters active and frozen, the new one trained

    def orthogonality_penalty(self) -> torch.Tensor | None:
        """sum over adapted projections and earlier adapters of sum |A_old A_new^T| (None: nothing to compare)."""
        new = self.training_adapter
        old = [a for a in self.adapters if a != new]
        if new is None or not old:
            return None
        total = None
        for layer in self.lora_layers():
            if new not in layer.lora_A:
                continue
            a_new = layer.lora_A[new].weight
            for name in old:
                if name in layer.lora_A:
                    term = (layer.lora_A[name].weight @ a_new.T).abs().sum()
                    total = term if total is None else total + term
        return total

    def l2_penalty(self) -> torch.Tensor | None:
        if self.training_adapter is None:
            return None
        params = self.adapter_params(self.training_adapter)
        return sum(torch.linalg.vector_norm(p) for p in params) if params else None

    def penalty(self) -> torch.Tensor | None:
        """The terms added to the loss of a training step (None: none)."""
        c, terms = self.config, []
        if c.orthogonal_weight > 0 and (orth := self.orthogonality_penalty()) is not None:
            terms.append(c.orthogonal_weight * orth)
        if c.l2_weight > 0 and (l2 := self.l2_penalty()) is not None:
            terms.append(c.l2_weight * l2)
        return sum(terms) if terms else None

    def info(self) -> dict:
        return {"adapters_active_at_evaluation": len(self.adapters)}
