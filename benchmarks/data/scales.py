r"""Scales: tabular tasks in their natural units, whose losses differ by up to :math:`10^{\pm 4}`.

The latent construction is ManyTasks' (:mod:`benchmarks.data.manytasks`): inputs
:math:`x \sim \mathcal N(0, I_d)`, task directions :math:`w_k = s_k c u + \sqrt{1 - c^2} v_k`
(:math:`s_k = -1` for the tasks declared conflicting), the ridge signal
:math:`g_k(x) = z_k + \sum_j \sin(\alpha_j z_k + \beta_j)` of :math:`z_k = w_k^\top x`,
standardised on the training split to :math:`\tilde g_k`. Each task then has a unit and a
noise floor:

* a regression task with offset :math:`\mu_k` and scale :math:`s_k` (its natural unit) has
  targets :math:`y_k = \mu_k + s_k(\tilde g_k + r\epsilon)`, :math:`\epsilon \sim \mathcal N(0, 1)`:
  its mean squared error is at least :math:`r^2 s_k^2` and its :math:`R^2` at most
  :math:`1/(1 + r^2)`; predicting the mean gives an MSE of about :math:`(1 + r^2) s_k^2` and
  an :math:`R^2` of about 0;
* a classification task with :math:`C_k` classes bins :math:`\tilde g_k` at the training
  quantiles into balanced classes and replaces a label with probability :math:`\eta` by one
  of the other classes: its accuracy is at most :math:`1 - \eta` (the majority class gives
  about :math:`1/C_k`), its cross entropy at least
  :math:`H_\eta = -(1 - \eta)\log(1 - \eta) - \eta \log\frac{\eta}{C_k - 1}`.

So a regression's loss is about :math:`s_k^2` times a classification's: scales of 100 and
0.01 put the losses :math:`10^{\pm 4}` away from a cross entropy.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..cache import Arrays, cached_arrays
from ..datasets import Splits, TensorDictDataset
from . import manytasks
from .manytasks import check_label_noise, class_thresholds, noisy_labels, ridge_signals, task_directions

GENERATOR_VERSION = 1
"""Bumped whenever the generated data change (part of the cache key, with ManyTasks' version)."""


@dataclass(frozen=True)
class ScaleTask:
    """One task: a regression in the unit ``(offset, scale)`` (``num_classes == 0``) or a
    classification into ``num_classes`` classes; ``conflicting`` flips its base direction."""

    name: str
    offset: float = 0.0
    scale: float = 1.0
    num_classes: int = 0
    conflicting: bool = False

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"a task name must be non-empty and without '/', got {self.name!r}")
        if self.num_classes == 1 or self.num_classes < 0:
            raise ValueError(
                f"{self.name}: num_classes must be 0 (regression) or >= 2, got {self.num_classes}"
            )
        if self.is_regression and not self.scale > 0:
            raise ValueError(f"{self.name}: scale must be > 0, got {self.scale}")

    @property
    def is_regression(self) -> bool:
        return self.num_classes == 0


SCALE_TASKS = (
    ScaleTask("price", offset=2000.0, scale=100.0),
    ScaleTask("minutes", offset=60.0, scale=10.0, conflicting=True),
    ScaleTask("segment", num_classes=4),
    ScaleTask("click", num_classes=2, conflicting=True),
    ScaleTask("share", offset=0.5, scale=0.1),
    ScaleTask("growth", offset=0.0, scale=0.01, conflicting=True),
)
"""The default tasks: losses about :math:`10^4, 10^2, 1, 1, 10^{-2}, 10^{-4}`; in each pair of
neighbouring scales one task is aligned with the base direction and one conflicts."""


