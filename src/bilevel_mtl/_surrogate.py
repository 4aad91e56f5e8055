"""The loss vector a balancer sees during one step: chosen values on the local graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class BackwardCounter:
    """Counts the backward passes that went through a :func:`surrogate_losses` tensor."""

    count: int = 0


class _SurrogateLosses(torch.autograd.Function):
    """Forward: ``values``; backward: the incoming gradient times ``scale`` to ``local``."""

    @staticmethod
    def forward(
        ctx: Any, local: Tensor, values: Tensor, scale: Tensor | None, counter: BackwardCounter | None
    ) -> Tensor:
        ctx.scale = scale
        ctx.counter = counter
        return values.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        if ctx.counter is not None:
            ctx.counter.count += 1
        if ctx.scale is not None:
            grad = grad * ctx.scale.to(grad)
        return grad, None, None, None


def surrogate_losses(
    local: Tensor, values: Tensor, scale: Tensor | None = None, counter: BackwardCounter | None = None
) -> Tensor:
    r"""A tensor equal to ``values`` whose gradient flows into ``local``'s graph, times ``scale``.

    Used for the global-batch losses under data parallelism (values: the mean over the
    ranks; graph: this rank's) and for ``GradScaler`` (the backward is scaled while the
    balancer sees the true loss values: :math:`s\cdot f` would change loss-dependent
    weights). Exact: the values are copied, not computed as ``local + (values - local)``.
    """
    if values.shape != local.shape:
        raise ValueError(f"values of shape {tuple(values.shape)} for losses of shape {tuple(local.shape)}")
    result: Tensor = _SurrogateLosses.apply(local, values.to(local), scale, counter)  # type: ignore[no-untyped-call]
    return result
