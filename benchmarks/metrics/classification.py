"""Accuracy of classification heads and per-column errors of vectorised many-task heads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from .base import Metric, MetricSpec


class Accuracy(Metric):
    """Percent of samples whose arg-max logit (``[B, C]``) equals the label (``[B]``)."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.correct, self.count = 0, 0

    @property
    def specs(self) -> tuple[MetricSpec, ...]:
        return (MetricSpec(f"{self.task}/accuracy", self.task, True),)

    def update(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> None:
        predicted = outputs[self.task].detach().argmax(dim=1)
        self.correct += int((predicted == targets[self.task]).sum())
        self.count += int(predicted.numel())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no sample to score")
        return {f"{self.task}/accuracy": 100.0 * self.correct / self.count}


class ColumnwiseMSE(Metric):
    """Mean squared error of each column of ``outputs[key]`` ``[B, m]``; column ``k`` is task ``tasks[k]``."""

    def __init__(self, tasks: Sequence[str], key: str = "regression") -> None:
        self.tasks, self.key = tuple(tasks), key
        self.total = torch.zeros(len(self.tasks), dtype=torch.float64)
        self.count = 0

    @property
    def specs(self) -> tuple[MetricSpec, ...]:
        return tuple(MetricSpec(f"{task}/mse", task, False) for task in self.tasks)

    def update(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> None:
        if not self.tasks:
            return
        error = outputs[self.key].detach().double() - targets[self.key].double()
        self.total += error.pow(2).sum(dim=0).cpu()
        self.count += error.shape[0]

    def compute(self) -> dict[str, float]:
        if not self.tasks:
            return {}
        if self.count == 0:
            raise ValueError("no sample to score")
        return {f"{task}/mse": float(v) for task, v in zip(self.tasks, self.total / self.count, strict=True)}


class ColumnwiseAccuracy(Metric):
    """Accuracy (percent) of each task column: logits ``[B, m, C]``, labels ``[B, m]``."""

    def __init__(self, tasks: Sequence[str], key: str = "classification") -> None:
        self.tasks, self.key = tuple(tasks), key
        self.correct = torch.zeros(len(self.tasks), dtype=torch.long)
        self.count = 0

    @property
    def specs(self) -> tuple[MetricSpec, ...]:
        return tuple(MetricSpec(f"{task}/accuracy", task, True) for task in self.tasks)

    def update(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> None:
        if not self.tasks:
            return
        predicted = outputs[self.key].detach().argmax(dim=2)
        self.correct += (predicted == targets[self.key]).sum(dim=0).cpu()
        self.count += predicted.shape[0]

    def compute(self) -> dict[str, float]:
        if not self.tasks:
            return {}
        if self.count == 0:
            raise ValueError("no sample to score")
        accuracy = 100.0 * self.correct.double() / self.count
        return {f"{task}/accuracy": float(v) for task, v in zip(self.tasks, accuracy, strict=True)}
