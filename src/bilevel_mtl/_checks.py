"""Input checks shared by the whole package: each error names the problem."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor


class NonFiniteLossError(ValueError):
    """A task loss is NaN or infinite; raised before anything is modified.

    ``losses`` holds the offending loss values (detached) and ``tasks`` the indices
    of the non-finite ones, so that a caller can still agree with other ranks on them.
    """

    def __init__(self, message: str, losses: Tensor | None = None, tasks: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.losses = losses
        self.tasks = list(tasks)


class NonFiniteGradientError(ValueError):
    """A gradient is NaN or infinite; raised before the optimizer steps."""


def nonfinite_tasks(losses: Tensor) -> list[int]:
    """Indices of the entries of a ``[m]`` (or ``[b, m]``: per column) loss tensor that are NaN or inf."""
    finite = torch.isfinite(losses.detach())
    if finite.dim() > 1:
        finite = finite.reshape(-1, finite.shape[-1]).all(dim=0)
    return [i for i, ok in enumerate(finite.tolist()) if not ok]


def nonfinite_flags(tensors: Sequence[Tensor]) -> Tensor:
    """Boolean ``[len(tensors)]``: which tensors hold a NaN or an infinity.

    Fast path: one sum per tensor (NaN and inf propagate through a sum, and a sum is ~10x
    faster than ``isfinite().all()`` on CPU); only when a sum is not finite is that tensor
    checked element by element, so a sum that merely overflows is not a false alarm.
    """
    if not tensors:
        return torch.zeros(0, dtype=torch.bool)
    flags = ~torch.isfinite(torch.stack([t.detach().sum().float() for t in tensors]))
    for i in flags.nonzero().flatten().tolist():
        flags[i] = not bool(torch.isfinite(tensors[i].detach()).all())
    return flags


NOTHING_MODIFIED = "the step was not taken and nothing was modified"


def check_finite_losses(losses: Tensor, where: str = "", outcome: str = NOTHING_MODIFIED) -> Tensor:
    """Return ``losses`` if every entry is finite, else raise :class:`NonFiniteLossError`.

    The message names the tasks, ``where`` the losses were measured (e.g. ``" after
    the step"``) and the ``outcome`` for the training run.
    """
    bad = nonfinite_tasks(losses)
    if bad:
        values = losses.detach().reshape(-1, losses.shape[-1])[:, bad]
        shown = values[0].tolist() if values.shape[0] == 1 else values.tolist()
        raise NonFiniteLossError(
            f"task loss(es) {bad} are not finite{where} ({shown}); {outcome}",
            losses=losses.detach(),
            tasks=bad,
        )
    return losses


def as_loss_vector(
    losses: Tensor | Sequence[Tensor] | Mapping[str, Tensor], num_tasks: int, check_finite: bool = True
) -> Tensor:
    """Return the task losses as one vector of shape ``[num_tasks]``.

    Accepts a 1-D tensor, a sequence of scalar tensors or a mapping ``{task name: scalar
    tensor}`` (in its order; :class:`~bilevel_mtl.BalancedOptimizer` keeps the names of
    its first step). Raises ``ValueError``
    for a wrong count, non-scalar entries or a non-floating dtype and, with
    ``check_finite`` (a read of the values on the host), :class:`NonFiniteLossError`
    naming the NaN/inf tasks.
    """
    if isinstance(losses, Mapping):
        losses = list(losses.values())
    if isinstance(losses, Tensor):
        if losses.dim() != 1:
            raise ValueError(
                f"task losses must be a 1-D tensor of shape [{num_tasks}], got shape "
                f"{tuple(losses.shape)}; reduce each task loss to a scalar (e.g. .mean())"
            )
        vector = losses
    else:
        if isinstance(losses, str | bytes) or not isinstance(losses, Iterable):
            raise TypeError(
                "task losses must be a 1-D tensor or a sequence of scalar tensors, "
                f"got {type(losses).__name__}"
            )
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
    return check_finite_losses(vector) if check_finite else vector


def _number(name: str, value: float, requirement: str) -> float:
    """``float(value)``; a string that is no number is a ``ValueError`` naming ``requirement``."""
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be {requirement}, got {value!r}") from None


def check_positive(name: str, value: float) -> float:
    """Return ``float(value)`` if it is a finite number > 0, else raise ``ValueError``."""
    number = _number(name, value, "a finite number > 0")
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def check_nonnegative(name: str, value: float) -> float:
    """Return ``float(value)`` if it is a finite number >= 0, else raise ``ValueError``."""
    number = _number(name, value, "a finite number >= 0")
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def check_finite(name: str, value: float) -> float:
    """Return ``float(value)`` if it is finite, else raise ``ValueError``."""
    number = _number(name, value, "finite")
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def check_integer(name: str, value: int, minimum: int = 1, what: str = "") -> int:
    """Return ``value`` if it is an integer (not a bool) >= ``minimum``, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{what}, got {value!r}")
    return value


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
