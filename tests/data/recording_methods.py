"""Strategies that save what they trained at the end of every experience (loaded with --methods-from), for the
data-parallel test: $CL_ASR_TEST_PARAMS/<strategy>_rank<R>_exp<K>.pt holds the trainable parameters of the
process of rank R (0 without torch.distributed) after experience K."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from cl_asr.methods import get_method
from cl_asr.methods.base import register_method


def _recording(base_name: str) -> None:
    base = get_method(base_name)

    class Recording(base):
        description = f"test: {base_name}, saving its trained parameters after every experience"

        def after_experience(self, target) -> None:
            rank = dist.get_rank() if dist.is_initialized() else 0
            out = Path(os.environ["CL_ASR_TEST_PARAMS"]) / f"{self.name}_rank{rank}_exp{self.experiences_trained}.pt"
            torch.save([p.detach().cpu().clone() for p in self.trainable_parameters()], out)
            super().after_experience(target)

    register_method(f"recorded_{base_name}")(Recording)


for _name in ("spt_decoder", "ewc", "lwf"):
    _recording(_name)
