"""Target-speaker prompt tuning (TS-Whisper, arXiv 2312.08079): a frozen Whisper conditioned on who to transcribe.

Each row carries the target speaker's embedding (`enrolment`, a d-vector of an enrolment utterance). At every
prompt site a linear projection of that embedding joins the soft prompts as one more prompt vector
(concatenated in front of them), so encoder and decoder see [speaker ; P_1..P_L]. Deep prompts
(`encoder_layers: all`, `decoder_layers: all`) and per-layer residual reparameterisation
(`reparameterization: per_site`; TS-Whisper found a shared MLP worse) are the paper's variants, all options of
the same soft-prompt engine. The projection starts with zero weights and the prompt's own initial vector as
its bias, so the untrained speaker vector is simply one more plain prompt vector.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ...core import Route, Target
from ..base import Capabilities, register_method
from .engine import PromptSet, SoftPromptConfig, SoftPromptMethod, default


class SpeakerPromptSet(nn.Module):
    """A PromptSet plus, per site, a projection of the speaker embedding to one prompt vector."""

    def __init__(self, prompts: PromptSet, speaker_dim: int):
        super().__init__()
        self.prompts = prompts
        self.projections = nn.ModuleDict()
        for site, p in prompts.materialise().items():
            proj = nn.Linear(speaker_dim, p.shape[-1])
            nn.init.zeros_(proj.weight)
            with torch.no_grad():
                proj.bias.copy_(p.detach()[0])
            self.projections[site.replace(".", "_")] = proj

    def materialise(self, speaker: torch.Tensor) -> dict[str, torch.Tensor]:
        """site -> [B, L + 1, d] for a batch of speaker embeddings [B, D]."""
        out = {}
        for site, p in self.prompts.materialise().items():
            s = self.projections[site.replace(".", "_")](speaker.to(p.dtype)).unsqueeze(1)  # [B, 1, d]
            out[site] = torch.cat([s, p.unsqueeze(0).expand(speaker.shape[0], -1, -1)], dim=1)
        return out

    def folded(self) -> "SpeakerPromptSet":
        out = SpeakerPromptSet.__new__(SpeakerPromptSet)
        nn.Module.__init__(out)
        out.prompts = self.prompts.folded()
        out.projections = self.projections
        return out

    def stored_size(self) -> int:
        return self.prompts.stored_size() + sum(p.numel() for p in self.projections.parameters())


@dataclass
class TSPromptConfig(SoftPromptConfig):
    encoder_layers: str = default(SoftPromptConfig, "encoder_layers", "first")
    decoder_layers: str = default(SoftPromptConfig, "decoder_layers", "first")
    speaker_dim: int = field(default=256, metadata={"help": "size of the enrolment speaker embedding (resemblyzer "
                                                            "d-vectors: 256)"})

    def decoder_prefix_positions(self) -> int:
        return super().decoder_prefix_positions() + (self.decoder_layers != "none")  # + the speaker vector's


@register_method("ts_prompt")
class TargetSpeakerPrompt(SoftPromptMethod):
    description = ("target-speaker prompts: the projected enrolment speaker embedding joins soft prompts in "
                   "encoder and decoder (TS-Whisper arXiv 2312.08079), frozen backbone")
    config_class = TSPromptConfig
    capabilities = Capabilities(conditioning=("enrolment",))  # each row's target-speaker embedding

    def setup(self) -> None:
        if self.config.input_frames:
            raise ValueError("ts_prompt: input_frames is not supported (the speaker vector joins encoder-layer "
                             "and decoder prompts)")
        super().setup()

    def _new_prompt_set(self, target: Target, texts):
        return SpeakerPromptSet(super()._new_prompt_set(target, texts), self.config.speaker_dim).to(
            next(self.model.parameters()).device)

    @contextmanager
    def activate(self, key: str | None, conditioning: dict | None = None):
        if key is None:
            with super().activate(None) as route:
                yield route
            return
        speaker = (conditioning or {}).get("enrolment")
        if speaker is None:
            raise ValueError("ts_prompt needs each utterance's target-speaker embedding (an `enrolment` column); "
                             "this scenario has none: use a target-speaker scenario such as `speakers`")
        if speaker.shape[-1] != self.config.speaker_dim:
            raise ValueError(f"ts_prompt: enrolment embeddings have {speaker.shape[-1]} dimensions, "
                             f"speaker_dim is {self.config.speaker_dim}")
        self.injector.active = self.prompt_sets[key].materialise(speaker)
        try:
            yield Route(decoder_prefix=self.injector.decoder_prefix(self.config.prompt_length + 1))
        finally:
            self.injector.active = None

    def stored_parameters_per_experience(self) -> int:
        proj = sum((self.config.speaker_dim + 1) * self.site_width(s) for s in self.sites)
        return super().stored_parameters_per_experience() + proj

    def problem_with(self, scenario) -> str | None:
        if "enrolment" not in scenario.columns:
            return (f"ts_prompt conditions on each utterance's target-speaker embedding (an `enrolment` column), "
                    f"which {scenario.name} does not provide (use a target-speaker scenario such as speakers)")
        return super().problem_with(scenario)

    def text_only_problem(self) -> str | None:
        return "ts_prompt conditions on the target speaker's voice, and a text-only experience has no audio"
