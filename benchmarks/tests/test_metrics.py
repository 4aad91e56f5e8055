"""Metrics against hand-computed values, batch accumulation, and the published Δm% of LS on NYUv2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.metrics import (
    Accuracy,
    ColumnwiseAccuracy,
    ColumnwiseMSE,
    DepthMetric,
    Evaluator,
    NormalizedEntropy,
    NormalsMetric,
    RSquared,
    SegmentationMetric,
    binary_entropy,
    delta_m,
    mean_rank,
    ne_gain,
    normalized_entropy,
)


def _one_hot_logits(predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits ``[B, C, H, W]`` whose arg-max is ``predicted`` ``[B, H, W]``."""
    return torch.nn.functional.one_hot(predicted, num_classes).permute(0, 3, 1, 2).float()


def test_segmentation_miou_and_pixel_accuracy_by_hand() -> None:
    predicted = torch.tensor([[[0, 1], [1, 1]]])
    labels = torch.tensor([[[0, 1], [0, -1]]])
    metric = SegmentationMetric(num_classes=3)
    metric.update({"segmentation": _one_hot_logits(predicted, 3)}, {"segmentation": labels})
    scores = metric.compute()
    # Valid pixels: (0→0), (1→1), (0→1). IoU0 = 1/2, IoU1 = 1/2; class 2 never occurs and is left out.
    assert scores["segmentation/miou"] == pytest.approx(50.0)
    assert scores["segmentation/pixel_acc"] == pytest.approx(200.0 / 3.0)
    np.testing.assert_array_equal(metric.confusion.numpy(), [[1, 1, 0], [0, 1, 0], [0, 0, 0]])


def test_segmentation_class_only_predicted_counts_with_iou_zero() -> None:
    metric = SegmentationMetric(num_classes=3)
    predicted, labels = torch.tensor([[[2, 1]]]), torch.tensor([[[1, 1]]])
    metric.update({"segmentation": _one_hot_logits(predicted, 3)}, {"segmentation": labels})
    # IoU1 = 1/2, IoU2 = 0 (a false positive), class 0 absent.
    assert metric.compute()["segmentation/miou"] == pytest.approx(25.0)


def test_depth_errors_by_hand_skip_invalid_pixels() -> None:
    metric = DepthMetric()
    prediction = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    depth = torch.tensor([1.0, 4.0, 0.0, 2.0]).reshape(1, 1, 2, 2)
    metric.update({"depth": prediction}, {"depth": depth})
    scores = metric.compute()
    assert scores["depth/abs_err"] == pytest.approx(4.0 / 3.0)
    assert scores["depth/rel_err"] == pytest.approx((0.0 + 0.5 + 1.0) / 3.0)


def _normal_at(angle_degrees: float) -> list[float]:
    angle = math.radians(angle_degrees)
    return [math.sin(angle), 0.0, math.cos(angle)]


def test_normal_angle_statistics_by_hand() -> None:
    angles = [0.0, 90.0, 45.0, 20.0]
    truth = torch.tensor([[0.0, 0.0, 1.0]] * 4 + [[0.0, 0.0, 0.0]])  # the last pixel is invalid
    prediction = torch.tensor([_normal_at(a) for a in angles] + [[1.0, 0.0, 0.0]])
    prediction[1] *= 3.0  # the metric normalises predictions
    to_image = lambda v: v.T.reshape(1, 3, 1, 5)  # noqa: E731
    metric = NormalsMetric()
    metric.update({"normals": to_image(prediction)}, {"normals": to_image(truth)})
    scores = metric.compute()
    assert scores["normals/mean_angle"] == pytest.approx(38.75)
    assert scores["normals/median_angle"] == pytest.approx(32.5)
    assert scores["normals/within_11.25"] == pytest.approx(25.0)
    assert scores["normals/within_22.5"] == pytest.approx(50.0)
    assert scores["normals/within_30"] == pytest.approx(50.0)


