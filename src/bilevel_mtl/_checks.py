"""Input checks shared by the whole package: each error names the problem."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


class NonFiniteLossError(ValueError):
    """A task loss is NaN or infinite; raised before anything is modified."""


def as_loss_vector(losses: Tensor | Sequence[Tensor], num_tasks: int) -> Tensor:
    """Return the task losses as one vector of shape ``[num_tasks]``.

    Accepts a 1-D tensor or a sequence of scalar tensors. Raises ``ValueError``
    for a wrong count, non-scalar entries or a non-floating dtype and
    :class:`NonFiniteLossError` naming the first NaN/inf task.
    """
    if isinstance(losses, Tensor):
        if losses.dim() != 1:
            raise ValueError(
                f"task losses must be a 1-D tensor of shape [{num_tasks}], got shape "
                f"{tuple(losses.shape)}; reduce each task loss to a scalar (e.g. .mean())"
            )
        vector = losses
    else:
        items = list(losses)
        for i, item in enumerate(items):
            if not isinstance(item, Tensor) or item.numel() != 1:
                shape = tuple(item.shape) if isinstance(item, Tensor) else type(item).__name__
                raise ValueError(f"task loss {i} must be a scalar tensor, got {shape}")
        if not items:
            raise ValueError(f"expected {num_tasks} task losses, got none")
        vector = torch.stack([item.reshape(()) for item in items])
    if vector.numel() != num_tasks:
        raise ValueError(f"expected {num_tasks} task losses, got {vector.numel()}")
    if not vector.is_floating_point():
        raise ValueError(f"task losses must be floating point, got {vector.dtype}")
    finite = torch.isfinite(vector.detach())
    if not bool(finite.all()):
        bad = [i for i, ok in enumerate(finite.tolist()) if not ok]
        raise NonFiniteLossError(
            f"task loss(es) {bad} are not finite ({vector.detach()[bad].tolist()}); "
            "the step was not taken and nothing was modified"
        )
    return vector


def check_positive(name: str, value: float) -> float:
    """Return ``float(value)`` if it is a finite number > 0, else raise ``ValueError``."""
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def check_num_tasks(num_tasks: int) -> int:
    """Return ``num_tasks`` if it is an integer >= 1, else raise ``ValueError``."""
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
    return num_tasks


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}")
    return value
