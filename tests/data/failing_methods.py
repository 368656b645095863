"""Test strategies that fail (loaded with --methods-from), for the Ray executor's retries: `flaky_once` fails on
its first attempt and works on the next; `always_fails` fails every time. The first attempt leaves a marker
file in $CL_ASR_TEST_MARKERS, which the workers of a local Ray instance inherit from the driver."""
from __future__ import annotations

import os
from pathlib import Path

from cl_asr.methods.base import register_method
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
