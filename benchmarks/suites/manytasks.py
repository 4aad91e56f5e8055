"""ManyTasks suite: m regression and/or classification tasks on one MLP (quality and cost against m)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor, nn

from ..data.manytasks import ManyTasksConfig, load_manytasks
from ..datasets import Splits
from ..losses import columnwise_cross_entropy, columnwise_mse, stack_losses
from ..metrics import ColumnwiseAccuracy, ColumnwiseMSE, Evaluator
from ..models import ManyTasksMLP
from .base import Suite, TrainingDefaults


@dataclass(frozen=True)
class ManyTasksSuiteConfig:
    """Data, MLP size (``hidden`` × ``depth``) and training recipe of the ManyTasks suite."""

    data: ManyTasksConfig = field(default_factory=ManyTasksConfig)
    hidden: int = 64
    depth: int = 2
    training: TrainingDefaults = field(default_factory=lambda: TrainingDefaults(30, 128, 1e-3))


class ManyTasksSuite(Suite[ManyTasksSuiteConfig]):
    """Tasks ``reg000 ...`` (mean squared error) then ``cls000 ...`` (cross entropy)."""

    name = "manytasks"

    @classmethod
    def preset(cls, size: str) -> ManyTasksSuiteConfig:
        data = {
            "tiny": ManyTasksConfig(num_tasks=4, num_train=64, num_test=32, classification_fraction=0.5),
            "quick": ManyTasksConfig(num_tasks=8, num_train=1000, num_test=500),
            "default": ManyTasksConfig(num_tasks=8, num_train=4000, num_test=2000),
            "large": ManyTasksConfig(num_tasks=32, num_train=20000, num_test=5000),
        }[size]
        training = {
            "tiny": TrainingDefaults(1, 16, 1e-3),
            "quick": TrainingDefaults(5, 128, 1e-3),
            "default": TrainingDefaults(30, 128, 1e-3),
            "large": TrainingDefaults(50, 256, 1e-3),
        }[size]
        width = {"tiny": 16, "quick": 64, "default": 64, "large": 256}[size]
        return ManyTasksSuiteConfig(data=data, hidden=width, training=training)

    @property
    def regression_tasks(self) -> tuple[str, ...]:
        return tuple(f"reg{k:03d}" for k in range(self.config.data.num_regression))

    @property
    def classification_tasks(self) -> tuple[str, ...]:
        return tuple(f"cls{k:03d}" for k in range(self.config.data.num_classification))

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.regression_tasks + self.classification_tasks

    def datasets(
        self,
        seed: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        use_cache: bool = True,
    ) -> Splits:
        splits, _ = load_manytasks(self.config.data, seed, cache_dir, progress, use_cache)
        return splits

    def task_metadata(
        self, seed: int = 0, cache_dir: str | os.PathLike[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The generator's task facts (``direction``, ``conflicting``, ``scale``, ``alpha``, ``beta``),
        e.g. to report aligned and conflicting tasks apart."""
        _, meta = load_manytasks(self.config.data, seed, cache_dir, progress=False)
        return {key.removeprefix("meta/"): value for key, value in meta.items()}

    def build_model(self) -> nn.Module:
        data = self.config.data
        return ManyTasksMLP(
            data.input_dim,
            data.num_regression,
            data.num_classification,
            data.num_classes,
            hidden=self.config.hidden,
            depth=self.config.depth,
        )

    def task_losses(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        losses = []
        if self.regression_tasks:
            losses.append(columnwise_mse(outputs["regression"], targets["regression"]))
        if self.classification_tasks:
            losses.append(columnwise_cross_entropy(outputs["classification"], targets["classification"]))
        return stack_losses(losses)

    def evaluator(self) -> Evaluator:
        return Evaluator(
            [ColumnwiseMSE(self.regression_tasks), ColumnwiseAccuracy(self.classification_tasks)]
        )
