r"""Scales suite: tabular tasks in natural units, losses :math:`10^{\pm 4}` apart (where LS fails).

Each regression task is trained on its mean squared error in its own unit and each
classification on its cross entropy, so the summed loss of LS is ruled by the task with
the largest unit. The metrics are free of the units: :math:`R^2` per regression task (at
most :math:`1/(1 + r^2)`, about 0 for predicting the mean) and accuracy per classification
(at most :math:`100(1 - \eta)` %, about :math:`100/C` % for the majority class), so Δm%
against STL weighs every task alike. :meth:`ScalesSuite.bayes_scores` and
:meth:`ScalesSuite.trivial_scores` give both ends.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.scales import ScalesConfig, load_scales
from ..datasets import Splits, iterate_batches
from ..metrics import Accuracy, Evaluator, Metric, RSquared
from ..models import ConstantModel, TabularMLP
from .base import Suite, TrainingDefaults


@dataclass(frozen=True)
class ScalesSuiteConfig:
    """Data, MLP size (``hidden`` × ``depth``) and training recipe of the Scales suite."""

    data: ScalesConfig = field(default_factory=ScalesConfig)
    hidden: int = 64
    depth: int = 2
    training: TrainingDefaults = field(default_factory=lambda: TrainingDefaults(50, 100, 1e-3))


class ScalesSuite(Suite[ScalesSuiteConfig]):
    """The tasks of :data:`~benchmarks.data.scales.SCALE_TASKS` (``price``, ``minutes``, ``segment``,
    ``click``, ``share``, ``growth``) on one MLP: MSE in natural units or cross entropy."""

    name = "scales"

    @classmethod
    def preset(cls, size: str) -> ScalesSuiteConfig:
        data = {
            "tiny": ScalesConfig(num_train=64, num_test=32),
            "quick": ScalesConfig(num_train=2000, num_test=1000),
            "default": ScalesConfig(num_train=10000, num_test=5000),
            "large": ScalesConfig(num_train=50000, num_test=10000),
        }[size]
        training = {
            "tiny": TrainingDefaults(1, 16, 1e-3),
            "quick": TrainingDefaults(10, 100, 1e-3),
            "default": TrainingDefaults(50, 100, 1e-3),
            "large": TrainingDefaults(50, 250, 1e-3),
        }[size]
        width = {"tiny": 16, "quick": 64, "default": 64, "large": 128}[size]
        return ScalesSuiteConfig(data=data, hidden=width, training=training)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(task.name for task in self.config.data.tasks)

    def datasets(
        self,
        seed: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        use_cache: bool = True,
    ) -> Splits:
        splits, _ = load_scales(self.config.data, seed, cache_dir, progress, use_cache)
        return splits

    def build_model(self) -> nn.Module:
        tasks = self.config.data.tasks
        return TabularMLP(
            self.config.data.input_dim,
            units={task.name: (task.offset, task.scale) for task in tasks if task.is_regression},
            classes={task.name: task.num_classes for task in tasks if not task.is_regression},
            hidden=self.config.hidden,
            depth=self.config.depth,
        )

    def task_losses(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        losses = [
            F.mse_loss(outputs[task.name], targets[task.name])
            if task.is_regression
            else F.cross_entropy(outputs[task.name], targets[task.name])
            for task in self.config.data.tasks
        ]
        return torch.stack(losses)

    def evaluator(self) -> Evaluator:
        metrics: list[Metric] = [
            RSquared(task.name) if task.is_regression else Accuracy(task.name)
            for task in self.config.data.tasks
        ]
        return Evaluator(metrics)

    def bayes_scores(self) -> dict[str, float]:
        """Each metric's expected value for the best predictor (the clean signal, the clean class):
        :math:`R^2 = 1/(1 + r^2)`, accuracy ``100 (1 - η)`` %."""
        data = self.config.data
        return {
            f"{task.name}/r2" if task.is_regression else f"{task.name}/accuracy": (
                1.0 / (1.0 + data.noise_std**2) if task.is_regression else 100.0 * (1.0 - data.label_noise)
            )
            for task in data.tasks
        }

    def trivial_scores(self, data: Splits) -> dict[str, float]:
        """Every metric on ``data.test`` of the trivial predictor fit on ``data.train``:
        each regression's training mean, each classification's majority class."""
        _, targets = next(iterate_batches(data.train, len(data.train)))  # type: ignore[arg-type]
        outputs = {
            task.name: targets[task.name].mean()
            if task.is_regression
            else torch.bincount(targets[task.name], minlength=task.num_classes).float()
            for task in self.config.data.tasks
        }
        return self.evaluate(ConstantModel(outputs), data.test, device="cpu")
