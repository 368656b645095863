"""l2p: Learning to Prompt (Wang et al. 2022, arXiv 2112.08654): one pool of prompts, each with a learned key,
shared by all experiences; every utterance picks its own prompts by the frozen model's view of its audio, with no
task identity, at training and at test time alike.

- Pool: M prompts of L vectors each (`pool_size`, `prompt_length`), each with a key in the model's width.
- Query: the frozen encoder's output for the utterance, mean-pooled over the frames that hold speech
  (`core.mean_over_speech`: the window's padding, most of it for a short utterance, would otherwise dominate
  the mean; L2P's ViT query has no padding). The loop hands the batch's log-mel features to `route` for it
  (`capabilities.conditioning`). The prompts sit in the decoder
  (placeholder positions after <|startofprev|>, as decoder soft prompts do, `engine.PromptInjector`), so the
  encoder is never prompted and the query is the very encoder output the decoder attends to in the same
  forward pass: no extra encoder pass (L2P's ViT needs a second, unprompted one), and the encoder cache still
  serves it (the selection reads the encoder states in a pre-hook on the decoder, which by the cache rules turns
  off the cached cross-attention keys and values while the pool is active).
- Selection: the N prompts (`top_n`) whose keys are most cosine-similar to the query, in that order,
  concatenated to N x L decoder prompt vectors per utterance.
- Loss: the model's cross-entropy plus `matching_weight` x the mean over utterances of the sum over the chosen
  keys of (1 - cosine(query, key)) (the paper's surrogate loss; its code's `pull_constraint`). The keys learn
  only through it (the choice is not differentiable); the prompts only through the cross-entropy.

Pool settings are the official L2P release's (google-research/l2p, configs/cifar100_l2p.py at commit 8cfb210:
pool_size 10, length 5, top_k 5, pull_constraint_coeff 0.1, Adam lr 0.03, constant schedule). Left out:
batch-wise majority-vote selection (`batchwise_prompt`), which would make an utterance's prompts depend on the
other rows of its batch, and the optional frequency-diversified selection. CL-MASR's `train_l2p.py` is a
task-aware variant (one d x d matrix per language applied to the encoder output, chosen by the locale), not this.

Task-agnostic throughout: base-language sets are prompted like any other (the only frozen-backbone strategy here
whose preservation sets are not decoded by the plain backbone once it has learned something, so it can forget). Before the first
experience has been trained the pool is untrained and the plain backbone decodes.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from torch import nn

from ...core import Route, Target, mean_over_speech
from ..base import Capabilities, Method, MethodConfig, freeze, register_method
from .engine import PromptInjector, default


@dataclass
class L2PConfig(MethodConfig):
    lr: float = default(MethodConfig, "lr", 3e-2)
    pool_size: int = field(default=10, metadata={"help": "prompts in the pool (M)"})
    top_n: int = field(default=5, metadata={"help": "prompts chosen per utterance (N)"})
    prompt_length: int = field(default=5, metadata={"help": "vectors per prompt (L); N x L decoder positions"})
    matching_weight: float = field(
        default=0.1, metadata={"help": "weight of the key-query matching loss, sum over chosen keys of "
                               "1 - cosine(query, key) (the paper's lambda)"})
    prompt_init: Literal["vocab", "uniform"] = field(
        default="vocab",
        metadata={"help": "vocab: each prompt vector starts as the embedding of a random text token; uniform: "
                  "U[0, 0.01) as the official L2P code initialises prompts (keys always start U[0, 0.01))"})

    def decoder_prefix_positions(self) -> int:
        return 1 + self.top_n * self.prompt_length  # <|startofprev|> + N x L placeholders

    def __post_init__(self):
        super().__post_init__()
        if self.pool_size < 1 or self.prompt_length < 1 or not 1 <= self.top_n <= self.pool_size:
            raise ValueError(f"need pool_size >= 1, prompt_length >= 1 and 1 <= top_n <= pool_size, got "
                             f"{self.pool_size}, {self.prompt_length}, {self.top_n}")
        if self.matching_weight < 0:
            raise ValueError(f"matching_weight must be >= 0, got {self.matching_weight}")


class PromptPool(nn.Module):
    def __init__(self, prompts: torch.Tensor, keys: torch.Tensor):
        super().__init__()
        self.prompts = nn.Parameter(prompts)  # [M, L, d]
        self.keys = nn.Parameter(keys)  # [M, d]

    def similarity(self, query: torch.Tensor) -> torch.Tensor:
        """[B, M] cosine similarity of each query to each key (differentiable towards the keys)."""
        return F.normalize(query.float(), dim=-1) @ F.normalize(self.keys.float(), dim=-1).T

    def select(self, query: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices [B, n] of the n best-matching prompts, most similar first; similarities [B, M])."""
        sim = self.similarity(query)
        return sim.detach().topk(n, dim=-1).indices, sim


