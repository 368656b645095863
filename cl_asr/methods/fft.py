"""fft: full fine-tuning of every backbone weight (the classic forgetting-prone baseline)."""
from __future__ import annotations

from .base import Method, MethodConfig, register_method


@register_method("fft")
class FullFineTuning(Method):
    description = "full fine-tuning: every weight trained, one model carried through all experiences"
    config_class = MethodConfig

    def setup(self) -> None:
        for name, p in self.model.named_parameters():
            # Whisper's sinusoidal encoder positions are fixed by design (transformers freezes them too).
            p.requires_grad_(not name.endswith("encoder.embed_positions.weight"))

    def trainable_parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def stored_parameters_per_experience(self) -> int:
        # the whole model must be kept after every experience to reproduce it
        return sum(p.numel() for p in self.model.parameters())
