"""CAGrad: the best worst-case descent direction within a ball around the average gradient."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor, nn

from .._checks import check_choice, check_nonnegative
from ._simplex import check_jacobian, gramian
from .gradient import Combination, GradientBalancer

RESCALES = ("none", "1+c^2", "1+c")


def cagrad_dual(gram: Tensor, c: float) -> Tensor:
    r"""CAGrad's dual weights on the simplex:

    .. math:: w^\star=\arg\min_{w\in\Delta}\ w^\top K\mathbf{1}/m + c\|\bar g\|\sqrt{w^\top K w} .

    ``gram`` is :math:`K=GG^\top`; solved by SLSQP (as CAGrad's code) to ``ftol=1e-15``
    on the Gram matrix scaled to unit trace (the minimiser is scale-free).
    """
    k = gram.to(torch.float64).cpu()
    m = k.shape[0]
    trace = float(k.trace())
    if trace <= 0:
        return torch.full((m,), 1.0 / m, dtype=torch.float64)
    a = (k / trace).numpy()
    b = a.mean(axis=1)
    radius = c * math.sqrt(max(float(a.mean()), 0.0))

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        aw = a @ w
        norm = math.sqrt(max(float(w @ aw), 1e-300))
        return float(b @ w) + radius * norm, b + radius * aw / norm

    result = minimize(
        objective,
        np.full(m, 1.0 / m),
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda w: float(w.sum()) - 1.0, "jac": lambda w: np.ones_like(w)}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    weights = torch.from_numpy(np.clip(result.x, 0.0, None))
    return weights / weights.sum()


def cagrad_weights(jacobian: Tensor, c: float = 0.4, rescale: str = "1+c^2") -> Tensor:
    r"""CAGrad's update :math:`d=\big(\bar g + \frac{c\|\bar g\|}{\|g_{w^\star}\|} g_{w^\star}\big)/s`
    as weights :math:`(\frac1m + \frac{c\|\bar g\|}{\|g_{w^\star}\|} w^\star)/s` on the rows of ``G``.

    :math:`\bar g` is the mean gradient, :math:`g_w=G^\top w`, :math:`w^\star` from
    :func:`cagrad_dual`, and ``s`` is 1, :math:`1+c^2` or :math:`1+c` (``rescale``). ``d``
    maximises :math:`\min_i g_i^\top d` over the ball :math:`\|d-\bar g\|\le c\|\bar g\|`
    (before rescaling). When :math:`g_{w^\star}=0` (Pareto-stationary) the ball's centre
    :math:`\bar g` is returned.
    """
    check_jacobian(jacobian)
    check_nonnegative("c", c)
    check_choice("rescale", rescale, RESCALES)
    k = gramian(jacobian)
    m = k.shape[0]
    uniform = torch.full((m,), 1.0 / m, dtype=torch.float64)
    dual = cagrad_dual(k, c).to(k.device)
    gw_norm2 = float(dual @ k @ dual)
    roundoff = 4 * m * torch.finfo(torch.float64).eps * float(dual @ k.abs() @ dual)
    radius = c * math.sqrt(max(float(k.mean()), 0.0))
    weights = uniform.to(k.device)
    if gw_norm2 > roundoff:  # g_w = 0 (Pareto-stationary) only up to round-off, at any scale
        gw_norm = math.sqrt(gw_norm2)
        weights = weights + radius / gw_norm * dual
    divisor = {"none": 1.0, "1+c^2": 1.0 + c * c, "1+c": 1.0 + c}[rescale]
    return (weights / divisor).to(jacobian)


class CAGrad(GradientBalancer):
    r"""CAGrad (Liu et al. 2021, "Conflict-Averse Gradient Descent for Multi-task Learning", Alg. 1).

    .. math:: d^\star = \arg\max_{d}\ \min_i\, g_i^\top d
              \quad\text{s.t.}\quad \|d-\bar g\|\le c\,\|\bar g\|,\qquad
              \theta \leftarrow \theta - \eta\, d^\star/s

    solved through its dual over the simplex (:func:`cagrad_dual`). ``c = 0`` is LS.

    Choices where the sources disagree: ``c = 0.4`` (CAGrad's NYUv2/Cityscapes scripts and
    Nash-MTL; the toy and LibMTL use 0.5); ``rescale="1+c^2"`` divides by
    :math:`1+c^2` (CAGrad's NYUv2 and Cityscapes training code, LibMTL's default; TorchJD
    does not rescale: ``"none"``). Weights are not on the simplex (they sum
    to :math:`(1+c\|\bar g\|\,/\|g_{w^\star}\|)/s`). Invariance: a common gradient scale
    leaves the weights unchanged.
    """

    name = "cagrad"
    reference = "Liu et al. 2021 (NeurIPS)"
    summary = "best worst-case descent near the mean"
    scale_invariance = "common"

    def __init__(
        self,
        num_tasks: int,
        *,
        c: float = 0.4,
        rescale: str = "1+c^2",
        shared: nn.Module | None = None,
        representation: bool = False,
    ) -> None:
        super().__init__(num_tasks, shared=shared, representation=representation)
        self.c = check_nonnegative("c", c)
        self.rescale = check_choice("rescale", rescale, RESCALES)

    def combine(self, jacobian: Tensor, losses: Tensor, representation: Tensor | None) -> Combination:
        return Combination(cagrad_weights(jacobian.flatten(1), self.c, self.rescale))