def test_dense_metrics_accumulate_over_batches_like_one_batch() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, 5, 5, generator=generator)
    labels = torch.randint(-1, 4, (6, 5, 5), generator=generator)
    depth_prediction, depth = (
        torch.rand(6, 1, 5, 5, generator=generator),
        torch.rand(6, 1, 5, 5, generator=generator),
    )
    depth[depth < 0.2] = 0.0
    normals_prediction = torch.randn(6, 3, 5, 5, generator=generator)
    normals = torch.nn.functional.normalize(torch.randn(6, 3, 5, 5, generator=generator), dim=1)
    outputs = {"segmentation": logits, "depth": depth_prediction, "normals": normals_prediction}
    targets = {"segmentation": labels, "depth": depth, "normals": normals}

    def evaluator() -> Evaluator:
        return Evaluator([SegmentationMetric(4), DepthMetric(), NormalsMetric()])

    whole, parts = evaluator(), evaluator()
    whole.update(outputs, targets)
    for index in (slice(0, 2), slice(2, 3), slice(3, 6)):
        parts.update({k: v[index] for k, v in outputs.items()}, {k: v[index] for k, v in targets.items()})
    expected = whole.compute()
    assert parts.compute() == pytest.approx(expected)
    assert list(expected) == [spec.name for spec in whole.specs]


