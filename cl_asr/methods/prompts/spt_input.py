"""spt_input: vanilla SPT (SPT4ASR, arXiv 2506.21576): learned log-mel frames before the audio at the encoder input."""
from __future__ import annotations

from dataclasses import dataclass

from ..base import register_method
from .engine import SoftPromptConfig, SoftPromptMethod, default


@dataclass
class InputPromptConfig(SoftPromptConfig):
    input_frames: bool = default(SoftPromptConfig, "input_frames", True)


@register_method("spt_input")
class InputSoftPrompt(SoftPromptMethod):
    description = ("vanilla SPT: learned log-mel frames before the audio at the encoder input "
                   "(SPT4ASR arXiv 2506.21576), frozen backbone")
    config_class = InputPromptConfig
