r"""Normalized Entropy (He et al. 2014, "Practical Lessons from Predicting Clicks on Ads at Facebook").

.. math:: \mathrm{NE} = \frac{-\frac1N \sum_i y_i \log p_i + (1 - y_i)\log(1 - p_i)}
                             {-(\bar p \log \bar p + (1 - \bar p) \log(1 - \bar p))}

where :math:`\bar p` is the base rate (by default the mean label of the scored
set). NE < 1 beats predicting the base rate; lower is better. Labels may be soft
(a teacher's probabilities), which makes the numerator a cross entropy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from .base import Metric, MetricSpec

_CLIP = 1e-7


def binary_entropy(rate: float) -> float:
    """:math:`-(p \\log p + (1-p) \\log(1-p))` in nats."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"the base rate must lie strictly between 0 and 1, got {rate}")
    return -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def log_loss(probabilities: Tensor, labels: Tensor) -> float:
    """Mean binary cross entropy (nats), probabilities clipped to ``[1e-7, 1 - 1e-7]``."""
    p = probabilities.double().clamp(_CLIP, 1 - _CLIP)
    y = labels.double()
    return float(-(y * p.log() + (1 - y) * (1 - p).log()).mean())


def normalized_entropy(probabilities: Tensor, labels: Tensor, base_rate: float | None = None) -> float:
    """NE of predicted probabilities against (possibly soft) labels; lower is better."""
    if probabilities.shape != labels.shape:
        raise ValueError(
            f"probabilities {tuple(probabilities.shape)} and labels {tuple(labels.shape)} differ"
        )
    if labels.numel() == 0:
        raise ValueError("no sample to score")
    rate = float(labels.double().mean()) if base_rate is None else base_rate
    return log_loss(probabilities, labels) / binary_entropy(rate)


def ne_gain(ne: float, ne_baseline: float) -> float:
    """Relative NE improvement over a baseline (LS), in percent: ``100 (NE_b - NE) / NE_b``; > 0 is better."""
    if ne_baseline <= 0:
        raise ValueError(f"the baseline NE must be > 0, got {ne_baseline}")
    return 100.0 * (ne_baseline - ne) / ne_baseline


class NormalizedEntropy(Metric):
    """NE of ``sigmoid(outputs[task])`` against ``targets[task]``, where ``targets[mask] > 0`` if given."""

    def __init__(self, task: str, mask: str | None = None) -> None:
        self.task, self.mask = task, mask
        self.probabilities: list[Tensor] = []
        self.labels: list[Tensor] = []

    @property
    def specs(self) -> tuple[MetricSpec, ...]:
        return (MetricSpec(f"{self.task}/ne", self.task, False),)

    def update(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> None:
        probabilities = torch.sigmoid(outputs[self.task].detach().double()).cpu()
        labels = targets[self.task].double().cpu()
        if self.mask is not None:
            keep = targets[self.mask].cpu() > 0
            probabilities, labels = probabilities[keep], labels[keep]
        self.probabilities.append(probabilities)
        self.labels.append(labels)

    def compute(self) -> dict[str, float]:
        if not self.labels:
            raise ValueError("no sample to score")
        ne = normalized_entropy(torch.cat(self.probabilities), torch.cat(self.labels))
        return {f"{self.task}/ne": ne}
