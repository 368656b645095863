"""single_task: full fine-tuning on each experience alone, from the pretrained model every time (not continual).

The single-task fine-tuning reference of CL-MASR's forward transfer (speechbrain/benchmarks, CL_MASR):
FWT_k = S[k] - W[k][k], where S[k] is the error on experience k of a model fine-tuned on k only, which is this
strategy's error on k right after training on it (its matrix's diagonal). Its other cells (the model tuned on one
experience, evaluated on the others) are reported as for any strategy but are no continual-learning result.
"""
from __future__ import annotations

from ..base import Capabilities, register_method
from ..fft import FullFineTuning


@register_method("single_task")
class SingleTaskFineTuning(FullFineTuning):
    description = ("full fine-tuning on each experience alone, restarted from the pretrained model every time "
                   "(not continual: the single-task reference of CL-MASR's forward transfer)")
    capabilities = Capabilities(single_task=True)

    def setup(self) -> None:
        super().setup()
        # the pretrained weights to start each experience from (the checkpoint after a pass holds them too)
        self.pretrained = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def before_experience(self, target, rows=()) -> None:
        super().before_experience(target, rows)
        self.model.load_state_dict(self.pretrained)
