"""joint: full fine-tuning on all experiences at once: not continual, the reference for intransigence."""
from __future__ import annotations

from ..base import Capabilities, register_method
from ..fft import FullFineTuning


@register_method("joint")
class JointTraining(FullFineTuning):
    description = "full fine-tuning on all experiences at once (not continual: the reference for intransigence)"
    capabilities = Capabilities(joint=True)
