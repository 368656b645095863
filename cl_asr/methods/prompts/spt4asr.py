"""spt4asr: SPT4ASR (arXiv 2506.21576): deep prompts + residual reparameterisation + language prompts combined."""
from __future__ import annotations

from dataclasses import dataclass

from ..base import register_method
from .engine import SoftPromptConfig, SoftPromptMethod, default


@dataclass
class SPT4ASRConfig(SoftPromptConfig):
    encoder_layers: str = default(SoftPromptConfig, "encoder_layers", "all")
    decoder_layers: str = default(SoftPromptConfig, "decoder_layers", "all")
    reparameterization: str = default(SoftPromptConfig, "reparameterization", "per_site")
    language_conditioning: bool = default(SoftPromptConfig, "language_conditioning", True)


@register_method("spt4asr")
class SPT4ASR(SoftPromptMethod):
    description = "deep prompts + residual reparameterisation + language prompts combined (SPT4ASR arXiv 2506.21576)"
    config_class = SPT4ASRConfig
