"""Two-step text-only adaptation with a soft prompt as pseudo audio (text-only SPT, arXiv 2412.06967), for Whisper.

A text-only experience has transcripts but no speech. Fine-tuning the decoder on that text with no audio at
all (the 'empty prompt' baseline: every strategy that can learn from text does exactly that here) trains it
under a condition it never meets at test time. The text-only SPT paper's remedy, in two steps per experience:

1. learn a soft prompt P (L x d) that stands in for the encoder's output — pseudo audio for the domain —
   from the domain text, with the whole model frozen: the decoder cross-attends to P and must predict the text;
2. fine-tune the decoder (fully, or with LoRA on its attention) on the same text, conditioned on P.

At test time real audio goes through the encoder as usual and P is not used: what the domain taught lives in
the decoder. P starts as the encoder's own output for silence, the nearest thing to 'audio' there is without
audio. The first `prompt_epoch_share` of the epochs are step 1, the rest step 2.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
from torch import nn

from ..core import Target
from .base import Capabilities, Method, MethodConfig, freeze, register_method
from .prompts.engine import silence_log_mel


@dataclass
class TextSPTConfig(MethodConfig):
    prompt_length: int = field(default=30, metadata={"help": "pseudo-audio frames L (text-only SPT tries 30 and 50)",
                                                     "search": {"choices": [30, 50]}})
    prompt_epoch_share: float = field(default=0.5, metadata={"help": "share of the epochs spent on step 1 (prompt)"})
    decoder_update: Literal["full", "lora"] = field(
        default="full", metadata={"help": "step 2: fine-tune every decoder weight, or LoRA on its attention"})
    decoder_lr: float = field(default=3e-5, metadata={"help": "step 2 learning rate (`lr` is step 1's)",
                                                      "search": {"log_factor": 30}})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank when decoder_update is lora"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator"})

    def __post_init__(self):
        super().__post_init__()
        if self.prompt_length < 1:
            raise ValueError(f"prompt_length must be at least 1, got {self.prompt_length}")
        if not 0 < self.prompt_epoch_share < 1:
            raise ValueError(f"prompt_epoch_share must be in (0, 1), got {self.prompt_epoch_share}")


@register_method("text_spt")
class TextSoftPrompt(Method):
    description = ("two-step text-only adaptation (text-only SPT arXiv 2412.06967): learn a pseudo-audio "
                   "soft prompt from domain text, then fine-tune the decoder conditioned on it")
    config_class = TextSPTConfig
    capabilities = Capabilities(phases=("prompt", "decoder"))  # step 1 learns the prompt, step 2 the decoder

    def setup(self) -> None:
        freeze(self.model)
        self.prompts = nn.ParameterDict()  # experience index -> pseudo audio [L, d]
        self.phase: str | None = None
        self._training_key: str | None = None
        self.lora = None
        if self.config.decoder_update == "lora":
            from peft import LoraConfig
            from peft.tuners.lora import LoraModel

            c = self.config
            cfg = LoraConfig(r=c.lora_rank, lora_alpha=c.lora_alpha, lora_dropout=0.0, bias="none",
                             target_modules=r".*decoder\.layers\.\d+\.(self_attn|encoder_attn)\.(q_proj|v_proj)")
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                self.lora = LoraModel(self.model, cfg, "text")
            freeze(self.model)

    def extra_modules(self):
        return [self.prompts]

    def phase_for_epoch(self, epoch: int, epochs: int) -> str:
        prompt_epochs = min(epochs - 1, max(1, round(self.config.prompt_epoch_share * epochs))) if epochs > 1 else 1
        return "prompt" if epoch < prompt_epochs else "decoder"

    def set_phase(self, phase: str | None) -> None:
        self.phase = phase

    def problem_with(self, scenario) -> str | None:
        audio = [n for i, n in enumerate(scenario.experience_names) if i not in scenario.text_only_experiences]
        if audio:
            return (f"text_spt learns from text-only experiences, and {', '.join(audio)} of {scenario.name} have "
                    "audio (use a text-only scenario such as text_domains)")
        return None

    def before_experience(self, target: Target, rows: Sequence[dict] = ()) -> None:
        if rows and "audio" in rows[0]:
            raise ValueError(f"text_spt learns from text-only experiences; {target.name} has audio (use a "
                             "text-only scenario such as text_domains, or an audio strategy such as fft)")
        key = str(target.index)
        if key not in self.prompts:
            self.prompts[key] = nn.Parameter(self._silence_output())
        self._training_key = key

    def after_experience(self, target: Target) -> None:
        self._training_key = None

    @torch.no_grad()
    def _silence_output(self) -> torch.Tensor:
        """The encoder's output for digital silence, its first L frames."""
        enc = self.model.model.encoder
        out = enc(silence_log_mel(enc)).last_hidden_state[0, : self.config.prompt_length]
        return out.detach().clone()

    def _decoder_params(self) -> list[nn.Parameter]:
        if self.lora is not None:
            return [p for n, p in self.model.named_parameters() if "lora_" in n]
        return list(self.model.model.decoder.parameters())

    def trainable_parameters(self):
        if self._training_key is None:
            return []
        prompt = self.prompts[self._training_key]
        decoder = self._decoder_params()
        step1 = self.phase == "prompt"
        prompt.requires_grad_(step1)
        for p in decoder:
            p.requires_grad_(not step1)
        return [prompt] if step1 else decoder

    def param_groups(self):
        params = self.trainable_parameters()
        return [{"params": params, "lr": self.config.lr if self.phase == "prompt" else self.config.decoder_lr}]

    def text_only_encoder_states(self, batch_size: int, device, dtype) -> torch.Tensor:
        p = self.prompts[self._training_key]
        return p.to(device=device, dtype=dtype).unsqueeze(0).expand(batch_size, -1, -1)

    def stored_parameters_per_experience(self) -> int:
        d = self.model.model.config.d_model
        return self.config.prompt_length * d + sum(p.numel() for p in self._decoder_params())
