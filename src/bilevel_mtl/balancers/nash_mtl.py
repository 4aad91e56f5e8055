"""Nash-MTL: the Nash bargaining solution among the tasks' gradients."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._simplex import check_jacobian, gramian, min_norm_weights
from .gradient import Combination, GradientBalancer


def nash_bargaining(
    gram: Tensor, tol: float = 1e-10, max_iter: int = 100, stationary_tol: float = 1e-8
) -> Tensor:
    r"""The :math:`\alpha > 0` with :math:`\alpha_i (K\alpha)_i = 1` for all ``i`` (``gram`` = ``K``).

    It is the unique minimiser of the strictly convex
    :math:`\psi(\alpha)=\tfrac12\alpha^\top K\alpha-\sum_i\log\alpha_i`
    (:math:`\nabla\psi = K\alpha - 1/\alpha`), found by damped Newton steps kept inside
    :math:`\alpha>0`, until :math:`\max_i|\alpha_i(K\alpha)_i-1|\le` ``tol`` (beyond the
    round-off of :math:`K\alpha`, which dominates near Pareto-stationary points). Tasks with a
    zero gradient get :math:`\alpha_i=0` (no bargaining solution involves them). A solution
    exists iff 0 is not in the convex hull of the gradients; when the hull's min-norm
    point is shorter than ``stationary_tol`` times the longest gradient (Pareto-stationary:
    no direction improves every task) all :math:`\alpha_i` are 0.
    """
    k = gram.to("cpu", torch.float64)  # a small m × m problem with scalar control flow
    m = k.shape[0]
    diag = k.diagonal()
    alpha = torch.zeros(m, dtype=torch.float64, device=gram.device)
    largest = float(diag.max()) if m else 0.0
    if largest <= 0:
        return alpha
    active = diag > 1e-12 * largest
    ka = k[active][:, active]
    hull = min_norm_weights(ka)
    if float(hull @ ka @ hull) <= stationary_tol**2 * largest:
        return alpha
    x = diag[active].rsqrt()
    x = x * math.sqrt(x.numel() / float(x @ ka @ x))

    def psi(v: Tensor) -> float:
        return 0.5 * float(v @ ka @ v) - float(v.log().sum())

    magnitude = ka.abs()
    for _ in range(max_iter):
        kx = ka @ x
        roundoff = 4 * x.numel() * torch.finfo(torch.float64).eps * x * (magnitude @ x)
        if float(((x * kx - 1).abs() - roundoff).max()) <= tol:
            break
        grad = kx - 1 / x
        step = -torch.linalg.solve(ka + torch.diag(x.pow(-2)), grad)
        shrinking = step < 0
        t = 1.0
        if bool(shrinking.any()):
            t = min(1.0, 0.99 * float((-x[shrinking] / step[shrinking]).min()))
        start, slope = psi(x), float(grad @ step)
        slack = 1e-13 * (1 + abs(start))
        while t > 1e-8 and psi(x + t * step) > start + 1e-4 * t * slope + slack:
            t /= 2
        if t <= 1e-8:
            break
        x = x + t * step
    alpha[active.to(gram.device)] = x.to(gram.device)
    return alpha


def nash_mtl_weights(jacobian: Tensor, max_norm: float = 1.0) -> Tensor:
    r"""Nash-MTL's weights: :func:`nash_bargaining` on :math:`K/\|K\|_F`, then the update
    :math:`\alpha^\top G` is scaled down to norm ``max_norm`` when longer (``max_norm=0``: never).

    The direction is invariant to per-task gradient scales (:math:`\alpha_i \to \alpha_i/c_i`).
    """
    check_jacobian(jacobian)
    if max_norm < 0 or not math.isfinite(max_norm):
        raise ValueError(f"max_norm must be a finite number >= 0, got {max_norm!r}")
    k = gramian(jacobian)
    frobenius = float(torch.linalg.matrix_norm(k))
    if frobenius == 0:
        return torch.zeros(k.shape[0], dtype=jacobian.dtype, device=jacobian.device)
    alpha = nash_bargaining(k / frobenius)
    norm = math.sqrt(max(float(alpha @ k @ alpha), 0.0))
    if max_norm > 0 and norm > max_norm:
        alpha = alpha * (max_norm / norm)
    return alpha.to(jacobian)


class NashMTL(GradientBalancer):
    r"""Nash-MTL (Navon et al. 2022, "Multi-Task Learning as a Bargaining Game", Algorithm 1).

    .. math:: d^\star = \arg\max_{d\in B_\epsilon}\ \sum_i \log(g_i^\top d)
              \iff d^\star = \sum_i\alpha_i g_i,\quad \alpha\odot(K\alpha) = \mathbf{1}

    with the Gram matrix normalised, :math:`K = GG^\top/\|GG^\top\|_F`, as in the paper's
    code; the update :math:`\sum_i\alpha_i\nabla f_i` is then clipped to norm ``max_norm``
    (1.0, the code's default clipping of the shared gradient).

    Solver: the bargaining condition is solved exactly by Newton's method on a strictly
    convex potential (:func:`nash_bargaining`), with no cvxpy dependency. The paper's code
    runs ≤20 CCCP iterations with ECOS from the previous step's α and stops at
    :math:`\|K\alpha-1/\alpha\|<10^{-3}`; both reach the same unique solution, so this
    balancer is stateless and deterministic. Weights are not on the simplex. Invariance:
    per-task gradient scales leave the update direction unchanged.
    """

    name = "nashmtl"
    reference = "Navon et al. 2022 (ICML)"
    summary = "Nash bargaining"
    scale_invariance = "direction"

    def __init__(
        self,
        num_tasks: int,
        *,
        max_norm: float = 1.0,
        shared: nn.Module | None = None,
        representation: bool = False,
    ) -> None:
        super().__init__(num_tasks, shared=shared, representation=representation)
        if max_norm < 0 or not math.isfinite(max_norm):
            raise ValueError(f"max_norm must be a finite number >= 0, got {max_norm!r}")
        self.max_norm = float(max_norm)

    def combine(self, jacobian: Tensor, losses: Tensor, representation: Tensor | None) -> Combination:
        return Combination(nash_mtl_weights(jacobian.flatten(1), self.max_norm))