@dataclass(frozen=True)
class ScalesConfig:
    """The tasks, the latent construction, the noise and the split sizes."""

    tasks: tuple[ScaleTask, ...] = SCALE_TASKS
    input_dim: int = 16
    num_train: int = 10000
    num_test: int = 5000
    alignment: float = 0.8
    """``c``: the cosine between a task direction and ``± u``."""
    num_waves: int = 5
    noise_std: float = 0.5
    """``r``: a regression's noise standard deviation in units of its scale (the signal's)."""
    label_noise: float = 0.1
    """``η``: the probability that a label is replaced by another class."""

    def __post_init__(self) -> None:
        names = [task.name for task in self.tasks]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"need >= 1 task with unique names, got {names}")
        for name in ("input_dim", "num_train", "num_test"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ValueError(f"{name} must be an integer >= 2, got {value!r}")
        if not 0.0 <= self.alignment <= 1.0:
            raise ValueError(f"alignment must lie in [0, 1], got {self.alignment}")
        if self.num_waves < 0 or self.noise_std <= 0:
            raise ValueError("num_waves must be >= 0 and noise_std > 0 (every task has a noise floor)")
        for task in self.tasks:
            if not task.is_regression:
                check_label_noise(self.label_noise, task.num_classes)


def generate_scales(config: ScalesConfig, seed: int, progress: bool = True) -> Arrays:
    """Both splits (``{split}/x`` and ``{split}/{task}`` for every task) and ``meta/*``."""
    rng = np.random.default_rng([seed, 13])
    conflicting = np.array([task.conflicting for task in config.tasks])
    directions = task_directions(rng, config.input_dim, conflicting, config.alignment)
    alpha, beta = rng.normal(size=config.num_waves), rng.normal(size=config.num_waves)
    arrays: Arrays = {"meta/direction": directions, "meta/alpha": alpha, "meta/beta": beta}
    for split in tqdm(("train", "test"), desc="scales", disable=not progress, leave=False):
        size = config.num_train if split == "train" else config.num_test
        split_rng = np.random.default_rng([seed, 13, 0 if split == "train" else 1])
        x = split_rng.normal(size=(size, config.input_dim))
        raw = ridge_signals(x, directions, alpha, beta)
        if split == "train":
            arrays["meta/signal_mean"], arrays["meta/signal_std"] = raw.mean(axis=0), raw.std(axis=0)
        signal = (raw - arrays["meta/signal_mean"]) / arrays["meta/signal_std"]
        arrays[f"{split}/x"] = x.astype(np.float32)
        for index, task in enumerate(config.tasks):
            column = signal[:, index : index + 1]
            if task.is_regression:
                noisy = column[:, 0] + config.noise_std * split_rng.normal(size=size)
                arrays[f"{split}/{task.name}"] = (task.offset + task.scale * noisy).astype(np.float32)
                continue
            if split == "train":
                arrays[f"meta/thresholds/{task.name}"] = class_thresholds(column, task.num_classes)
            thresholds = arrays[f"meta/thresholds/{task.name}"]
            _, labels = noisy_labels(split_rng, column, thresholds, config.label_noise)
            arrays[f"{split}/{task.name}"] = labels[:, 0].astype(np.int64)
    return arrays


def load_scales(
    config: ScalesConfig,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    use_cache: bool = True,
) -> tuple[Splits, Arrays]:
    """Train/test data (one target per task: float32 ``[N]`` in its unit, or int64 labels ``[N]``)
    and the ``meta/*`` arrays."""
    key = {
        "generator": "scales",
        "version": GENERATOR_VERSION,
        "manytasks_version": manytasks.GENERATOR_VERSION,
        "seed": seed,
        **asdict(config),
    }
    arrays = cached_arrays(
        "scales", key, lambda: generate_scales(config, seed, progress), cache_dir, use_cache
    )

    def split(name: str) -> TensorDictDataset:
        targets = {task.name: torch.from_numpy(arrays[f"{name}/{task.name}"]) for task in config.tasks}
        return TensorDictDataset(torch.from_numpy(arrays[f"{name}/x"]), targets)

    meta = {key: value for key, value in arrays.items() if key.startswith("meta/")}
    return Splits(split("train"), split("test")), meta
