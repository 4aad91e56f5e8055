r"""ManyTasks: ``m`` related tasks on shared Gaussian inputs, some aligned, some conflicting, each noisy.

The construction extends the synthetic generator of Ma et al. (2018, MMoE) to many
tasks. Inputs :math:`x \sim \mathcal N(0, I_d)`. A base direction :math:`u` and,
for each task, a random unit :math:`v_k \perp u` give the task direction

.. math:: w_k = s_k\,c\,u + \sqrt{1 - c^2}\, v_k, \qquad s_k \in \{+1, -1\},

so two aligned tasks (same sign) have direction cosine about :math:`c^2` and an
aligned and a conflicting task (:math:`s_k = -1`) about :math:`-c^2`. With
:math:`z_k = w_k^\top x` and waves :math:`\alpha_j, \beta_j \sim \mathcal N(0, 1)`
shared by all tasks, the raw signal is

.. math:: g_k(x) = z_k + \sum_{j=1}^{J} \sin(\alpha_j z_k + \beta_j),

which is not odd in :math:`z_k`: a conflicting task needs other features of (nearly) the
same projection than an aligned one (:math:`\sin(-\alpha z + \beta) = -\sin(\alpha z - \beta)`),
so the two compete for the shared trunk. The signal :math:`\tilde g_k` is :math:`g_k`
standardised with the training split's mean and standard deviation. Every task is noisy,
with a floor known in closed form:

* regression: :math:`y_k = \tilde g_k(x) + \sigma\epsilon`, :math:`\epsilon \sim \mathcal N(0, 1)`:
  the best mean squared error is :math:`\sigma^2` (predicting :math:`\tilde g_k`), predicting
  the mean gives about :math:`1 + \sigma^2`;
* classification: the clean class bins :math:`\tilde g_k` at the training split's quantiles
  into :math:`C` balanced classes; with probability :math:`\eta` the label is replaced by one
  of the other :math:`C - 1` classes drawn uniformly, so the best accuracy is :math:`1 - \eta`
  (predicting the clean class; :math:`\eta < 1 - 1/C`) and the majority class about :math:`1/C`.

Tasks ``0 .. m_r-1`` are regressions and ``m_r .. m-1`` classifications
(``m_c = round(classification_fraction · m)``); which tasks conflict is drawn at random.
The Scales generator (:mod:`benchmarks.data.scales`) uses the same construction.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..cache import Arrays, cached_arrays
from ..datasets import Splits, TensorDictDataset

GENERATOR_VERSION = 2
"""Bumped whenever the generated data change (part of the cache key of ManyTasks and Scales)."""


@dataclass(frozen=True)
class ManyTasksConfig:
    """Number and kind of tasks, their relations and noise, and the split sizes."""

    num_tasks: int = 8
    input_dim: int = 16
    num_train: int = 4000
    num_test: int = 2000
    classification_fraction: float = 0.0
    num_classes: int = 3
    conflict_fraction: float = 0.25
    """Fraction of tasks whose direction points against the base direction (``s_k = -1``);
    at most 0.5, and at least one task of ``m >= 2`` conflicts when it is > 0."""
    alignment: float = 0.8
    """``c``: the cosine between a task direction and ``± u``."""
    num_waves: int = 5
    noise_std: float = 0.5
    """``σ``: the regression noise's standard deviation (the signal has unit variance)."""
    label_noise: float = 0.1
    """``η``: the probability that a label is replaced by another class."""

    def __post_init__(self) -> None:
        for name in ("num_tasks", "input_dim", "num_train", "num_test", "num_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.input_dim < 2:
            raise ValueError(
                f"input_dim must be >= 2 (a base direction and its complement), got {self.input_dim}"
            )
        if self.num_train < 2:
            raise ValueError(
                f"num_train must be >= 2 (the signal is standardised on it), got {self.num_train}"
            )
        for name in ("classification_fraction", "alignment"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if not 0.0 <= self.conflict_fraction <= 0.5:
            raise ValueError(f"conflict_fraction must lie in [0, 0.5], got {self.conflict_fraction}")
        if self.num_waves < 0 or self.noise_std <= 0:
            raise ValueError("num_waves must be >= 0 and noise_std > 0 (every task has a noise floor)")
        check_label_noise(self.label_noise, self.num_classes)

    @property
    def num_classification(self) -> int:
        return round(self.classification_fraction * self.num_tasks)

    @property
    def num_regression(self) -> int:
        return self.num_tasks - self.num_classification

    @property
    def num_conflicting(self) -> int:
        """``round(f · m)``, and at least 1 of ``m >= 2`` tasks when ``f > 0``."""
        if self.conflict_fraction == 0 or self.num_tasks < 2:
            return 0
        return max(1, round(self.conflict_fraction * self.num_tasks))


def check_label_noise(label_noise: float, num_classes: int) -> None:
    """``0 < η < 1 - 1/C``: every label is noisy and the clean class stays the most likely."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if not 0.0 < label_noise < 1.0 - 1.0 / num_classes:
        raise ValueError(
            f"label_noise must lie in (0, 1 - 1/num_classes) = (0, {1 - 1 / num_classes:g}), "
            f"got {label_noise}"
        )


def task_directions(
    rng: np.random.Generator, input_dim: int, conflicting: np.ndarray, alignment: float
) -> np.ndarray:
    """Unit task directions ``[m, d]``: ``w_k = s_k c u + sqrt(1 - c²) v_k`` (``s_k = -1``: conflicting)."""
    base = rng.normal(size=input_dim)
    base /= np.linalg.norm(base)
    other = rng.normal(size=(len(conflicting), input_dim))
    other -= np.outer(other @ base, base)
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    sign = np.where(conflicting, -1.0, 1.0)
    return sign[:, None] * alignment * base + math.sqrt(1.0 - alignment * alignment) * other


def ridge_signals(x: np.ndarray, directions: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Raw signals ``[N, m]``: ``g_k(x) = z_k + Σ_j sin(α_j z_k + β_j)`` with ``z = x Wᵀ``."""
    z = x @ directions.T
    return np.asarray(z + np.sin(z[:, :, None] * alpha + beta).sum(axis=2))


def class_thresholds(signal: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C - 1, m]`` quantiles of each column of ``signal`` that cut it into ``C`` balanced classes."""
    return np.asarray(np.quantile(signal, np.arange(1, num_classes) / num_classes, axis=0))


def noisy_labels(
    rng: np.random.Generator, signal: np.ndarray, thresholds: np.ndarray, label_noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """``(clean, noisy)`` labels ``[N, m]``: the bin of each column, and that bin replaced with
    probability ``η`` by one of the other ``C - 1`` classes drawn uniformly."""
    num_classes = len(thresholds) + 1
    clean = (signal[:, :, None] > thresholds.T[None]).sum(axis=2)
    shift = rng.integers(1, num_classes, size=clean.shape)
    flipped = rng.random(clean.shape) < label_noise
    return clean, np.where(flipped, (clean + shift) % num_classes, clean)


def generate_manytasks(config: ManyTasksConfig, seed: int, progress: bool = True) -> Arrays:
    """Both splits (``{split}/x``, ``{split}/regression``, ``{split}/classification``) and ``meta/*``."""
    rng = np.random.default_rng([seed, 11])
    conflicting = np.zeros(config.num_tasks, dtype=bool)
    conflicting[rng.permutation(config.num_tasks)[: config.num_conflicting]] = True
    directions = task_directions(rng, config.input_dim, conflicting, config.alignment)
    alpha, beta = rng.normal(size=config.num_waves), rng.normal(size=config.num_waves)
    arrays: Arrays = {
        "meta/direction": directions,
        "meta/conflicting": conflicting,
        "meta/alpha": alpha,
        "meta/beta": beta,
    }
    regression, classes = slice(0, config.num_regression), slice(config.num_regression, None)
    for split in tqdm(("train", "test"), desc="manytasks", disable=not progress, leave=False):
        size = config.num_train if split == "train" else config.num_test
        split_rng = np.random.default_rng([seed, 11, 0 if split == "train" else 1])
        x = split_rng.normal(size=(size, config.input_dim))
        raw = ridge_signals(x, directions, alpha, beta)
        if split == "train":
            arrays["meta/signal_mean"], arrays["meta/signal_std"] = raw.mean(axis=0), raw.std(axis=0)
        signal = (raw - arrays["meta/signal_mean"]) / arrays["meta/signal_std"]
        if split == "train":
            arrays["meta/thresholds"] = class_thresholds(signal[:, classes], config.num_classes)
        noise = config.noise_std * split_rng.normal(size=(size, config.num_regression))
        _, labels = noisy_labels(split_rng, signal[:, classes], arrays["meta/thresholds"], config.label_noise)
        arrays[f"{split}/x"] = x.astype(np.float32)
        arrays[f"{split}/regression"] = (signal[:, regression] + noise).astype(np.float32)
        arrays[f"{split}/classification"] = labels.astype(np.int64)
    return arrays


def load_manytasks(
    config: ManyTasksConfig,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    use_cache: bool = True,
) -> tuple[Splits, Arrays]:
    """Train/test data (targets ``regression`` ``[N, m_r]`` float32 and ``classification``
    ``[N, m_c]`` int64; either may have zero columns) and the ``meta/*`` arrays."""
    key = {"generator": "manytasks", "version": GENERATOR_VERSION, "seed": seed, **asdict(config)}
    arrays = cached_arrays(
        "manytasks", key, lambda: generate_manytasks(config, seed, progress), cache_dir, use_cache
    )

    def split(name: str) -> TensorDictDataset:
        targets = {
            kind: torch.from_numpy(arrays[f"{name}/{kind}"]) for kind in ("regression", "classification")
        }
        return TensorDictDataset(torch.from_numpy(arrays[f"{name}/x"]), targets)

    meta = {key: value for key, value in arrays.items() if key.startswith("meta/")}
    return Splits(split("train"), split("test")), meta
