"""spt_decoder: Decoder SPT (LAPT, arXiv 2506.21577): soft prompts in the decoder only."""
from __future__ import annotations

from dataclasses import dataclass

from ..base import register_method
from .engine import SoftPromptConfig, SoftPromptMethod, default


@dataclass
class DecoderPromptConfig(SoftPromptConfig):
    decoder_layers: str = default(SoftPromptConfig, "decoder_layers", "first")


@register_method("spt_decoder")
class DecoderSoftPrompt(SoftPromptMethod):
    description = "soft prompts in the decoder only (Decoder SPT, LAPT arXiv 2506.21577), frozen backbone"
    config_class = DecoderPromptConfig
