"""lapt: Language-Aware Prompt Tuning (LAPT, arXiv 2506.21577, Section 2.2).

Entire-SPT sites (encoder layer 0 and decoder input) carry a shared prompt S plus, per language, a lightweight
low-rank matrix: P(k) = S + U_k V_k with U_k [L, r] and V_k [r, d]. Before a new language is trained, Whisper's
language-ID probabilities on its training audio pick the most similar candidate among the base languages and the
languages learned so far (cosine between LID distributions; a base language's is its one-hot vector):
- an already-learned language j: U_k, V_k start as copies of U_j, V_j (its prompt is the starting point);
- a base language: U_k starts at zero, so the prompt starts as S (the base language needs no prompt).
S is learned with the first language and then kept fixed (`shared_updates: first`), so learning a language
never changes another's prompt; `every` keeps training it (more transfer, at the risk of forgetting).
`mode: shared` keeps a single language matrix for every language (then only S + that matrix exist).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
from torch import nn

from ...core import Route, Target
from ..base import register_method
from .engine import PromptSet, SoftPromptConfig, SoftPromptMethod, default

@dataclass
class LaptConfig(SoftPromptConfig):
    encoder_layers: str = default(SoftPromptConfig, "encoder_layers", "first")
    decoder_layers: str = default(SoftPromptConfig, "decoder_layers", "first")
    rank: int = field(default=8, metadata={"help": "rank r of each language-specific prompt matrix U V",
                                           "search": {"choices": [4, 8, 16, 32]}})
    shared_updates: Literal["first", "every"] = field(
        default="first",
        metadata={"help": "train the shared prompt S with the first language only (then fixed), or with every "
                  "language"})

    def __post_init__(self):
        super().__post_init__()
        if self.rank < 1:
            raise ValueError(f"rank must be at least 1, got {self.rank}")
        if self.reparameterization != "none" or self.language_conditioning:
            raise ValueError("lapt does not combine with reparameterization or language_conditioning")


class LowRank(nn.Module):
    def __init__(self, shapes: dict[str, tuple[int, int]], rank: int, g: torch.Generator):
        super().__init__()
        self.u = nn.ParameterDict({k.replace(".", "_"): nn.Parameter(torch.zeros(L, rank)) for k, (L, d) in shapes.items()})
        self.v = nn.ParameterDict({k.replace(".", "_"): nn.Parameter(torch.randn(rank, d, generator=g) / d ** 0.5)
                                   for k, (L, d) in shapes.items()})

    def delta(self, site: str) -> torch.Tensor:
        key = site.replace(".", "_")
        return self.u[key] @ self.v[key]


@register_method("lapt")
class LanguageAwarePrompt(SoftPromptMethod):
    description = "shared Entire prompt + low-rank language matrices, each new language initialised from the " \
                  "most similar known one by Whisper's language ID (LAPT arXiv 2506.21577)"
    config_class = LaptConfig

    def setup(self) -> None:
        super().setup()
        self.shared: PromptSet | None = None
        self.languages = nn.ModuleDict()  # experience key -> LowRank
        self.similar: dict[str, str] = {}  # experience name -> the language its matrices started from
        self.lid_distributions: dict[int, torch.Tensor] = {}
        self.experience_names: dict[int, str] = {}

    def extra_modules(self):
        return [self.languages]

    def text_only_problem(self) -> str | None:
        return "LAPT chooses each new language's starting prompts by Whisper's language ID of its audio"

    def before_experience(self, target: Target, rows: Sequence[dict] = ()) -> None:
        dev = next(self.model.parameters()).device
        if self.shared is None:
            self.shared = self._new_prompt_set(target, [r["text"] for r in rows]).to(dev)
        key = self.set_key(target.index)
        if key not in self.languages:
            g = torch.Generator().manual_seed(self.seed * 1000 + target.index)
            shapes = {s: (self.site_rows(s), self.site_width(s)) for s in self.sites}
            low = LowRank(shapes, self.config.rank, g).to(dev)
            source = self._most_similar(target, rows)
            self.similar[target.name] = source[0]
            if source[1] is not None:
                low.load_state_dict(self.languages[source[1]].state_dict())
            self.languages[key] = low
        self._training_key = key
        if self.config.eval_routing == "lid" and target.index in self.lid_distributions:
            self.lid_profiles[target.index] = self.lid_distributions[target.index]  # same LID pass: reuse it
        else:
            self.record_routing_profile(target.index, rows)

    def _most_similar(self, target: Target, rows: Sequence[dict]) -> tuple[str, str | None]:
        """(language name, experience key or None for a base language) closest by language ID."""
        from ...backbones.lid import LANGUAGE_CODES

        learned = {i: d for i, d in self.lid_distributions.items() if i < self.experiences_trained}
        if not rows or self.features_of is None or not (self.base_languages or learned):
            return ("none (no audio or no candidates)", None)
        dist = self.language_distribution(rows).mean(dim=0)
        self.lid_distributions[target.index] = dist
        cands: list[tuple[str, str | None, torch.Tensor]] = []
        for code in self.base_languages:
            onehot = torch.zeros(len(LANGUAGE_CODES))
            onehot[LANGUAGE_CODES.index(code)] = 1.0
            cands.append((code, None, onehot))
        for i, d in sorted(learned.items()):
            cands.append((self.experience_names.get(i, str(i)), self.set_key(i), d))
        scores = [torch.nn.functional.cosine_similarity(dist, c[2], dim=0).item() for c in cands]
        best = max(range(len(cands)), key=lambda i: scores[i])
        return cands[best][0], cands[best][1]

    def after_experience(self, target: Target) -> None:
        self.experience_names[target.index] = target.name
        self._training_key = None

    def trainable_parameters(self):
        if self._training_key is None:
            return []
        params = list(self.languages[self._training_key].parameters())
        if self.experiences_trained == 0 or self.config.shared_updates == "every":
            params += list(self.shared.parameters())
        return params

    def stored_parameters_per_experience(self) -> int:
        low = sum(self.site_rows(s) * self.config.rank + self.config.rank * self.site_width(s) for s in self.sites)
        shared = sum(self.site_rows(s) * self.site_width(s) for s in self.sites)
        # S is stored once with the first language (`first`) or again after every language (`every`)
        return low + (shared if self.config.shared_updates == "every" else 0)

    def info(self) -> dict:
        shared = sum(self.site_rows(s) * self.site_width(s) for s in self.sites)
        return {"initialised_from": dict(self.similar), "shared_prompt_params": shared}

    def _set_exists(self, key: str) -> bool:
        return key in self.languages

    @contextmanager
    def activate(self, key: str | None, conditioning: dict | None = None):
        if key is None:
            self.injector.active = None
        else:
            base = self.shared.materialise()
            self.injector.active = {s: base[s] + self.languages[key].delta(s) for s in self.sites}
        try:
            yield Route(decoder_prefix=self.injector.decoder_prefix(self.config.prompt_length))
        finally:
            self.injector.active = None
