"""Soft prompts for Whisper, injected with hooks so that `generate(input_features=...)` keeps working.

peft's PromptTuning does not support Whisper (FACTS §4), so this module does it in two small hooks:
- encoder: a forward pre-hook on the first encoder layer prepends L_enc prompt vectors to the sequence
  (after the convolutions and positional embeddings), so every encoder layer and the decoder's
  cross-attention see them; the audio frames are untouched.
- decoder: the decoder input becomes <|startofprev|> P_1..P_L <|startoftranscript|> <|lang|> ... where each
  P_i is a placeholder token whose embedding a forward hook on `embed_tokens` replaces by a prompt vector.
  `generate` accepts that prefix as `prompt_ids`, and with the KV cache later steps never see a
  placeholder again, so decoding is unchanged otherwise (TS-Whisper places its prompts the same way).
Base-language sets are decoded with no prompt at all: the hooks are no-ops while nothing is active.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Sequence

import torch
from torch import nn

from .base import Method, MethodConfig, Route, Target, freeze, register_method

PLACEHOLDER_TOKEN = "<|startoflm|>"  # never produced by Whisper's decoding; only marks prompt positions
PREV_TOKEN = "<|startofprev|>"
# Whisper's feature extractor maps digital silence to log10(1e-10) = -10, clamps and rescales: (-10 + 4) / 4.
SILENCE_LOG_MEL = -1.5


class PromptInjector:
    """Installs the two hooks; `encoder_prompt` / `decoder_prompt` ([L, d] or [B, L, d]) are what they inject."""

    def __init__(self, model: nn.Module, tokenizer):
        self.placeholder_id = tokenizer.convert_tokens_to_ids(PLACEHOLDER_TOKEN)
        self.prev_id = tokenizer.convert_tokens_to_ids(PREV_TOKEN)
        self.encoder_prompt: torch.Tensor | None = None
        self.decoder_prompt: torch.Tensor | None = None
        whisper = model.model
        self._handles = [
            whisper.encoder.layers[0].register_forward_pre_hook(self._prepend_encoder, with_kwargs=True),
            whisper.decoder.embed_tokens.register_forward_hook(self._overwrite_placeholders),
        ]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def decoder_prefix(self) -> list[int]:
        if self.decoder_prompt is None:
            return []
        return [self.prev_id] + [self.placeholder_id] * self.decoder_prompt.shape[-2]

    @staticmethod
    def _batched(prompt: torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
        prompt = prompt.to(device=like.device, dtype=like.dtype)
        return prompt.unsqueeze(0).expand(batch, -1, -1) if prompt.dim() == 2 else prompt

    def _prepend_encoder(self, module, args, kwargs):
        if self.encoder_prompt is None:
            return None
        hidden = args[0]
        prompt = self._batched(self.encoder_prompt, hidden.shape[0], hidden)
        return (torch.cat([prompt, hidden], dim=1), *args[1:]), kwargs

    def _overwrite_placeholders(self, module, args, output):
        if self.decoder_prompt is None:
            return None
        mask = args[0] == self.placeholder_id
        if not bool(mask.any()):
            return None  # a cached decoding step: the prompt is already in the KV cache
        length = self.decoder_prompt.shape[-2]
        counts = mask.sum(dim=1)
        if bool((counts != length).any()):
            raise RuntimeError(
                f"decoder prompt of length {length}, but rows carry {counts.tolist()} placeholder tokens"
            )
        prompt = self._batched(self.decoder_prompt, output.shape[0], output)
        # masked_scatter fills the True positions row by row, in order: row b gets prompt[b, 0..L-1].
        return output.masked_scatter(mask.unsqueeze(-1), prompt)


class PromptSet(nn.Module):
    """One set of soft prompts: encoder [L_enc, d_enc] and/or decoder [L_dec, d_dec] vectors."""

    def __init__(self, encoder: torch.Tensor | None, decoder: torch.Tensor | None):
        super().__init__()
        self.encoder = nn.Parameter(encoder) if encoder is not None else None
        self.decoder = nn.Parameter(decoder) if decoder is not None else None


@dataclass
class SoftPromptConfig(MethodConfig):
    prompt_length: int = field(default=32, metadata={"help": "number of prompt vectors at each place (L)"})
    init: Literal["transcripts", "vocab"] = field(
        default="transcripts",
        metadata={"help": "decoder prompt initialisation: embeddings of the experience's own training "
                  "transcripts (like a text prompt of the new language), or of random text tokens"},
    )
    encoder_init: Literal["silence", "gaussian"] = field(
        default="silence",
        metadata={"help": "encoder prompt initialisation: the encoder's own representation of silence (the "
                  "padding frames it learned to ignore, so an untrained prompt changes almost nothing), or "
                  "Gaussian noise at the positional embeddings' scale (which wrecks the untrained model)"},
    )
    mode: Literal["separate", "shared"] = field(
        default="separate",
        metadata={"help": "separate: a new prompt set per experience (the papers' default); shared: one set "
                  "trained through all experiences"},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.prompt_length < 1:
            raise ValueError(f"prompt_length must be at least 1, got {self.prompt_length}")


class SoftPromptMethod(Method):
    """Frozen backbone + soft prompts at `places`; prompt sets chosen by the experience's identity (oracle)."""

    config_class = SoftPromptConfig
    places: ClassVar[tuple[str, ...]] = ()

    def setup(self) -> None:
        freeze(self.model)
        self.injector = PromptInjector(self.model, self.tokenizer)
        self.prompt_sets = nn.ModuleDict()
        self._training_key: str | None = None

    def extra_modules(self):
        return [self.prompt_sets]

    # -- prompt sets -----------------------------------------------------------------------------------
    def _key_for_experience(self, index: int) -> str:
        return "shared" if self.config.mode == "shared" else str(index)

    def _new_prompt_set(self, index: int, texts: Sequence[str]) -> PromptSet:
        """Decoder prompts start as token embeddings: of the experience's training transcripts (`init:
        transcripts`; Whisper conditions strongly on <|startofprev|> text, so the prompt starts out as a text
        prompt in the new language) or of random text tokens (`init: vocab`, Lester et al.). Encoder prompts
        start as silence frames (`encoder_init: silence`; measured on eo: CER 0.50 untouched, 0.98 with
        Gaussian prompts before any training) or as Gaussian noise."""
        L = self.config.prompt_length
        g = torch.Generator().manual_seed(self.seed * 1000 + index)
        whisper = self.model.model
        dev = next(self.model.parameters()).device
        enc = dec = None
        if "encoder" in self.places:
            if self.config.encoder_init == "silence":
                enc = self._silence_frames(L)
            else:
                scale = whisper.encoder.embed_positions.weight.detach().float().std().item()
                enc = torch.randn(L, whisper.config.d_model, generator=g) * scale
        if "decoder" in self.places:
            ids = self._init_token_ids(texts, L, g)
            dec = whisper.decoder.embed_tokens.weight.detach().cpu()[ids].clone().float()
        return PromptSet(enc, dec).to(dev)

    @torch.no_grad()
    def _silence_frames(self, length: int) -> torch.Tensor:
        """The first encoder layer's input for a window of digital silence, at the window's last positions."""
        enc = self.model.model.encoder
        positions = enc.embed_positions.num_embeddings
        if length > positions:
            raise ValueError(f"prompt_length {length} exceeds the encoder's {positions} positions")
        w = enc.conv1.weight
        mel = torch.full((1, w.shape[1], 2 * positions), SILENCE_LOG_MEL, device=w.device, dtype=w.dtype)
        x = torch.nn.functional.gelu(enc.conv2(torch.nn.functional.gelu(enc.conv1(mel)))).permute(0, 2, 1)
        x = x + enc.embed_positions.weight
        return x[0, -length:].detach().float().cpu().clone()

    def _init_token_ids(self, texts: Sequence[str], length: int, g: torch.Generator) -> torch.Tensor:
        n_text = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")  # ids below it are text tokens
        if self.config.init == "vocab" or not texts:
            return torch.randint(0, n_text, (length,), generator=g)
        order = torch.randperm(len(texts), generator=g).tolist()
        ids: list[int] = []
        for i in order:
            ids += self.tokenizer.encode(" " + str(texts[i]).strip(), add_special_tokens=False)
            if len(ids) >= length:
                break
        ids = (ids * (length // max(1, len(ids)) + 1))[:length]  # cycle if the transcripts are short
        return torch.tensor(ids, dtype=torch.long)

    def before_experience(self, target: Target, rows: Sequence[dict] = ()) -> None:
        key = self._key_for_experience(target.index)
        if key not in self.prompt_sets:
            self.prompt_sets[key] = self._new_prompt_set(target.index, [r["text"] for r in rows])
        self._training_key = key

    def after_experience(self, target: Target) -> None:
        self._training_key = None

    def trainable_parameters(self):
        if self._training_key is None:
            return []
        return list(self.prompt_sets[self._training_key].parameters())

    def stored_parameters_per_experience(self) -> int:
        d = self.model.model.config.d_model
        return self.config.prompt_length * d * len(self.places)

    # -- routing ---------------------------------------------------------------------------------------
    def _prompt_set_for(self, target: Target) -> PromptSet | None:
        if not target.is_experience:
            return None  # preservation (base-language) sets are decoded without any prompt
        key = self._key_for_experience(target.index)
        if target.stream == "train":
            return self.prompt_sets[key] if key == self._training_key else None
        learned = target.index < self.experiences_trained or self.config.mode == "shared"
        return self.prompt_sets[key] if learned and key in self.prompt_sets else None

    @contextmanager
    def route(self, target: Target):
        ps = self._prompt_set_for(target)
        self.injector.encoder_prompt = ps.encoder if ps is not None else None
        self.injector.decoder_prompt = ps.decoder if ps is not None else None
        try:
            yield Route(decoder_prefix=self.injector.decoder_prefix())
        finally:
            self.injector.encoder_prompt = self.injector.decoder_prompt = None

    def routed_state(self, target: Target):
        ps = self._prompt_set_for(target)
        return None if ps is None else [p for p in ps.parameters()]


@register_method("spt_decoder")
class DecoderSoftPrompt(SoftPromptMethod):
    description = "soft prompts in the decoder only (Decoder SPT), frozen backbone"
    places = ("decoder",)


@register_method("spt_entire")
class EntireSoftPrompt(SoftPromptMethod):
    description = "soft prompts in encoder and decoder (Entire SPT, seed 000), frozen backbone"
    places = ("encoder", "decoder")
