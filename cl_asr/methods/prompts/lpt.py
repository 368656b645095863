"""lpt: Language prompt tuning (LPT, SPT4ASR arXiv 2506.21576): Entire SPT conditioned on the language identity
through a small language encoder."""
from __future__ import annotations

from dataclasses import dataclass

from ..base import register_method
from .engine import SoftPromptConfig, SoftPromptMethod, default


@dataclass
class LanguagePromptConfig(SoftPromptConfig):
    encoder_layers: str = default(SoftPromptConfig, "encoder_layers", "first")
    decoder_layers: str = default(SoftPromptConfig, "decoder_layers", "first")
    language_conditioning: bool = default(SoftPromptConfig, "language_conditioning", True)


@register_method("lpt")
class LanguagePrompt(SoftPromptMethod):
    description = ("Entire SPT conditioned on the language identity through a language encoder "
                   "(LPT, SPT4ASR arXiv 2506.21576)")
    config_class = LanguagePromptConfig
