"""The suite's shared vocabulary, imported by scenarios, strategies, caches and the training loop alike.

- `Target`: a set the model is trained or evaluated on (stream, experience index, language, decoding token);
- `Route`: how the model must be run for a target (decoder tokens before <|startoftranscript|>);
- `tensor_digest`: a content hash of tensors (decode-memo keys, cache keys, the backbone checksum);
- `HiddenStatesPreHook`: a forward pre-hook that can only replace a layer's hidden states, never its other
  inputs (the encoder states a decoder layer cross-attends to), which is what lets the cross-attention cache
  accept it (cl_asr/cl/fingerprint.py);
- `mean_over_speech`: an utterance's encoder output averaged over the frames that hold speech, not the window's
  padding (the learned router's feature, l2p's query).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import torch


def tensor_digest(tensors, names=None) -> str:
    """A content hash of tensors (dtype, shape and bytes; with `names`, those too): identical digests mean
    identical values."""
    h = hashlib.blake2b(digest_size=16)
    for i, t in enumerate(tensors):
        label = names[i] if names is not None else i
        h.update(f"{label}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True)
class Target:
    """A set the model is trained or evaluated on: a stream name, the experience index in it, its language
    (the true one) and the language token it is decoded with (a scenario setting: an unseen language has no
    token of its own, so it borrows one, see docs/whisper.md)."""

    stream: str  # "train" | "test" | "preservation"
    index: int
    name: str  # e.g. "eo"
    language: str
    decode_language: str

    @property
    def is_experience(self) -> bool:
        """True for the sets of a learned (or to-be-learned) experience, False for preservation sets."""
        return self.stream in ("train", "test")


@dataclass
class Route:
    """How the model must be run for a target: decoder tokens inserted before <|startoftranscript|>."""

    decoder_prefix: list[int] = field(default_factory=list)


class HiddenStatesPreHook:
    """A forward pre-hook (register with `with_kwargs=True`) that replaces only the layer's hidden states: `fn`
    gets them and returns the new ones (or None: unchanged). Every other argument — notably a decoder layer's
    `encoder_hidden_states` — passes through untouched by construction, so caches of what is computed from
    those (cross-attention keys and values) stay valid. Any other pre-hook on a decoder layer turns that
    cache off."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor | None]):
        self.fn = fn

    def __call__(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        new = self.fn(hidden)
        if new is None:
            return None
        if args:
            return (new, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": new}


def speech_frames(input_features: torch.Tensor, n_states: int) -> torch.Tensor:
    """[N, n_states] float mask: 1 where an encoder frame holds speech, for a batch of log-mel features.

    Whisper pads audio with zeros, whose log-mel frames are all at the batch row's floor value: a mel frame is
    padding when every bin equals the row's minimum. The encoder halves the frame rate (stride-2 conv), so an
    encoder frame is speech when either of its two mel frames is. An all-silent row counts every frame."""
    floor = input_features.amin(dim=(1, 2), keepdim=True)
    speech = (input_features > floor).any(dim=1)  # [N, T] mel frames with any bin above the floor
    speech = speech[:, : 2 * n_states].reshape(speech.shape[0], n_states, -1).any(dim=-1).float()
    speech[speech.sum(dim=1) == 0] = 1.0
    return speech


def mean_over_speech(states: torch.Tensor, input_features: torch.Tensor) -> torch.Tensor:
    """[N, d] fp32: encoder outputs [N, T/2, d] averaged over the frames of `input_features` that hold speech.
    Averaging over the whole window would let the padding (most of it for a short utterance) dominate."""
    if states.shape[0] != input_features.shape[0]:
        raise ValueError(f"{states.shape[0]} encoder outputs for {input_features.shape[0]} rows of features")
    speech = speech_frames(input_features.to(states.device), states.shape[1])
    states = states.float()
    return (states * speech[..., None]).sum(dim=1) / speech.sum(dim=1, keepdim=True)
