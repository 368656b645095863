"""dpt: Deep prompt tuning (SPT4ASR, Wav2Seq prompting, TS-Whisper): prompts at the input of every encoder and
decoder layer; `encoder_layers: last:3` gives Wav2Seq prompting's placement."""
from __future__ import annotations

from dataclasses import dataclass

from ..base import register_method
from .engine import SoftPromptConfig, SoftPromptMethod, default


@dataclass
class DeepPromptConfig(SoftPromptConfig):
    encoder_layers: str = default(SoftPromptConfig, "encoder_layers", "all")
    decoder_layers: str = default(SoftPromptConfig, "decoder_layers", "all")


@register_method("dpt")
class DeepPrompt(SoftPromptMethod):
    description = ("deep prompts at the input of every encoder and decoder layer "
                   "(DPT; SPT4ASR, Wav2Seq prompting, TS-Whisper), frozen backbone")
    config_class = DeepPromptConfig
