"""spt_encoder: Encoder SPT (LAPT, arXiv 2506.21577): soft prompts at the encoder's first layer only."""
from __future__ import annotations

from dataclasses import dataclass

from ..base import register_method
from .engine import SoftPromptConfig, SoftPromptMethod, default


@dataclass
class EncoderPromptConfig(SoftPromptConfig):
    encoder_layers: str = default(SoftPromptConfig, "encoder_layers", "first")


@register_method("spt_encoder")
class EncoderSoftPrompt(SoftPromptMethod):
    description = "soft prompts at the encoder's first layer only (Encoder SPT, LAPT arXiv 2506.21577), frozen backbone"
    config_class = EncoderPromptConfig
