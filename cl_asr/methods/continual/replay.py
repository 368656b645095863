"""replay: full fine-tuning with experience replay from Avalanche's experience-balanced reservoir buffer."""
from __future__ import annotations

from dataclasses import dataclass, field

from avalanche.core import SupervisedPlugin
from avalanche.training.storage_policy import ExperienceBalancedBuffer

from ..base import MethodConfig, register_method
from ..fft import FullFineTuning


@dataclass
class ReplayConfig(MethodConfig):
    buffer_size: int = field(default=16, metadata={"help": "utterances kept from past experiences, balanced across "
                                                           "experiences (reservoir sampling)",
                                                   "search": {"choices": [8, 16, 32, 64]}})

    def __post_init__(self):
        super().__post_init__()
        if self.buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {self.buffer_size}")


class ReplayPlugin(SupervisedPlugin, supports_distributed=True):
    """Mixes the buffer into each experience's training set (before the dataloader is built), then updates it."""

    def __init__(self, size: int):
        super().__init__()
        self.storage = ExperienceBalancedBuffer(max_size=size, adaptive_size=True)

    def after_train_dataset_adaptation(self, strategy, **kwargs):
        if len(self.storage.buffer):
            strategy.adapted_dataset = strategy.adapted_dataset.concat(self.storage.buffer)

    def after_training_exp(self, strategy, **kwargs):
        self.storage.post_adapt(strategy, strategy.experience)


@register_method("replay")
class Replay(FullFineTuning):
    description = "full fine-tuning with experience replay from a small balanced buffer of past utterances"
    config_class = ReplayConfig

    def setup(self) -> None:
        super().setup()
        self.replay = ReplayPlugin(self.config.buffer_size)

    def plugins(self):
        return [self.replay]

    def info(self) -> dict:
        return {"buffer_utterances": len(self.replay.storage.buffer)}
