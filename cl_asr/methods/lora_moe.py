"""lora_moe: a mixture of LoRA experts with a learned per-utterance router (task-agnostic).

Experts: one peft LoRA adapter per experience (the projections, rank and seeded initialisation of `lora`), all
active, each one's output scaled per utterance by its gate: W x + sum_i g_i(u) s B_i A_i x (a forward hook on
each expert's lora_B). A mixture of LoRA experts as in MoLA / LoRAMoE (Dou et al. 2023), with the router moved
from the tokens to the utterance, for the reason below.

Router: per utterance, on a frozen query. The query q(u) is the frozen backbone's language-ID distribution over
Whisper's languages (the signal `eval_routing: lid` routes by; every expert off while it is computed: a forward
pre-hook on the encoder runs it, one extra encoder pass and one decoder step per batch). Each expert has a key
in that space; the gates are softmax over the candidates of cos(q, k) / temperature. Why: a task here is a
language, a property of the whole utterance, and a query that no training changes cannot drift; a router per
layer on the hidden states (which the experts themselves change), trained on the newest experience only,
learns to send everything to the newest expert, which is forgetting moved into the router.

Forgetting of the router is handled as L2P handles its prompt keys (Wang et al. 2022, "Learning to Prompt for
Continual Learning", CVPR): expert i's key starts at its experience's mean query (over `key_rows` training
utterances), is trained during experience i only (through the gates by the ASR loss, plus L2P's pull term
pull_weight * mean(1 - cos(q, k_i))), then frozen. Old keys and the query never change, so an old utterance's
gates move only where a newer key lies closer to it than its own. With `base_keys`, each of the scenario's base
languages is one more candidate whose key is its fixed one-hot vector (as in `eval_routing: lid`), standing for
"no expert": its gate mass goes to the plain backbone. No replay, no task identity at test.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from torch import nn

from ..backbones.lid import LANGUAGE_CODES, language_distribution
from ..core import Target
from .base import register_method
from .lora_family import LoraFamily, LoraFamilyConfig, adapter_name


@dataclass
class LoraMoeConfig(LoraFamilyConfig):
    temperature: float = field(
        default=0.1, metadata={"help": "softmax temperature of the gates over cosine similarities (query, key)",
                               "search": {"log_factor": 10}})
    pull_weight: float = field(
        default=0.1, metadata={"help": "weight of L2P's pull term mean(1 - cos(query, key)) on the new expert's key"})
    base_keys: bool = field(
        default=True, metadata={"help": "each base language is a candidate with a fixed one-hot key that stands for "
                                "'no expert' (the plain backbone), as in eval_routing: lid"})

    def __post_init__(self):
        super().__post_init__()
        if not self.temperature > 0 or self.pull_weight < 0:
            raise ValueError(f"temperature must be > 0 and pull_weight >= 0, got {self.temperature}, "
                             f"{self.pull_weight}")


class KeyRouter(nn.Module):
    """One key per expert (and fixed one-hot keys for the base languages); gates from cosine similarity.
    `gates` and `queries` are the current batch's (scratch, not state: plain attributes, so they are neither in
    the strategy's decode key nor in its checkpoint)."""

    def __init__(self, dim: int):
        super().__init__()
        self.keys = nn.ParameterList()
        self.register_buffer("base_keys", torch.zeros(0, dim))
        self.gates: torch.Tensor | None = None  # [B, experts]
        self.queries: torch.Tensor | None = None  # [B, dim]
        self.busy = False  # True while the frozen query runs the model (its own encoder pass is not gated)

    def gates_for(self, query: torch.Tensor, temperature: float) -> torch.Tensor:
        keys = torch.cat([self.base_keys, torch.stack(list(self.keys))])
        with torch.autocast(query.device.type, enabled=False):  # fp32 similarities, also under bf16 autocast
            sims = F.normalize(query.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).T
            return torch.softmax(sims / temperature, dim=-1)[:, self.base_keys.shape[0]:]

    def scale(self, index: int, module, args, output):
        """Forward hook on expert `index`'s lora_B: its output times the utterance's gate."""
        gates = self.gates
        if gates is None or gates.shape[0] != output.shape[0]:
            raise RuntimeError("lora_moe: no gates for this batch (the encoder must run on the audio first)")
        return output * gates[:, index].to(output.dtype).view(-1, *([1] * (output.dim() - 1)))

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(gates=None, queries=None, busy=False)
        return state


class KeyPull(SupervisedPlugin, supports_distributed=True):
    """L2P's surrogate loss: pull the new expert's key towards the batch's queries."""

    def __init__(self, method: "LoraMoE"):
        super().__init__()
        self.method = method

    def before_backward(self, strategy, **kwargs):
        extra = self.method.pull_penalty()
        if extra is not None:
            strategy.loss = strategy.loss + extra


