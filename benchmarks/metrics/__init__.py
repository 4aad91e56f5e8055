"""Benchmark metrics: per-task accumulators and the cross-method summaries (Δm%, mean rank, NE gain)."""

from .base import Evaluator, Metric, MetricSpec
from .classification import Accuracy, ColumnwiseAccuracy, ColumnwiseMSE
from .entropy import NormalizedEntropy, binary_entropy, log_loss, ne_gain, normalized_entropy
from .regression import RSquared
from .scenes import (
    ANGLE_THRESHOLDS,
    DepthMetric,
    NormalsMetric,
    SegmentationMetric,
    confusion_matrix,
    normal_angles,
    segmentation_scores,
)
from .summary import delta_m, mean_rank

__all__ = [
    "ANGLE_THRESHOLDS",
    "Accuracy",
    "ColumnwiseAccuracy",
    "ColumnwiseMSE",
    "DepthMetric",
    "Evaluator",
    "Metric",
    "MetricSpec",
    "NormalizedEntropy",
    "NormalsMetric",
    "RSquared",
    "SegmentationMetric",
    "binary_entropy",
    "confusion_matrix",
    "delta_m",
    "log_loss",
    "mean_rank",
    "ne_gain",
    "normal_angles",
    "normalized_entropy",
    "segmentation_scores",
]
