"""The dense-prediction metrics of the NYUv2/Cityscapes tables (MTAN, Nash-MTL, FAMO, MARIGOLD).

* segmentation: mean IoU over classes that occur (in labels or predictions) and
  pixel accuracy, from one confusion matrix over the whole test set, in percent;
  label ``-1`` is ignored;
* depth: mean absolute error and mean relative error ``|d̂ - d| / d`` over valid
  pixels (``d != 0``) of the whole test set;
* normals: the angle between predicted and true normals (degrees) over valid pixels
  (true normal ``!= 0``): mean, median, and percent of pixels within 11.25°, 22.5°, 30°.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Metric, MetricSpec

ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)


def confusion_matrix(predicted: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``[C, C]`` counts, rows true class, columns predicted class; labels ``< 0`` ignored."""
    valid = labels >= 0
    index = labels[valid].long() * num_classes + predicted[valid].long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_scores(confusion: Tensor) -> dict[str, float]:
    """``miou`` (mean IoU over classes present in labels or predictions) and ``pixel_acc``, in percent."""
    confusion = confusion.double()
    true_positive = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    present = union > 0
    total = confusion.sum()
    if total == 0:
        raise ValueError("no labelled pixel to score")
    return {
        "miou": 100.0 * float((true_positive[present] / union[present]).mean()),
        "pixel_acc": 100.0 * float(true_positive.sum() / total),
    }


def normal_angles(prediction: Tensor, normals: Tensor) -> Tensor:
    """Angles in degrees between (normalised) predicted and true normals at valid pixels, flat."""
    valid = normals.abs().sum(dim=1) != 0
    cosine = (F.normalize(prediction.double(), dim=1) * normals.double()).sum(dim=1)
    return torch.rad2deg(torch.acos(cosine[valid].clamp(-1.0, 1.0)))


class SegmentationMetric(Metric):
    """mIoU and pixel accuracy of logits ``[B, C, H, W]`` against labels ``[B, H, W]``."""

    def __init__(self, num_classes: int, task: str = "segmentation") -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.task, self.num_classes = task, num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)

    @property
    def specs(self) -> tuple[MetricSpec, ...]:
        return (
            MetricSpec(f"{self.task}/miou", self.task, True),
            MetricSpec(f"{self.task}/pixel_acc", self.task, True),
        )

    def update(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> None:
        predicted = outputs[self.task].detach().argmax(dim=1)
        self.confusion += confusion_matrix(predicted.cpu(), targets[self.task].cpu(), self.num_classes)

    def compute(self) -> dict[str, float]:
        return {f"{self.task}/{name}": value for name, value in segmentation_scores(self.confusion).items()}


class DepthMetric(Metric):
    """Absolute and relative depth error of predictions ``[B, 1, H, W]`` over valid pixels."""

    def __init__(self, task: str = "depth") -> None:
        self.task = task
        self.absolute, self.relative, self.count = 0.0, 0.0, 0

    @property
    def specs(self) -> tuple[MetricSpec, ...]:
        return (
            MetricSpec(f"{self.task}/abs_err", self.task, False),
            MetricSpec(f"{self.task}/rel_err", self.task, False),
        )

    def update(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> None:
        depth = targets[self.task].double()
        valid = depth != 0
        error = (outputs[self.task].detach().double() - depth).abs()[valid]
        self.absolute += float(error.sum())
        self.relative += float((error / depth[valid].abs()).sum())
        self.count += int(valid.sum())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no valid depth pixel to score")
        return {
            f"{self.task}/abs_err": self.absolute / self.count,
            f"{self.task}/rel_err": self.relative / self.count,
        }


class NormalsMetric(Metric):
    """Mean and median angle error (degrees) and percent of pixels within each threshold."""

    def __init__(self, task: str = "normals") -> None:
        self.task = task
        self.angles: list[Tensor] = []

    @property
    def specs(self) -> tuple[MetricSpec, ...]:
        lower = (
            MetricSpec(f"{self.task}/mean_angle", self.task, False),
            MetricSpec(f"{self.task}/median_angle", self.task, False),
        )
        return lower + tuple(
            MetricSpec(f"{self.task}/within_{t:g}", self.task, True) for t in ANGLE_THRESHOLDS
        )

    def update(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> None:
        self.angles.append(normal_angles(outputs[self.task].detach(), targets[self.task]).cpu())

    def compute(self) -> dict[str, float]:
        angles = torch.cat(self.angles) if self.angles else torch.empty(0)
        if angles.numel() == 0:
            raise ValueError("no valid normal pixel to score")
        report = {
            f"{self.task}/mean_angle": float(angles.mean()),
            f"{self.task}/median_angle": float(np.median(angles.numpy())),
        }
        for threshold in ANGLE_THRESHOLDS:
            report[f"{self.task}/within_{threshold:g}"] = 100.0 * float((angles < threshold).double().mean())
        return report
