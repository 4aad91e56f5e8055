"""ManyTasks, Scales and Ads generators; the cache; the batch iterator."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.cache import CACHE_ENV, cache_root, cached_arrays
from benchmarks.data.ads import AdsConfig, generate_ads, load_ads
from benchmarks.data.manytasks import ManyTasksConfig, generate_manytasks, load_manytasks, ridge_signals
from benchmarks.data.scales import ScalesConfig, ScaleTask, generate_scales
from benchmarks.datasets import TensorDictDataset, iterate_batches
from benchmarks.metrics import normalized_entropy
from benchmarks.suites import ManyTasksSuite, ManyTasksSuiteConfig

MANY = ManyTasksConfig(num_tasks=12, num_train=3000, num_test=10000, classification_fraction=0.25)
SCALES = ScalesConfig(num_train=10000, num_test=10000)
ADS = AdsConfig(
    num_users=60, num_ads=30, num_categories=5, num_sites=6, num_train=3000, num_test=1000,
    num_teacher_extra=3000, teacher_epochs=2, teacher_batch_size=256, teacher_hidden=(32,),
)  # fmt: skip


def _assert_deterministic(generate, config) -> None:  # type: ignore[no-untyped-def]
    first, again, other = generate(config, 0, False), generate(config, 0, False), generate(config, 1, False)
    assert first.keys() == again.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    changed = [key for key in first if not np.array_equal(first[key], other[key])]
    assert len(changed) >= len(first) - 1, f"a new seed left {set(first) - set(changed)} unchanged"


@pytest.mark.parametrize(
    ("generate", "config"),
    [(generate_manytasks, MANY), (generate_scales, SCALES)],
    ids=["manytasks", "scales"],
)
def test_generators_are_deterministic(generate, config) -> None:  # type: ignore[no-untyped-def]
    _assert_deterministic(generate, config)


def _standardized_signal(arrays: dict[str, np.ndarray], split: str) -> np.ndarray:
    """The noiseless signal ``g̃`` of every task, rebuilt from the inputs and the ``meta/*`` facts."""
    raw = ridge_signals(
        arrays[f"{split}/x"].astype(np.float64),
        arrays["meta/direction"],
        arrays["meta/alpha"],
        arrays["meta/beta"],
    )
    return (raw - arrays["meta/signal_mean"]) / arrays["meta/signal_std"]


def _assert_label_noise(clean: np.ndarray, labels: np.ndarray, num_classes: int, rate: float) -> None:
    """Labels differ from the clean class at ``rate``, uniformly over the other classes, and stay balanced."""
    flipped = labels != clean
    assert abs(flipped.mean() - rate) < 0.02, flipped.mean()
    shifts = ((labels - clean) % num_classes)[flipped]
    np.testing.assert_allclose(
        np.bincount(shifts, minlength=num_classes)[1:] / len(shifts), 1 / (num_classes - 1), atol=0.05
    )
    np.testing.assert_allclose(
        np.bincount(labels.ravel(), minlength=num_classes) / labels.size, 1 / num_classes, atol=0.03
    )


def test_manytasks_targets_follow_the_construction_and_its_noise_floor() -> None:
    arrays = generate_manytasks(MANY, 0, False)
    m, regression = MANY.num_tasks, MANY.num_regression
    assert arrays["train/x"].shape == (3000, MANY.input_dim)
    assert arrays["train/regression"].shape == (3000, regression)
    assert arrays["train/classification"].shape == (3000, MANY.num_classification)
    directions, conflicting = arrays["meta/direction"], arrays["meta/conflicting"]
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0)
    assert conflicting.sum() == round(MANY.conflict_fraction * m)
    cosine = directions @ directions.T
    same = conflicting[:, None] == conflicting[None, :]
    off_diagonal = ~np.eye(m, dtype=bool)
    # c = 0.8: aligned pairs have cosine c^2 ± (1 - c^2) > 0, opposed pairs -c^2 ± (1 - c^2) < 0.
    assert np.all(cosine[same & off_diagonal] > 0.28 - 1e-9)
    assert np.all(cosine[~same] < -0.28 + 1e-9)
    for split in ("train", "test"):
        signal = _standardized_signal(arrays, split)
        if split == "train":
            np.testing.assert_allclose(signal.mean(axis=0), 0.0, atol=1e-6)  # x is stored as float32
            np.testing.assert_allclose(signal.std(axis=0), 1.0, rtol=1e-6)
        # The floor: the noise left by the true signal has the declared variance σ² (the best MSE) ...
        residual = arrays[f"{split}/regression"] - signal[:, :regression]
        np.testing.assert_allclose(residual.var(axis=0), MANY.noise_std**2, rtol=0.1)
        np.testing.assert_allclose(residual.mean(axis=0), 0.0, atol=0.05)
        # ... and the clean class, the best guess, is wrong at the declared rate η.
        clean = (signal[:, regression:, None] > arrays["meta/thresholds"].T[None]).sum(axis=2)
        labels = arrays[f"{split}/classification"]
        _assert_label_noise(clean, labels, MANY.num_classes, MANY.label_noise)
    suite = ManyTasksSuite(ManyTasksSuiteConfig(data=MANY))
    assert suite.bayes_scores() == {
        **{f"reg{k:03d}/mse": 0.25 for k in range(regression)},
        **{f"cls{k:03d}/accuracy": pytest.approx(90.0) for k in range(MANY.num_classification)},
    }


def test_manytasks_counts_and_checks_its_settings() -> None:
    assert ManyTasksConfig(num_tasks=2).num_conflicting == 1  # one aligned, one conflicting
    assert ManyTasksConfig(num_tasks=64).num_conflicting == 16
    assert ManyTasksConfig(num_tasks=2, conflict_fraction=0.0).num_conflicting == 0
    assert ManyTasksConfig(num_tasks=1).num_conflicting == 0
    with pytest.raises(ValueError, match="conflict_fraction"):
        ManyTasksConfig(conflict_fraction=0.75)
    with pytest.raises(ValueError, match="noise floor"):
        ManyTasksConfig(noise_std=0.0)
    with pytest.raises(ValueError, match=r"label_noise must lie in \(0, 1 - 1/num_classes\) = \(0, 0.5\)"):
        ManyTasksConfig(num_classes=2, label_noise=0.5)
    with pytest.raises(ValueError, match="label_noise"):
        ManyTasksConfig(label_noise=0.0)


def test_scales_targets_follow_their_units_and_noise_floors() -> None:
    arrays = generate_scales(SCALES, 0, False)
    tasks = SCALES.tasks
    assert [task.name for task in tasks] == ["price", "minutes", "segment", "click", "share", "growth"]
    directions = arrays["meta/direction"]
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0)
    sign = np.where([task.conflicting for task in tasks], -1.0, 1.0)
    cosine = directions @ directions.T
    # c = 0.8: tasks of the same sign have cosine > 0.28, of opposite signs < -0.28.
    assert np.all((cosine * np.outer(sign, sign))[~np.eye(len(tasks), dtype=bool)] > 0.28 - 1e-9)
    for split in ("train", "test"):
        signal = _standardized_signal(arrays, split)
        for index, task in enumerate(tasks):
            target = arrays[f"{split}/{task.name}"]
            assert target.shape == (len(arrays[f"{split}/x"]),)
            if task.is_regression:
                assert target.dtype == np.float32
                # In natural units: the noise left by the true signal is (r s_k)², the best MSE.
                residual = target.astype(np.float64) - (task.offset + task.scale * signal[:, index])
                np.testing.assert_allclose(residual.var(), (SCALES.noise_std * task.scale) ** 2, rtol=0.1)
                assert abs(target.mean() - task.offset) < 0.1 * task.scale
            else:
                assert target.dtype == np.int64
                thresholds = arrays[f"meta/thresholds/{task.name}"]
                clean = (signal[:, index : index + 1, None] > thresholds.T[None]).sum(axis=2)
                _assert_label_noise(clean, target[:, None], task.num_classes, SCALES.label_noise)
    with pytest.raises(ValueError, match="unique names"):
        ScalesConfig(tasks=(ScaleTask("a"), ScaleTask("a", num_classes=2)))
    with pytest.raises(ValueError, match="num_classes must be 0"):
        ScaleTask("a", num_classes=1)
    with pytest.raises(ValueError, match="label_noise"):
        ScalesConfig(label_noise=0.6)


def test_manytasks_with_only_regression_has_empty_classification(tmp_path: Path) -> None:
    splits, meta = load_manytasks(ManyTasksConfig(num_tasks=3, num_train=10, num_test=5), cache_dir=tmp_path)
    _, targets = splits.train[0]
    assert targets["regression"].shape == (3,) and targets["classification"].shape == (0,)
    assert meta["meta/direction"].shape == (3, 16)


def test_ads_labels_rates_teacher_and_determinism(tmp_path: Path) -> None:
    arrays = generate_ads(ADS, 0, False)
    again = load_ads(ADS, seed=0, cache_dir=tmp_path, progress=False)
    for split, data in zip(("train", "test"), again, strict=True):
        assert isinstance(data, TensorDictDataset)
        np.testing.assert_array_equal(data.inputs.numpy(), arrays[f"{split}/inputs"])
        for task, value in data.targets.items():
            np.testing.assert_array_equal(value.numpy(), arrays[f"{split}/{task}"])
    other = generate_ads(ADS, 1, False)
    assert not np.array_equal(arrays["train/click"], other["train/click"])
    assert not np.array_equal(arrays["train/distill"], other["train/distill"])
    inputs = arrays["train/inputs"]
    assert inputs.shape == (3000, 4 + ADS.num_dense)
    ids = inputs[:, :4].astype(np.int64)
    np.testing.assert_array_equal(ids, inputs[:, :4])  # ids are whole numbers
    assert np.all(ids.min(axis=0) >= 0) and np.all(ids.max(axis=0) < np.array(ADS.vocab_sizes))
    click, given, conv = (arrays[f"train/{task}"] for task in ("click", "conv_given_click", "conv"))
    assert set(np.unique(click)) <= {0.0, 1.0} and set(np.unique(given)) <= {0.0, 1.0}
    np.testing.assert_array_equal(conv, click * given)
    # Rates are calibrated on all impressions; 3000 samples give a standard error of about 0.0055.
    assert abs(click.mean() - ADS.click_rate) < 0.03
    assert abs(given.mean() - ADS.conversion_rate) < 0.04
    distill = torch.from_numpy(arrays["test/distill"])
    assert float(distill.min()) > 0.0 and float(distill.max()) < 1.0
    # The teacher (privileged features, more data) predicts test clicks better than the base rate.
    assert normalized_entropy(distill, torch.from_numpy(arrays["test/click"])) < 0.97


@pytest.mark.parametrize("bias", [-0.5, float("nan")])
def test_ads_config_refuses_a_bad_teacher_bias(bias: float) -> None:
    with pytest.raises(ValueError, match="teacher_bias must be >= 0"):
        AdsConfig(teacher_bias=bias)


def test_ads_teacher_bias_is_an_offset_per_user_and_per_ad() -> None:
    """The biased target's logit is the unbiased one plus u[user] + a[ad]: exactly additive in
    the two ids (the same teacher, same impressions), with the offsets' standard deviation."""
    bias = ADS.teacher_bias
    assert bias > 0
    plain = generate_ads(dataclasses.replace(ADS, teacher_bias=0.0), 0, False)
    biased = generate_ads(ADS, 0, False)
    for key in plain:
        if not key.endswith("distill"):
            np.testing.assert_array_equal(plain[key], biased[key])
    logit = lambda p: np.log(p.astype(np.float64)) - np.log1p(-p.astype(np.float64))  # noqa: E731
    shift = logit(biased["train/distill"]) - logit(plain["train/distill"])
    users, ads = (biased["train/inputs"][:, i].astype(np.int64) for i in (0, 1))
    # least squares on one-hot user and ad columns fits the shift up to float32 round-off
    design = np.zeros((len(shift), ADS.num_users + ADS.num_ads))
    design[np.arange(len(shift)), users] = 1.0
    design[np.arange(len(shift)), ADS.num_users + ads] = 1.0
    fit, *_ = np.linalg.lstsq(design, shift, rcond=None)
    assert np.abs(design @ fit - shift).max() < 1e-3
    assert 0.6 * bias * np.sqrt(2) < shift.std() < 1.4 * bias * np.sqrt(2)


def test_cache_builds_once_and_honours_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"a": np.arange(3)}

    first = cached_arrays("thing", {"n": 3}, build, tmp_path)
    second = cached_arrays("thing", {"n": 3}, build, tmp_path)
    np.testing.assert_array_equal(first["a"], second["a"])
    assert len(calls) == 1
    cached_arrays("thing", {"n": 4}, build, tmp_path)
    assert len(calls) == 2
    cached_arrays("thing", {"n": 3}, build, tmp_path, use_cache=False)
    assert len(calls) == 3
    assert not list(tmp_path.glob("*.tmp.npz"))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv(CACHE_ENV)
    assert cache_root() == Path.home() / ".cache" / "bilevel_mtl"


def test_iterate_batches_covers_every_sample_once_and_replays_with_the_seed() -> None:
    data = TensorDictDataset(torch.arange(10.0)[:, None], {"y": torch.arange(10)})
    batches = list(iterate_batches(data, 4, shuffle=True, seed=3))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    seen = torch.cat([b[1]["y"] for b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    torch.testing.assert_close(torch.cat([b[0][:, 0] for b in batches]), seen.float())
    replay = torch.cat([b[1]["y"] for b in iterate_batches(data, 4, shuffle=True, seed=3)])
    torch.testing.assert_close(seen, replay)
    assert [len(b[0]) for b in iterate_batches(data, 4, drop_last=True)] == [4, 4]
    # Any torch Dataset works through a DataLoader with the same batch shape.
    generic = torch.utils.data.Subset(data, list(range(10)))
    inputs, targets = next(iter(iterate_batches(generic, 4)))
    assert inputs.shape == (4, 1) and targets["y"].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="batch_size"):
        next(iterate_batches(data, 0))
    with pytest.raises(ValueError, match="samples"):
        TensorDictDataset(torch.zeros(3), {"y": torch.zeros(4)})
