r"""The two-task toy problem of CAGrad (Liu et al. 2021), reused by Nash-MTL and FAMO.

On :math:`x=(x_1,x_2)\in\mathbb{R}^2`, with :math:`c_1=\max(\tanh(x_2/2),0)`,
:math:`c_2=\max(\tanh(-x_2/2),0)` and :math:`\ell(u)=\log\max(|u|, 5\cdot10^{-6})+6`:

.. math::
    f_1 &= s\,\big[c_1\,\ell(-\tfrac{x_1+7}{2}-\tanh(-x_2))
          + c_2\,(\tfrac{(x_1-7)^2+0.1(x_2+8)^2}{10}-20)\big]\\
    f_2 &= c_1\,\ell(\tfrac{3-x_1}{2}+\tanh(-x_2)+2)
          + c_2\,(\tfrac{(x_1+7)^2+0.1(x_2+8)^2}{10}-20)

``s`` (``scale``) is 1 in CAGrad; Nash-MTL and FAMO use ``s = 0.1`` to make the two
losses differ in scale. The Pareto set lies in the lower half plane, close to the
segment :math:`x_1\in[-7,7]`, :math:`x_2\approx-8.36` (:func:`pareto_front` computes it).
Both losses are bounded below by :data:`LOWER_BOUND` (times ``s`` for :math:`f_1`);
``shift=True`` subtracts that bound so both losses are positive, as FAMO's toy does
for its log-loss update.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

CAGRAD_STARTS: tuple[tuple[float, float], ...] = ((-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0))
"""The initial points of CAGrad's toy figure."""
FAMO_STARTS: tuple[tuple[float, float], ...] = (
    (-8.5, 7.5),
    (0.0, 0.0),
    (9.0, 9.0),
    (-7.5, -0.5),
    (9.0, -1.0),
)
"""The initial points of FAMO's toy figure."""
LOWER_BOUND = -21.0
"""A lower bound of both unscaled losses (FAMO's ``min_losses``)."""
_CLAMP = 5e-6


def toy_losses(x: Tensor, scale: float = 1.0) -> Tensor:
    """The two losses at ``x`` of shape ``[..., 2]``; returns shape ``[..., 2]``."""
    if x.shape[-1] != 2:
        raise ValueError(f"the toy problem lives in 2 dimensions; got x of shape {tuple(x.shape)}")
    x1, x2 = x[..., 0], x[..., 1]
    c1 = torch.tanh(x2 / 2).clamp(min=0)
    c2 = torch.tanh(-x2 / 2).clamp(min=0)
    log1 = (0.5 * (-x1 - 7) - torch.tanh(-x2)).abs().clamp(min=_CLAMP).log() + 6
    log2 = (0.5 * (-x1 + 3) + torch.tanh(-x2) + 2).abs().clamp(min=_CLAMP).log() + 6
    sq1 = ((x1 - 7) ** 2 + 0.1 * (x2 + 8) ** 2) / 10 - 20
    sq2 = ((x1 + 7) ** 2 + 0.1 * (x2 + 8) ** 2) / 10 - 20
    f1 = scale * (c1 * log1 + c2 * sq1)
    f2 = c1 * log2 + c2 * sq2
    return torch.stack([f1, f2], dim=-1)


class ToyTwoTask(nn.Module):
    """The toy as a model: one parameter ``x`` (the point); ``forward()`` returns the 2 losses.

    Use it as ``closure=model`` with :class:`~bilevel_mtl.BalancedOptimizer`.
    """

    def __init__(
        self, start: Sequence[float] = CAGRAD_STARTS[0], *, scale: float = 1.0, shift: bool = False
    ) -> None:
        super().__init__()
        if len(start) != 2:
            raise ValueError(f"start must be a point (x1, x2), got {start!r}")
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        self.scale = float(scale)
        self.shift = shift
        self.x = nn.Parameter(torch.tensor([float(v) for v in start]))

    def lower_bounds(self) -> Tensor:
        """Lower bounds of the two losses as returned by :meth:`forward` (0 when ``shift``)."""
        if self.shift:
            return torch.zeros(2, dtype=self.x.dtype)
        return torch.tensor([LOWER_BOUND * self.scale, LOWER_BOUND], dtype=self.x.dtype)

    def forward(self) -> Tensor:
        losses = toy_losses(self.x, self.scale)
        if self.shift:
            losses = losses - torch.tensor([LOWER_BOUND * self.scale, LOWER_BOUND]).to(losses)
        return losses


def pareto_stationarity(x: Tensor, scale: float = 1.0) -> float:
    r"""Norm of the min-norm point of :math:`\mathrm{conv}\{\nabla f_1(x), \nabla f_2(x)\}`.

    Zero exactly at Pareto-stationary points.
    """
    point = x.detach().to(torch.float64).requires_grad_(True)
    losses = toy_losses(point, scale)
    (g1,) = torch.autograd.grad(losses[0], point, retain_graph=True)
    (g2,) = torch.autograd.grad(losses[1], point)
    diff = g1 - g2
    denom = float(diff @ diff)
    gamma = 0.5 if denom == 0 else min(max(float((g2 - g1) @ g2) / denom, 0.0), 1.0)
    return float((gamma * g1 + (1 - gamma) * g2).norm())


def pareto_front(num: int = 101, scale: float = 1.0) -> Tensor:
    r"""``num`` points ``[num, 2]`` of the Pareto set, one per trade-off :math:`\lambda\in[0,1]`.

    Each minimises :math:`\lambda f_1+(1-\lambda) f_2` over the lower half plane: in
    :math:`x_1` in closed form (both losses are quadratic there), in :math:`x_2\in[-20,0]`
    by a golden-section search run for all trade-offs at once (to ~1e-12). Pass them to
    :func:`toy_losses` for the Pareto front.
    """
    if num < 2:
        raise ValueError(f"num must be at least 2, got {num}")
    lam = torch.linspace(0.0, 1.0, num, dtype=torch.float64)
    a, b = lam * scale, 1.0 - lam
    x1 = 7.0 * (a - b) / (a + b)

    def weighted(x2: Tensor) -> Tensor:
        losses = toy_losses(torch.stack([x1, x2], dim=-1), 1.0)
        return a * losses[:, 0] + b * losses[:, 1]

    ratio = (math.sqrt(5) - 1) / 2
    low, high = torch.full_like(x1, -20.0), torch.zeros_like(x1)
    for _ in range(80):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        keep_left = weighted(left) < weighted(right)
        high = torch.where(keep_left, right, high)
        low = torch.where(keep_left, low, left)
    return torch.stack([x1, (low + high) / 2], dim=1)
