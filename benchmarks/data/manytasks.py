r"""ManyTasks: ``m`` related tasks on shared Gaussian inputs, some aligned and some conflicting.

The construction extends the synthetic generator of Ma et al. (2018, MMoE) to many
tasks. Inputs :math:`x \sim \mathcal N(0, I_d)`. A base direction :math:`u` and,
for each task, a random unit :math:`v_k \perp u` give the task direction

.. math:: w_k = s_k\,c\,u + \sqrt{1 - c^2}\, v_k, \qquad s_k \in \{+1, -1\},

so two aligned tasks (same sign) have direction cosine about :math:`c^2` and an
aligned and a conflicting task (:math:`s_k = -1`) about :math:`-c^2`. With
:math:`z_k = w_k^\top x` and waves :math:`\alpha_j, \beta_j \sim \mathcal N(0, 1)`
shared by all tasks, the noiseless signal is

.. math:: g_k(x) = z_k + \sum_{j=1}^{J} \sin(\alpha_j z_k + \beta_j),

which is not odd in :math:`z_k`, so a conflicting task is not the negative of an
aligned one. Regression targets are :math:`y_k = \sigma_k (g_k(x) + \epsilon)`
with :math:`\epsilon \sim \mathcal N(0, \text{noise}^2)` and scales
:math:`\sigma_k = 10^{U(-D/2, D/2)}`, so the losses differ by up to :math:`10^{2D}`.
Classification targets bin :math:`g_k(x) + \epsilon` at the training split's
quantiles of :math:`g_k` into ``num_classes`` balanced classes.

Tasks ``0 .. m_r-1`` are regressions and ``m_r .. m-1`` classifications
(``m_c = round(classification_fraction · m)``); which tasks conflict is drawn at random.
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

GENERATOR_VERSION = 1


@dataclass(frozen=True)
class ManyTasksConfig:
    """Number and kind of tasks, their relations and scales, and the split sizes."""

    num_tasks: int = 8
    input_dim: int = 16
    num_train: int = 4000
    num_test: int = 2000
    classification_fraction: float = 0.0
    num_classes: int = 3
    conflict_fraction: float = 0.25
    """Fraction of tasks whose direction points against the base direction (``s_k = -1``)."""
    alignment: float = 0.8
    """``c``: the cosine between a task direction and ``± u``."""
    num_waves: int = 5
    noise_std: float = 0.1
    scale_decades: float = 2.0
    """``D``: regression scales spread log-uniformly over ``D`` decades (0 = all scales 1)."""

    def __post_init__(self) -> None:
        for name in ("num_tasks", "input_dim", "num_train", "num_test", "num_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.input_dim < 2:
            raise ValueError(
                f"input_dim must be >= 2 (a base direction and its complement), got {self.input_dim}"
            )
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        for name in ("classification_fraction", "conflict_fraction", "alignment"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if self.num_waves < 0 or self.noise_std < 0 or self.scale_decades < 0:
            raise ValueError("num_waves, noise_std and scale_decades must be >= 0")

    @property
    def num_classification(self) -> int:
        return round(self.classification_fraction * self.num_tasks)

    @property
    def num_regression(self) -> int:
        return self.num_tasks - self.num_classification


def _directions(rng: np.random.Generator, config: ManyTasksConfig) -> tuple[np.ndarray, np.ndarray]:
    """Task directions ``[m, d]`` (unit) and the conflict flags ``[m]``."""
    base = rng.normal(size=config.input_dim)
    base /= np.linalg.norm(base)
    other = rng.normal(size=(config.num_tasks, config.input_dim))
    other -= np.outer(other @ base, base)
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    conflicting = np.zeros(config.num_tasks, dtype=bool)
    conflicting[rng.permutation(config.num_tasks)[: round(config.conflict_fraction * config.num_tasks)]] = (
        True
    )
    sign = np.where(conflicting, -1.0, 1.0)
    c = config.alignment
    return sign[:, None] * c * base + math.sqrt(1.0 - c * c) * other, conflicting


def generate_manytasks(config: ManyTasksConfig, seed: int, progress: bool = True) -> Arrays:
    """Both splits (``{split}/x``, ``{split}/regression``, ``{split}/classification``) and ``meta/*``."""
    rng = np.random.default_rng([seed, 11])
    directions, conflicting = _directions(rng, config)
    alpha, beta = rng.normal(size=config.num_waves), rng.normal(size=config.num_waves)
    half = config.scale_decades / 2
    scale = 10.0 ** rng.uniform(-half, half, config.num_tasks)
    arrays: Arrays = {
        "meta/direction": directions,
        "meta/conflicting": conflicting,
        "meta/scale": scale,
        "meta/alpha": alpha,
        "meta/beta": beta,
    }
    thresholds: np.ndarray | None = None
    regression, classes = slice(0, config.num_regression), slice(config.num_regression, None)
    for split in tqdm(("train", "test"), desc="manytasks", disable=not progress, leave=False):
        size = config.num_train if split == "train" else config.num_test
        split_rng = np.random.default_rng([seed, 11, 0 if split == "train" else 1])
        x = split_rng.normal(size=(size, config.input_dim))
        z = x @ directions.T
        signal = z + np.sin(z[:, :, None] * alpha + beta).sum(axis=2)
        noisy = signal + config.noise_std * split_rng.normal(size=signal.shape)
        if thresholds is None:
            quantiles = np.arange(1, config.num_classes) / config.num_classes
            thresholds = np.quantile(signal[:, classes], quantiles, axis=0)
        labels = (noisy[:, classes, None] > thresholds.T[None]).sum(axis=2)
        arrays[f"{split}/x"] = x.astype(np.float32)
        arrays[f"{split}/regression"] = (scale[regression] * noisy[:, regression]).astype(np.float32)
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
