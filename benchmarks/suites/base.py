"""What a benchmark runner needs to know about a suite, in one object.

A :class:`Suite` is bound to one configuration (data size, model size, training
defaults) and gives:

* ``tasks`` (the order of the loss vector), ``main_task`` (auxiliary learning),
  ``metrics`` (names, tasks and directions) and ``higher_is_better``;
* ``datasets(seed)``: train/test :class:`~benchmarks.datasets.Splits`
  (generated once per data seed, cached on disk);
* ``model(seed)``: a fresh model whose ``forward`` returns a dict of outputs;
* ``task_losses(outputs, targets) -> Tensor[m]``, the closure's return value;
* ``evaluator()`` / ``evaluate(model, dataset)``: every metric over a data set.

Presets: ``tiny`` (unit tests, seconds), ``quick`` (CI-sized runs), ``default``
(a 2-core CPU in the background), ``large`` (a GPU).
"""

from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..datasets import Batch, Splits, iterate_batches, to_device
from ..metrics import Evaluator, MetricSpec

SIZES = ("tiny", "quick", "default", "large")


@dataclass(frozen=True)
class TrainingDefaults:
    """The training recipe a runner uses unless told otherwise (Adam with these settings)."""

    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float = 0.0
    eval_batch_size: int = 256


class SuiteConfig(Protocol):
    """What every suite configuration has: its training recipe."""

    @property
    def training(self) -> TrainingDefaults: ...


ConfigT = TypeVar("ConfigT", bound=SuiteConfig)
AnyConfig = TypeVar("AnyConfig")


def apply_overrides(config: AnyConfig, overrides: Mapping[str, Any]) -> AnyConfig:
    """``config`` with fields replaced; a key may also name a field of a nested ``data`` or
    ``training`` dataclass. Unknown keys, and values of another type than the field's
    (an integer is a float too), raise ``ValueError``."""
    top = {field.name for field in dataclasses.fields(config)}  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if key in top:
            _check_type(key, getattr(config, key), value)
            changes[key] = value
            continue
        for part in ("data", "training"):
            inner = getattr(config, part, None)
            if inner is not None and key in {field.name for field in dataclasses.fields(inner)}:
                _check_type(key, getattr(inner, key), value)
                nested.setdefault(part, {})[key] = value
                break
        else:
            valid = set(top)
            for part in ("data", "training"):
                inner = getattr(config, part, None)
                if inner is not None:
                    valid |= {field.name for field in dataclasses.fields(inner)}
            raise ValueError(f"unknown setting {key!r}; valid settings: {sorted(valid)}")
    for part, values in nested.items():
        changes[part] = dataclasses.replace(changes.get(part, getattr(config, part)), **values)
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]


def _check_type(key: str, current: Any, value: Any) -> None:
    """A setting keeps its field's type (an int is a float too; a field that is ``None`` takes any)."""
    if current is None:
        return
    if isinstance(current, float) and not isinstance(value, bool):
        same = isinstance(value, int | float)
    else:
        same = isinstance(value, type(current)) and isinstance(value, bool) == isinstance(current, bool)
    if not same:
        raise ValueError(f"setting {key!r} must be of type {type(current).__name__}, got {value!r}")


class Suite(ABC, Generic[ConfigT]):
    """One benchmark suite under one configuration (see the module docstring)."""

    name: ClassVar[str]
    main_task: str | None = None
    """The task auxiliary learning serves (``None``: all tasks matter equally)."""

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    @classmethod
    @abstractmethod
    def preset(cls, size: str) -> ConfigT:
        """The configuration of a preset size (one of :data:`SIZES`)."""

    @classmethod
    def from_preset(cls, size: str = "default", **overrides: Any) -> Suite[ConfigT]:
        """A suite at a preset size with some settings replaced."""
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r}; choose one of {list(SIZES)}")
        return cls(apply_overrides(cls.preset(size), overrides))

    @property
    @abstractmethod
    def tasks(self) -> tuple[str, ...]:
        """Task names in the order of :meth:`task_losses`."""

    @property
    def training(self) -> TrainingDefaults:
        """The default training recipe."""
        return self.config.training

    @abstractmethod
    def datasets(
        self,
        seed: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        use_cache: bool = True,
    ) -> Splits:
        """Train and test data generated from the data ``seed`` (cached on disk)."""

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model (from the current torch random state)."""

    @abstractmethod
    def task_losses(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        """The ``[m]`` vector of task losses of one batch, in the order of :attr:`tasks`."""

    @abstractmethod
    def evaluator(self) -> Evaluator:
        """Fresh metric accumulators for one pass over a test set."""

    def model(self, seed: int | None = None) -> nn.Module:
        """A fresh model; with ``seed``, initialised from it without touching the global random state."""
        if seed is None:
            return self.build_model()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.build_model()

    @property
    def metrics(self) -> tuple[MetricSpec, ...]:
        """Every reported metric, with its task and direction."""
        return self.evaluator().specs

    @property
    def higher_is_better(self) -> dict[str, bool]:
        """``{metric name: higher is better}`` (the input of ``delta_m`` and ``mean_rank``)."""
        return {spec.name: spec.higher_is_better for spec in self.metrics}

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def evaluate(
        self,
        model: nn.Module,
        dataset: Dataset[Batch],
        batch_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> dict[str, float]:
        """Every metric of ``model`` on ``dataset`` (eval mode, no grad; the mode is restored)."""
        evaluator = self.evaluator()
        was_training = model.training
        model.eval()
        if device is None:
            device = next(model.parameters()).device
        try:
            with torch.no_grad():
                for batch in iterate_batches(dataset, batch_size or self.training.eval_batch_size):
                    inputs, targets = to_device(batch, device)
                    evaluator.update(model(inputs), targets)
        finally:
            model.train(was_training)
        return evaluator.compute()