def test_accuracy_and_columnwise_metrics_by_hand() -> None:
    accuracy = Accuracy("left")
    accuracy.update(
        {"left": torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])}, {"left": torch.tensor([1, 1, 1])}
    )
    assert accuracy.compute() == {"left/accuracy": pytest.approx(200.0 / 3.0)}
    mse = ColumnwiseMSE(["a", "b"])
    mse.update(
        {"regression": torch.tensor([[1.0, 0.0], [3.0, 0.0]])},
        {"regression": torch.tensor([[0.0, 2.0], [1.0, 0.0]])},
    )
    assert mse.compute() == {"a/mse": pytest.approx(2.5), "b/mse": pytest.approx(2.0)}
    columns = ColumnwiseAccuracy(["c0", "c1"])
    logits = torch.tensor(
        [[[2.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]]
    )  # predictions [[0, 1], [1, 1]]
    columns.update({"classification": logits}, {"classification": torch.tensor([[0, 0], [0, 1]])})
    assert columns.compute() == {"c0/accuracy": pytest.approx(50.0), "c1/accuracy": pytest.approx(50.0)}
    assert ColumnwiseMSE([]).compute() == {}


def test_r_squared_by_hand_over_batches_and_far_from_zero() -> None:
    # y = [1, 2, 3, 6]: mean 3, total sum of squares 4 + 1 + 0 + 9 = 14; errors [1, 0, -1, 2]: 6
    prediction, target = torch.tensor([2.0, 2.0, 2.0, 8.0]), torch.tensor([1.0, 2.0, 3.0, 6.0])
    metric = RSquared("y")
    metric.update({"y": prediction[:1]}, {"y": target[:1]})
    metric.update({"y": prediction[1:]}, {"y": target[1:]})
    assert metric.compute() == {"y/r2": pytest.approx(1.0 - 6.0 / 14.0)}
    # Targets in the thousands with a spread of 1e-3: the shifted sums stay exact.
    far = RSquared("y")
    far.update({"y": 2000.0 + 1e-3 * prediction.double()}, {"y": 2000.0 + 1e-3 * target.double()})
    assert far.compute()["y/r2"] == pytest.approx(1.0 - 6.0 / 14.0, rel=1e-6)
    mean = RSquared("y")
    mean.update({"y": torch.full((4,), 3.0)}, {"y": target})
    assert mean.compute() == {"y/r2": 0.0}
    constant = RSquared("y")
    constant.update({"y": target}, {"y": torch.ones(4)})
    with pytest.raises(ValueError, match="constant"):
        constant.compute()
    with pytest.raises(ValueError, match="no sample"):
        RSquared("y").compute()


def test_normalized_entropy_by_hand() -> None:
    labels = torch.tensor([1.0, 0.0, 0.0, 0.0])
    half = torch.full((4,), 0.5)
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert normalized_entropy(half, labels) == pytest.approx(math.log(2.0) / entropy)
    assert binary_entropy(0.25) == pytest.approx(entropy)
    assert normalized_entropy(half, labels, base_rate=0.5) == pytest.approx(1.0)
    assert ne_gain(0.9, 1.0) == pytest.approx(10.0)
    assert ne_gain(1.1, 1.0) == pytest.approx(-10.0)
    with pytest.raises(ValueError, match="base rate"):
        normalized_entropy(half, torch.zeros(4))


@given(st.lists(st.booleans(), min_size=2, max_size=40).filter(lambda ys: 0 < sum(ys) < len(ys)))
def test_predicting_the_base_rate_gives_ne_one(labels_list: list[bool]) -> None:
    labels = torch.tensor(labels_list, dtype=torch.float64)
    rate = labels.mean()
    assert normalized_entropy(torch.full_like(labels, float(rate)), labels) == pytest.approx(1.0, rel=1e-9)


def test_masked_ne_scores_only_clicked_impressions() -> None:
    metric = NormalizedEntropy("conv_given_click", mask="click")
    logits = torch.tensor([0.0, 2.0, -2.0, 5.0])
    metric.update(
        {"conv_given_click": logits},
        {"conv_given_click": torch.tensor([1.0, 1.0, 0.0, 0.0]), "click": torch.tensor([1.0, 0.0, 1.0, 0.0])},
    )
    probabilities = torch.sigmoid(torch.tensor([0.0, -2.0]))
    expected = normalized_entropy(probabilities, torch.tensor([1.0, 0.0]))
    assert metric.compute()["conv_given_click/ne"] == pytest.approx(expected)


def test_delta_m_by_hand_and_against_the_published_nyuv2_value() -> None:
    higher = {"acc": True, "err": False}
    assert delta_m({"acc": 50.0, "err": 2.0}, {"acc": 40.0, "err": 4.0}, higher) == pytest.approx(-37.5)
    assert delta_m({"acc": 40.0, "err": 4.0}, {"acc": 40.0, "err": 4.0}, higher) == 0.0
    # NYUv2 (Navon et al. 2022, Table 2): STL and LS rows; the paper reports Δm% = 5.59 for LS.
    names = ["miou", "pix", "abs", "rel", "mean", "median", "11.25", "22.5", "30"]
    directions = dict(zip(names, [True, True, False, False, False, False, True, True, True], strict=True))
    stl = [38.30, 63.76, 0.6754, 0.2780, 25.01, 19.21, 30.14, 57.20, 69.15]
    ls = [39.29, 65.33, 0.5493, 0.2263, 28.15, 23.96, 22.09, 47.50, 61.08]
    value = delta_m(dict(zip(names, ls, strict=True)), dict(zip(names, stl, strict=True)), directions)
    assert round(value, 2) == 5.59
    with pytest.raises(ValueError, match="missing"):
        delta_m({"acc": 1.0}, {"acc": 1.0, "err": 1.0}, higher)


def test_mean_rank_by_hand_with_ties() -> None:
    results = {
        "A": {"acc": 90.0, "err": 1.0},
        "B": {"acc": 80.0, "err": 1.0},
        "C": {"acc": 70.0, "err": 3.0},
    }
    ranks = mean_rank(results, {"acc": True, "err": False})
    # acc ranks 1, 2, 3; err ranks 1.5, 1.5, 3.
    assert ranks == {"A": pytest.approx(1.25), "B": pytest.approx(1.75), "C": pytest.approx(3.0)}
    with pytest.raises(ValueError, match="missing"):
        mean_rank({"A": {"acc": 1.0}, "B": {}}, {"acc": True})
