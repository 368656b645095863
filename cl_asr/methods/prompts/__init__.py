"""The soft-prompt family: one engine (engine.py: hooks at prompt sites, prompt sets, routing) and one file per
strategy, named after it. The engine's names are re-exported here."""
from .engine import (PLACEHOLDER_TOKEN, PREV_TOKEN, SILENCE_LOG_MEL, PromptInjector, PromptSet, ResidualMLP,  # noqa: F401
                     SoftPromptConfig, SoftPromptMethod, parse_layers, silence_log_mel)
