"""fft_spt: full fine-tuning plus Entire soft prompts per experience (FFT+SPT, SPT4ASR arXiv 2506.21576's whole-model
SPT): the backbone at its own learning rate, the prompts at `lr`."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..base import register_method
from .engine import SoftPromptConfig, SoftPromptMethod, default


@dataclass
class FFTPromptConfig(SoftPromptConfig):
    encoder_layers: str = default(SoftPromptConfig, "encoder_layers", "first")
    decoder_layers: str = default(SoftPromptConfig, "decoder_layers", "first")
    backbone_lr: float = field(default=3e-5, metadata={"help": "learning rate of the backbone weights (`lr` is the "
                                                               "prompts')", "search": {"log_factor": 30}})


@register_method("fft_spt")
class FullFineTuningWithPrompts(SoftPromptMethod):
    description = "full fine-tuning plus Entire soft prompts per experience (FFT+SPT, SPT4ASR arXiv 2506.21576)"
    config_class = FFTPromptConfig
    freezes_backbone = False

    def param_groups(self):
        if self._training_key is None:
            return []
        prompts = list(self.prompt_sets[self._training_key].parameters())
        backbone = [p for p in self.model.parameters() if p.requires_grad]
        return [{"params": prompts}, {"params": backbone, "lr": self.config.backbone_lr}]

    def setup(self) -> None:
        super().setup()
        for name, p in self.model.named_parameters():
            p.requires_grad_(not name.endswith("encoder.embed_positions.weight"))  # fixed sinusoids

    def trainable_parameters(self):
        backbone = [p for p in self.model.parameters() if p.requires_grad]
        return backbone + super().trainable_parameters() if self._training_key is not None else []

    def stored_parameters_per_experience(self) -> int:
        return sum(p.numel() for p in self.model.parameters()) + super().stored_parameters_per_experience()

