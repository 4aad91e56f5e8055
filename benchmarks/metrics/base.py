"""The metric interface: accumulate over batches, then report named scalars."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class MetricSpec:
    """One reported number: its name (``task/metric``), its task and its direction."""

    name: str
    task: str
    higher_is_better: bool


class Metric(ABC):
    """Accumulates one or more numbers over a test set, batch by batch.

    ``update`` receives the model's whole output dict and the batch's whole target
    dict (a metric may need several entries, e.g. a mask); it must not keep the graph.
    """

    @property
    @abstractmethod
    def specs(self) -> tuple[MetricSpec, ...]:
        """What :meth:`compute` reports, in order."""

    @abstractmethod
    def update(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> None:
        """Add one batch."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The numbers named by :attr:`specs` over every batch added so far."""


class Evaluator:
    """Several metrics fed the same batches; ``compute`` merges their reports."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)
        names = [spec.name for metric in self.metrics for spec in metric.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be unique, got {names}")

    @property
    def specs(self) -> tuple[MetricSpec, ...]:
        return tuple(spec for metric in self.metrics for spec in metric.specs)

    def update(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> None:
        for metric in self.metrics:
            metric.update(outputs, targets)

    def compute(self) -> dict[str, float]:
        report: dict[str, float] = {}
        for metric in self.metrics:
            report.update(metric.compute())
        return report
