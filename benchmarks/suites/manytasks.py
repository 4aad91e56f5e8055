r"""ManyTasks suite: m noisy regression and/or classification tasks on one MLP (quality and cost against m).

Every task has a floor known in closed form (:mod:`benchmarks.data.manytasks`): a regression's
mean squared error is at least :math:`\sigma^2` (predicting the mean gives about
:math:`1 + \sigma^2`), a classification's accuracy at most :math:`100(1 - \eta)` % (the
majority class gives about :math:`100/C` %). :meth:`ManyTasksSuite.bayes_scores` and
:meth:`ManyTasksSuite.trivial_scores` give both ends.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.manytasks import ManyTasksConfig, load_manytasks
from ..datasets import Splits, iterate_batches
from ..losses import columnwise_cross_entropy, columnwise_mse, stack_losses
from ..metrics import ColumnwiseAccuracy, ColumnwiseMSE, Evaluator
from ..models import ConstantModel, ManyTasksMLP
from .base import Suite, TrainingDefaults


@dataclass(frozen=True)
class ManyTasksSuiteConfig:
    """Data, MLP size (``hidden`` × ``depth``) and training recipe of the ManyTasks suite."""

    data: ManyTasksConfig = field(default_factory=ManyTasksConfig)
    hidden: int = 64
    depth: int = 2
    training: TrainingDefaults = field(default_factory=lambda: TrainingDefaults(20, 128, 1e-3))


class ManyTasksSuite(Suite[ManyTasksSuiteConfig]):
    """Tasks ``reg000 ...`` (mean squared error) then ``cls000 ...`` (cross entropy).

    Presets: m = 4 (tiny), 8 (quick), 16 (default, 32000 samples, 20 epochs of 250 steps),
    64 (large); ``num_tasks`` takes any m (``--set num_tasks=2`` ... ``64``)."""

    name = "manytasks"

    @classmethod
    def preset(cls, size: str) -> ManyTasksSuiteConfig:
        data = {
            "tiny": ManyTasksConfig(num_tasks=4, num_train=64, num_test=32, classification_fraction=0.5),
            "quick": ManyTasksConfig(
                num_tasks=8, num_train=4000, num_test=1000, classification_fraction=0.25
            ),
            "default": ManyTasksConfig(
                num_tasks=16, num_train=32000, num_test=4000, classification_fraction=0.25
            ),
            "large": ManyTasksConfig(
                num_tasks=64, num_train=64000, num_test=8000, classification_fraction=0.25
            ),
        }[size]
        training = {
            "tiny": TrainingDefaults(1, 16, 1e-3),
            "quick": TrainingDefaults(5, 128, 1e-3),
            "default": TrainingDefaults(20, 128, 1e-3),
            "large": TrainingDefaults(20, 256, 1e-3),
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
        """The generator's task facts (``direction``, ``conflicting``, ``alpha``, ``beta``, ``signal_mean``,
        ``signal_std``, ``thresholds``), e.g. to report aligned and conflicting tasks apart."""
        _, meta = load_manytasks(self.config.data, seed, cache_dir, progress=False)
        return {key.removeprefix("meta/"): value for key, value in meta.items()}

    def bayes_scores(self) -> dict[str, float]:
        """Each metric's expected value for the best predictor (the clean signal, the clean class):
        MSE ``σ²``, accuracy ``100 (1 - η)`` %."""
        data = self.config.data
        return {
            **{f"{task}/mse": data.noise_std**2 for task in self.regression_tasks},
            **{f"{task}/accuracy": 100.0 * (1.0 - data.label_noise) for task in self.classification_tasks},
        }

    def trivial_scores(self, data: Splits) -> dict[str, float]:
        """Every metric on ``data.test`` of the trivial predictor fit on ``data.train``:
        each regression's training mean, each classification's majority class."""
        _, targets = next(iterate_batches(data.train, len(data.train)))  # type: ignore[arg-type]
        outputs = {}
        if self.regression_tasks:
            outputs["regression"] = targets["regression"].mean(dim=0)
        if self.classification_tasks:
            counts = F.one_hot(targets["classification"], self.config.data.num_classes).sum(dim=0)
            outputs["classification"] = counts.float()  # its arg-max is the majority class
        return self.evaluate(ConstantModel(outputs), data.test, device="cpu")

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
