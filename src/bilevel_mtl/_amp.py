"""The GradScaler's scale in one place: scaled backward passes, unscaled results."""

from __future__ import annotations

import torch
from torch import Tensor


class Scale:
    r"""The loss scale :math:`s` of one step (``None``: no ``GradScaler``).

    Every backward pass of a step runs on :math:`s\cdot f` (so that half-precision
    gradients do not underflow) and every gradient a balancer reads is divided by
    :math:`s` again; the gradients the trainer writes to ``.grad`` are scaled, so that
    ``GradScaler.unscale_`` finds what a plain scaled backward would have left.
    """

    def __init__(self, scaler: torch.amp.GradScaler | None, like: Tensor) -> None:
        self.value = None if scaler is None else scaler.scale(torch.ones((), device=like.device))
        # 1/s once per step, in float64 then float32 as GradScaler.unscale_ does.
        self.inverse = None if self.value is None else self.value.double().reciprocal().float()

    def outputs(self, grad_outputs: Tensor) -> Tensor:
        """``grad_outputs`` of a backward pass, times :math:`s`."""
        return grad_outputs if self.value is None else grad_outputs * self.value.to(grad_outputs)

    def unscale(self, grad: Tensor) -> Tensor:
        """A gradient of a scaled backward in true units."""
        return grad if self.inverse is None else grad * self.inverse.to(grad)

    def to_grad(self, grad: Tensor) -> Tensor:
        """A gradient in true units as a scaled backward would leave it in ``.grad``."""
        return grad if self.value is None else grad * self.value.to(grad)
