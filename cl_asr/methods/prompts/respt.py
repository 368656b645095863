"""respt: Residual prompt tuning (ResPT; SPT4ASR, TS-Whisper): Entire SPT whose prompts come from per-site residual
MLPs, folded into plain prompts after training."""
from __future__ import annotations

from dataclasses import dataclass

from ..base import register_method
from .engine import SoftPromptConfig, SoftPromptMethod, default


@dataclass
class ResidualPromptConfig(SoftPromptConfig):
    encoder_layers: str = default(SoftPromptConfig, "encoder_layers", "first")
    decoder_layers: str = default(SoftPromptConfig, "decoder_layers", "first")
    reparameterization: str = default(SoftPromptConfig, "reparameterization", "per_site")


@register_method("respt")
class ResidualPrompt(SoftPromptMethod):
    description = "Entire SPT with prompts reparameterised by per-site residual MLPs (ResPT; SPT4ASR, TS-Whisper)"
    config_class = ResidualPromptConfig
