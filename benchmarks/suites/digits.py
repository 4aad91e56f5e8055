"""MultiDigits suite: classify the left and the right of two overlapping digits."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.digits import DIGIT_TASKS, DigitsConfig, load_digits_pairs
from ..datasets import Splits
from ..metrics import Accuracy, Evaluator
from ..models import DigitsCNN
from .base import Suite, TrainingDefaults


@dataclass(frozen=True)
class DigitsSuiteConfig:
    """Data, network width and training recipe of the MultiDigits suite."""

    data: DigitsConfig = field(default_factory=DigitsConfig)
    channels: int = 16
    hidden: int = 64
    training: TrainingDefaults = field(default_factory=lambda: TrainingDefaults(20, 64, 1e-3))


class DigitsSuite(Suite[DigitsSuiteConfig]):
    """Two 10-way classifications sharing a small CNN (MultiMNIST-style)."""

    name = "digits"

    @classmethod
    def preset(cls, size: str) -> DigitsSuiteConfig:
        data = {
            "tiny": DigitsConfig(num_train=64, num_test=32),
            "quick": DigitsConfig(num_train=1000, num_test=500),
            "default": DigitsConfig(num_train=6000, num_test=2000),
            "large": DigitsConfig(num_train=20000, num_test=5000),
        }[size]
        training = {
            "tiny": TrainingDefaults(1, 16, 1e-3),
            "quick": TrainingDefaults(3, 64, 1e-3),
            "default": TrainingDefaults(20, 64, 1e-3),
            "large": TrainingDefaults(50, 128, 1e-3),
        }[size]
        return DigitsSuiteConfig(data=data, training=training)

    @property
    def tasks(self) -> tuple[str, ...]:
        return DIGIT_TASKS

    def datasets(
        self,
        seed: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        use_cache: bool = True,
    ) -> Splits:
        return load_digits_pairs(self.config.data, seed, cache_dir, progress, use_cache)

    def build_model(self) -> nn.Module:
        data = self.config.data
        heads = dict.fromkeys(self.tasks, 10)
        return DigitsCNN(heads, data.height, data.width, self.config.channels, self.config.hidden)

    def task_losses(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        return torch.stack([F.cross_entropy(outputs[task], targets[task]) for task in self.tasks])

    def evaluator(self) -> Evaluator:
        return Evaluator(Accuracy(task) for task in self.tasks)
