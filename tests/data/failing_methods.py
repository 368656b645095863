"""Test strategies that fail (loaded with --methods-from), for both executors: `flaky_once` fails in setup() on
its first attempt and works on the next; `flaky_training_once` fails mid-training once; `always_fails` fails
every time. The first attempt leaves a marker file in $CL_ASR_TEST_MARKERS, which the workers of a local Ray instance inherit from the driver."""
from __future__ import annotations

import os
from pathlib import Path

from cl_asr.methods.base import register_method
from cl_asr.methods.fft import FullFineTuning
from cl_asr.methods.zero_shot import ZeroShot


@register_method("flaky_once")
class FlakyOnce(ZeroShot):
    description = "test: zero-shot that fails on its first attempt (per seed)"

    def setup(self) -> None:
        marker = Path(os.environ["CL_ASR_TEST_MARKERS"]) / f"flaky_once_seed{self.seed}"
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("failed once")
            raise RuntimeError("injected failure on the first attempt")
        super().setup()


@register_method("always_fails")
class AlwaysFails(ZeroShot):
    description = "test: zero-shot that fails on every attempt"

    def setup(self) -> None:
        raise RuntimeError("injected failure on every attempt")


@register_method("flaky_training_once")
class FlakyTrainingOnce(FullFineTuning):
    """Fails while training on its second experience, on the first attempt (per seed): what a bug deep in a
    strategy's training looks like to the runner. The first experience's pass is finished and checkpointed."""

    description = "test: full fine-tuning that fails while training on its second experience, once"

    def before_experience(self, target, rows=()) -> None:
        marker = Path(os.environ["CL_ASR_TEST_MARKERS"]) / f"flaky_training_once_seed{self.seed}"
        if self.experiences_trained == 1 and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("failed once")
            raise RuntimeError("injected failure while training")
        super().before_experience(target, rows)
