"""Training faults: a step whose loss or gradient is NaN/inf is skipped (nothing is updated, not even the
optimiser's moments) and counted; `max_in_a_row` such steps in a row end the experience's training, with the
parameters as they were before the first of them. Each experience with a skipped step gets a record in
`faults` (run.json `training_faults`, the report's "Training faults" table).

The plugin decides and counts; the template honours `strategy.skip_update` (no backward for a non-finite
loss, no optimiser step for a skipped update) and reports a non-finite gradient norm through it too."""
from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin


class NonFiniteSteps(SupervisedPlugin, supports_distributed=True):
    def __init__(self, max_in_a_row: int):
        super().__init__()
        self.max_in_a_row = max_in_a_row
        self.faults: list[dict] = []
        self.skipped = self.in_a_row = self.steps = 0

    def before_training_exp(self, strategy, **kwargs):
        self.skipped = self.in_a_row = self.steps = 0

    def before_training_iteration(self, strategy, **kwargs):
        strategy.skip_update = False  # a process with an empty shard (data parallel) has no loss of its own

    def before_backward(self, strategy, **kwargs):
        strategy.skip_update = not bool(torch.isfinite(strategy.loss).all())

    def before_update(self, strategy, **kwargs):
        self.steps += 1

    def after_update(self, strategy, **kwargs):
        if not strategy.skip_update:
            self.in_a_row = 0
            return
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row >= self.max_in_a_row:
            strategy.stop_training()

    def after_training_exp(self, strategy, **kwargs):
        if not self.skipped:
            return
        name, ended = strategy.target.name, self.in_a_row >= self.max_in_a_row
        self.faults.append({
            "experience": name, "skipped_steps": self.skipped, "steps": self.steps, "ended_early": ended,
            "reason": (f"{self.in_a_row} non-finite losses or gradients in a row: training on {name} stopped after "
                       f"step {self.steps}, the parameters as they were before the first of them" if ended else
                       f"{self.skipped} of {self.steps} steps had a non-finite loss or gradient and were skipped"),
        })
