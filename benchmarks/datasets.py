"""In-memory multi-task data sets and the batch iterator the benchmark runners use.

Every suite's samples are ``(inputs, targets)`` where ``targets`` maps a target
name to a tensor. Any ``torch.utils.data.Dataset`` yielding that shape can stand
in for the generated data (e.g. the real NYUv2 files, see
:class:`benchmarks.data.scenes.ScenesDirectory`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

Targets = dict[str, Tensor]
Batch = tuple[Tensor, Targets]


class TensorDictDataset(Dataset[Batch]):
    """Samples ``(inputs[i], {name: target[i]})`` from tensors sharing their first dimension."""

    def __init__(self, inputs: Tensor, targets: Mapping[str, Tensor]) -> None:
        if not isinstance(inputs, Tensor):
            raise TypeError(f"inputs must be a tensor, got {type(inputs).__name__}")
        if not targets:
            raise ValueError("targets must name at least one target tensor")
        for name, target in targets.items():
            if not isinstance(target, Tensor):
                raise TypeError(f"target {name!r} must be a tensor, got {type(target).__name__}")
            if target.shape[0] != inputs.shape[0]:
                raise ValueError(
                    f"target {name!r} has {target.shape[0]} samples but inputs have {inputs.shape[0]}"
                )
        self.inputs = inputs
        self.targets = dict(targets)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def __getitem__(self, index: int) -> Batch:
        return self.inputs[index], {name: target[index] for name, target in self.targets.items()}

    def take(self, index: Tensor) -> Batch:
        """The batch of the samples at ``index`` (a 1-D integer tensor)."""
        return self.inputs[index], {name: target[index] for name, target in self.targets.items()}


class Splits(NamedTuple):
    """A suite's training and test data."""

    train: Dataset[Batch]
    test: Dataset[Batch]


def iterate_batches(
    dataset: Dataset[Batch],
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = None,
    drop_last: bool = False,
) -> Iterator[Batch]:
    """Batches of ``dataset``; vectorised indexing for in-memory data, a ``DataLoader`` otherwise.

    With ``shuffle``, the order is drawn from a generator seeded by ``seed``
    (fresh entropy when ``None``), so a run can replay its epochs exactly.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    if not isinstance(dataset, TensorDictDataset):
        loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last
        )
        yield from loader
        return
    size = len(dataset)
    order = torch.randperm(size, generator=generator) if shuffle else torch.arange(size)
    stop = size - size % batch_size if drop_last else size
    for start in range(0, stop, batch_size):
        yield dataset.take(order[start : start + batch_size])


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """Move a batch's inputs and targets to ``device``."""
    inputs, targets = batch
    return inputs.to(device), {name: target.to(device) for name, target in targets.items()}
