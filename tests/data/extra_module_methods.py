"""User strategies written from README "Add a strategy" whose trained state lives outside the backbone: a small
module returned by `extra_modules()`, applied with a hook. Loaded with --methods-from by
tests/test_user_strategy_caches.py, which checks that the suite's caches give them the results of a run with
every cache off (they once got decodes they never computed, or trained nothing)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from cl_asr.methods import Method, MethodConfig, register_method


class Shift(nn.Module):
    """A learned vector added to hidden states (starts at zero: the pretrained model)."""

    def __init__(self, d: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(d))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.bias.to(h.dtype)


@dataclass
class ShiftConfig(MethodConfig):
    lr: float = field(default=3e-2, metadata={"help": "AdamW learning rate"})


class _ShiftMethod(Method):
    config_class = ShiftConfig

    def setup(self):
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.shift = Shift(self.model.model.config.d_model)
        self.install()

    def install(self):
        raise NotImplementedError

    def extra_modules(self):
        return [self.shift]

    def trainable_parameters(self):
        return list(self.shift.parameters())

    def stored_parameters_per_experience(self):
        return self.shift.bias.numel()

    def info(self):
        return {"shift_norm": float(self.shift.bias.detach().norm())}


@register_method("decoder_output_shift")
class DecoderOutputShift(_ShiftMethod):
    description = "test: a learned shift of the decoder's output (forward hook on the decoder)"

    def install(self):
        def hook(module, args, output):
            output.last_hidden_state = self.shift(output.last_hidden_state)
            return output

        self.model.model.decoder.register_forward_hook(hook)


@dataclass
class FastShiftConfig(ShiftConfig):
    lr: float = field(default=1e-1, metadata={"help": "AdamW learning rate"})


@register_method("decoder_output_shift_fast")
class DecoderOutputShiftFast(DecoderOutputShift):
    description = "test: decoder_output_shift at another learning rate"
    config_class = FastShiftConfig


@register_method("encoder_output_shift")
class EncoderOutputShift(_ShiftMethod):
    description = "test: a learned shift of the encoder's output (forward hook on the encoder)"

    def install(self):
        def hook(module, args, output):
            output.last_hidden_state = self.shift(output.last_hidden_state)
            return output

        self.model.model.encoder.register_forward_hook(hook)


@register_method("cross_attention_shift")
class CrossAttentionShift(_ShiftMethod):
    description = "test: a learned shift of what decoder layer 0 cross-attends to (pre-hook on the layer)"

    def install(self):
        def hook(module, args, kwargs):
            if len(args) > 2 and args[2] is not None:  # (hidden_states, attention_mask, encoder_hidden_states, ...)
                args = (*args[:2], self.shift(args[2]), *args[3:])
            elif kwargs.get("encoder_hidden_states") is not None:
                kwargs = {**kwargs, "encoder_hidden_states": self.shift(kwargs["encoder_hidden_states"])}
            return args, kwargs

        self.model.model.decoder.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