@register_method("lora_moe")
class LoraMoE(LoraFamily):
    description = ("mixture of LoRA experts (one per experience, peft) gated per utterance by L2P-style keys on "
                   "Whisper's frozen language ID; earlier experts and keys frozen, task-agnostic")
    config_class = LoraMoeConfig
    key_rows: ClassVar[int] = 8  # training utterances a new key's initial value averages over

    def setup(self) -> None:
        super().setup()
        self.router = KeyRouter(len(LANGUAGE_CODES))
        self.key_pull = KeyPull(self)
        self.gating_installed = False

    def extra_modules(self):
        return [self.router]

    def plugins(self):
        return [self.key_pull]

    def text_only_problem(self) -> str | None:
        return "lora_moe routes each utterance by its audio (Whisper's language ID); a text-only experience has none"

    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def frozen_query(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, languages] the plain backbone's language-ID distribution (on the model's device)."""
        self.router.busy = True
        try:
            with self.plain_backbone():
                probs = language_distribution(self.model, self.tokenizer, feats)
        finally:
            self.router.busy = False
        return probs.to(self.device()).clone()  # a normal tensor (not an inference one): gates backpropagate

    def gate_batch(self, module, args, kwargs):
        """Forward pre-hook on the encoder: the batch's queries and gates, before any expert runs."""
        if self.router.busy:
            return None
        feats = args[0] if args else kwargs.get("input_features")
        if feats is None:
            raise RuntimeError("lora_moe: the encoder got no input_features to route by")
        self.router.queries = self.frozen_query(feats)
        self.router.gates = self.router.gates_for(self.router.queries, self.config.temperature)
        return None

    def initial_key(self, rows: Sequence[dict]) -> torch.Tensor:
        if rows and self.features_of is not None:
            return self.frozen_query(self.features_of(list(rows)[: self.key_rows])).mean(dim=0)
        return torch.full((len(LANGUAGE_CODES),), 1.0 / len(LANGUAGE_CODES), device=self.device())

    def add_expert(self, index: int, rows: Sequence[dict]) -> str:
        key = self.initial_key(rows)  # before the new expert exists: the plain model's view
        name = self.add_adapter(index)
        self.router.keys.append(nn.Parameter(key.detach().clone(), requires_grad=False))
        expert = len(self.adapters) - 1
        for layer in self.lora_layers():
            if name in layer.lora_B:
                layer.lora_B[name].register_forward_hook(partial(self.router.scale, expert))
        if not self.gating_installed:
            if self.config.base_keys and self.base_languages:
                onehot = torch.zeros(len(self.base_languages), len(LANGUAGE_CODES), device=self.device())
                for i, code in enumerate(self.base_languages):
                    onehot[i, LANGUAGE_CODES.index(code)] = 1.0
                self.router.base_keys = onehot
            self.model.get_encoder().register_forward_pre_hook(self.gate_batch, with_kwargs=True)
            self.gating_installed = True
        return name

    def before_experience(self, target: Target, rows: Sequence[dict] = ()) -> None:
        name = adapter_name(target.index)
        if name not in self.adapters:
            self.add_expert(target.index, rows)
        self.use(self.adapters, trainable=name)  # every expert active (gated), only the new one and its key train

    def current_key(self) -> nn.Parameter | None:
        if self.training_adapter is None:
            return None
        return self.router.keys[self.adapters.index(self.training_adapter)]

    def extra_trainable(self) -> list[nn.Parameter]:
        key = self.current_key()
        return [key] if key is not None else []

    def use(self, active, trainable=None) -> None:
        for key in self.router.keys:  # earlier keys frozen; `use` turns the current one back on
            key.requires_grad_(False)
            key.grad = None
        super().use(active, trainable)

    def after_experience(self, target: Target) -> None:
        super().after_experience(target)
        self.router.gates = self.router.queries = None

    def pull_penalty(self) -> torch.Tensor | None:
        key, queries = self.current_key(), self.router.queries
        if key is None or queries is None or self.config.pull_weight == 0:
            return None
        return self.config.pull_weight * (1 - F.cosine_similarity(queries, key[None], dim=-1)).mean()

    def gates(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, experts] the gates the router gives these utterances (for inspection and tests)."""
        return self.router.gates_for(self.frozen_query(feats), self.config.temperature)

    def stored_parameters_per_experience(self) -> int:
        return self.adapter_size() + len(LANGUAGE_CODES)  # the expert and its key

    def info(self) -> dict:
        return {"experts": len(self.adapters), "base_keys": int(self.router.base_keys.shape[0]),
                "router": "per-utterance keys on the frozen model's language-ID distribution (L2P-style)"}
