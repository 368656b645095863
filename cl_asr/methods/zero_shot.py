"""zero_shot: the pretrained backbone, never trained (the reference every method is measured against)."""
from __future__ import annotations

from .base import Capabilities, Method, freeze, register_method


@register_method("zero_shot")
class ZeroShot(Method):
    description = "pretrained Whisper as is, no training (reference for forward transfer and base error)"
    capabilities = Capabilities(trains=False)

    def setup(self) -> None:
        freeze(self.model)
