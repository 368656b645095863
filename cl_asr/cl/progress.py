"""What the training loop shows while it runs: a tqdm bar per experience with the running loss, and no
Avalanche logger (results are written by the runner)."""
from __future__ import annotations

from avalanche.core import SupervisedPlugin
from avalanche.logging import BaseLogger
from tqdm.auto import tqdm


class TrainingProgress(SupervisedPlugin, supports_distributed=True):
    """A tqdm bar per training experience, showing the running loss."""

    def __init__(self, enabled: bool):
        super().__init__()
        self.enabled, self.bar = enabled, None

    def before_training_exp(self, strategy, **kwargs):
        total = strategy.train_epochs * len(strategy.dataloader)
        self.bar = tqdm(total=total, desc=f"train {strategy.method.name} on {strategy.target.name}",
                        unit="step", disable=not self.enabled, leave=False)

    def after_training_iteration(self, strategy, **kwargs):
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{strategy.loss.item():.3f}")

    def after_training_exp(self, strategy, **kwargs):
        self.bar.close()


class NoLogger(BaseLogger):  # results are written by the runner; an empty logger list makes Avalanche warn
    pass
