"""spt_entire: Entire SPT (LAPT, arXiv 2506.21577): soft prompts in encoder and decoder."""
from __future__ import annotations

from dataclasses import dataclass

from ..base import register_method
from .engine import SoftPromptConfig, SoftPromptMethod, default


@dataclass
class EntirePromptConfig(SoftPromptConfig):
    encoder_layers: str = default(SoftPromptConfig, "encoder_layers", "first")
    decoder_layers: str = default(SoftPromptConfig, "decoder_layers", "first")


@register_method("spt_entire")
class EntireSoftPrompt(SoftPromptMethod):
    description = "soft prompts in encoder and decoder (Entire SPT, LAPT arXiv 2506.21577), frozen backbone"
    config_class = EntirePromptConfig
