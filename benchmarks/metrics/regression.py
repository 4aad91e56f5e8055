r"""The coefficient of determination of a regression head, free of the target's unit.

.. math:: R^2 = 1 - \frac{\sum_i (\hat y_i - y_i)^2}{\sum_i (y_i - \bar y)^2}

over the whole scored set (:math:`\bar y` its mean): 1 is perfect, 0 is predicting the
mean, and a noise of variance :math:`\sigma^2` on a signal of variance :math:`v` caps it at
:math:`v / (v + \sigma^2)`.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from .base import Metric, MetricSpec


class RSquared(Metric):
    """:math:`R^2` of ``outputs[task]`` against ``targets[task]`` (both ``[B]``), higher is better."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.count = 0
        self.squared_error = 0.0
        self.shift: float | None = None
        """The first batch's mean: sums of ``y - shift`` keep float64 exact for targets far from 0."""
        self.sum, self.sum_squares = 0.0, 0.0

    @property
    def specs(self) -> tuple[MetricSpec, ...]:
        return (MetricSpec(f"{self.task}/r2", self.task, True),)

    def update(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> None:
        target = targets[self.task].detach().double().cpu()
        if target.numel() == 0:
            return
        prediction = outputs[self.task].detach().double().cpu()
        if self.shift is None:
            self.shift = float(target.mean())
        centred = target - self.shift
        self.squared_error += float((prediction - target).pow(2).sum())
        self.sum += float(centred.sum())
        self.sum_squares += float(centred.pow(2).sum())
        self.count += target.numel()

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no sample to score")
        total = self.sum_squares - self.sum * self.sum / self.count
        if total <= 0:
            raise ValueError(f"{self.task}: the targets are constant, R² is undefined")
        return {f"{self.task}/r2": 1.0 - self.squared_error / total}