class MatchingLoss(SupervisedPlugin, supports_distributed=True):
    """Adds the key-query matching term of the training step's forward pass to its loss."""

    def __init__(self, method: "LearningToPrompt"):
        super().__init__()
        self.method = method

    def before_backward(self, strategy, **kwargs):
        term, self.method.matching_term = self.method.matching_term, None
        if term is not None and self.method.config.matching_weight > 0:
            strategy.loss = strategy.loss + self.method.config.matching_weight * term


@register_method("l2p")
class LearningToPrompt(Method):
    description = ("Learning to Prompt: a shared pool of keyed decoder prompts; each utterance picks the top-N "
                   "by its frozen encoder output, no task identity (Wang et al. 2022), frozen backbone")
    config_class = L2PConfig
    # one pool decodes every set, base-language sets included: they need not stay at zero-shot
    # the batch's log-mel features reach `route`: the query averages only the frames that hold speech
    capabilities = Capabilities(task_agnostic=True, conditioning=("input_features",))

    def setup(self) -> None:
        freeze(self.model)
        cfg, whisper = self.config, self.model.model
        d, m, length = whisper.config.d_model, cfg.pool_size, cfg.prompt_length
        g = torch.Generator().manual_seed(self.seed * 1000)
        if cfg.prompt_init == "vocab":
            n_text = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")  # ids below it are text tokens
            ids = torch.randint(0, n_text, (m, length), generator=g)
            prompts = whisper.decoder.embed_tokens.weight.detach().cpu()[ids].clone().float()
        else:
            prompts = torch.rand(m, length, d, generator=g) * 0.01
        keys = torch.rand(m, d, generator=g) * 0.01
        self.pool = PromptPool(prompts, keys).to(next(self.model.parameters()).device)
        self.injector = PromptInjector(self.model, self.tokenizer, ["decoder.0"])
        self.matching = MatchingLoss(self)
        # the matching term of the training step's forward pass, until the plugin adds it to the loss
        self.matching_term: torch.Tensor | None = None
        self._training = False
        self._handle = None
        self._features: torch.Tensor | None = None  # the routed batch's log-mel features (speech frames)

    def extra_modules(self):
        return [self.pool]

    def plugins(self):
        return [self.matching]

    def text_only_problem(self) -> str | None:
        return "l2p chooses prompts by the utterance's audio (its encoder output); a text-only experience has none"

    def before_experience(self, target: Target, rows: Sequence[dict] = ()) -> None:
        self._training = True

    def after_experience(self, target: Target) -> None:
        self._training = False
        self.matching_term = None

    def trainable_parameters(self):
        return list(self.pool.parameters()) if self._training else []

    def stored_parameters_per_experience(self) -> int:
        """The one pool, which every experience goes on training: what a checkpoint after each must hold."""
        cfg, d = self.config, self.model.model.config.d_model
        return cfg.pool_size * (cfg.prompt_length * d + d)

    # -- selection -----------------------------------------------------------------------------------------
    def choose(self, encoder_states: torch.Tensor, input_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt indices [B, N], most similar first; cosine similarities [B, M]) for a batch of encoder
        outputs [B, T, d] and their log-mel features: the query is the frozen encoder's output (never prompted)
        averaged over the frames that hold speech."""
        return self.pool.select(mean_over_speech(encoder_states.detach(), input_features), self.config.top_n)

    def _select(self, module, args, kwargs):
        """Pre-hook on the decoder: on a pass that carries the prompt placeholders (training, or the first step
        of `generate`), choose each row's prompts from its encoder output and hand them to the injector. Nothing
        is kept from one batch to the next but the matching term (training), so every process of a
        data-parallel run holds the same state."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        states = kwargs.get("encoder_hidden_states")
        if ids is None or states is None or not bool((ids == self.injector.placeholder_id).any()):
            return
        if self._features is None:
            raise RuntimeError("l2p chooses prompts from the batch's log-mel features: enter `route(target, "
                               "{'input_features': ...})` with the batch's features (the loop does)")
        idx, sim = self.choose(states, self._features)
        prompts = self.pool.prompts[idx]  # [B, N, L, d]
        self.injector.active = {"decoder.0": prompts.reshape(idx.shape[0], -1, prompts.shape[-1])}
        if torch.is_grad_enabled():
            self.matching_term = (1 - sim.gather(1, idx)).sum(dim=1).mean()

    @contextmanager
    def route(self, target: Target, conditioning: dict | None = None):
        """The same for every set: nothing about `target` is looked at but whether it is being trained on."""
        if target.stream != "train" and self.experiences_trained == 0:
            yield Route()  # nothing learned yet: the plain backbone
            return
        self.injector.active = {}  # installs the placeholder hook; `_select` fills in each batch's prompts
        self._features = (conditioning or {}).get("input_features")
        self._handle = self.model.model.decoder.register_forward_pre_hook(self._select, with_kwargs=True)
        try:
            yield Route(decoder_prefix=self.injector.decoder_prefix(self.config.top_n * self.config.prompt_length))
        finally:
            self._handle.remove()
            self._handle = None
            self._features = None
            self.injector.active = None
