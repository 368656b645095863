"""A strategy's checkpoint after an evaluation pass: everything needed to go on from there in another process.

The method is pickled whole with dill, as Avalanche's own checkpointing does (model, parameter sets, hooks,
plugins), with the random-number states, the pass's rows and the cost bookkeeping. Backbone parameters still
equal to the pretrained ones are written as names and filled back in on loading, so a frozen-backbone method's
checkpoint is what it trained (prompts, LoRA, adapters) and full fine-tuning's the whole model.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from . import distributed


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and distributed.current() is not None:
        # one GPU per process: reading every GPU's state would open a CUDA context (memory) on each of them
        state["cuda_device"] = torch.cuda.get_rng_state()
    elif torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if not torch.cuda.is_available():
        return
    if distributed.current() is not None:  # this process's GPU only (see rng_state)
        mine = state.get("cuda_device")
        if mine is None and state.get("cuda"):
            mine = state["cuda"][min(torch.cuda.current_device(), len(state["cuda"]) - 1)]
        if mine is not None:
            torch.cuda.set_rng_state(mine)
    elif "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    elif "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"])


def pristine_names(method, pristine: torch.nn.Module) -> dict[int, str]:
    """Which of the method's parameters started as which backbone parameter (by object identity; the method's
    model is a deep copy of `pristine`, and wrapping it, e.g. with peft, keeps the parameter objects)."""
    return {id(mine): name for (name, _), mine in zip(pristine.named_parameters(), method.model.parameters())}


def save_checkpoint(path: Path, method, done_steps: list[int], rows: list[dict], preds: list[dict], book: dict,
                    pristine: torch.nn.Module, pristine_of: dict[int, str]) -> int:
    """After an evaluation pass, before its rows are appended: everything needed to go on from here in another
    process (the method with its model, parameter sets, hooks and plugins, pickled whole with dill as
    Avalanche's checkpointing does; the random-number states; the pass's rows; the cost bookkeeping).

    Backbone parameters still equal to the pretrained ones are not written, only their names: a frozen-backbone
    method's checkpoint holds what it trained (prompts, LoRA, adapters), FFT's the whole model. Returns the
    checkpoint's size in bytes."""
    import dill

    path.parent.mkdir(parents=True, exist_ok=True)
    # not state: the template's feature function (the collator) and the backbone's tokenizer
    features_of = method.__dict__.pop("features_of", None)
    tokenizer = method.__dict__.pop("tokenizer")
    reference = dict(pristine.named_parameters())
    unchanged: dict[str, str] = {}  # the method's name of a parameter -> the backbone's
    held: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with torch.no_grad():
            for qname, p in method.model.named_parameters():
                source = pristine_of.get(id(p))
                if source is not None and torch.equal(p, reference[source]):
                    unchanged[qname] = source
                    held.append((p, p.data))
                    p.data = torch.empty(0, dtype=p.dtype, device=p.device)  # written as a name, not its values
        torch.save({"method": method, "unchanged_backbone": unchanged, "done_steps": done_steps, "rows": rows,
                    "preds": preds, "book": book, "rng": rng_state()}, tmp, pickle_module=dill)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        size = tmp.stat().st_size
        os.replace(tmp, path)  # a crash while saving leaves the previous checkpoint whole
        return size
    finally:
        for p, data in held:
            p.data = data
        method.tokenizer = tokenizer
        if features_of is not None:
            method.features_of = features_of
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: Path, device: torch.device, pristine: torch.nn.Module, tokenizer, features_of=None
                    ) -> tuple[dict, dict[int, str]]:
    """The checkpoint with what it left out filled in (backbone parameters from `pristine`, the tokenizer, the
    feature function), and the method-parameter -> backbone-name map for the next save."""
    import dill

    ckpt = torch.load(path, pickle_module=dill, map_location=device, weights_only=False)
    ckpt["method"].tokenizer = tokenizer
    ckpt["method"].features_of = features_of
    reference = dict(pristine.named_parameters())
    model = ckpt["method"].model
    pristine_of = {}
    with torch.no_grad():
        for qname, source in ckpt.pop("unchanged_backbone", {}).items():
            p = model.get_parameter(qname)
            p.data = reference[source].detach().clone()
            pristine_of[id(p)] = source
    return ckpt, pristine_of
