"""Nash-MTL: the Nash bargaining solution among the tasks' gradients."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._checks import check_nonnegative
from ._simplex import check_jacobian, correlation, gramian, min_norm_weights
from .gradient import Combination, GradientBalancer


def nash_bargaining(
    gram: Tensor, tol: float = 1e-10, max_iter: int = 100, stationary_tol: float = 1e-8
) -> Tensor:
    r"""The :math:`\alpha > 0` with :math:`\alpha_i (K\alpha)_i = 1` for all ``i`` (``gram`` = ``K``).

    With :math:`K = DCD` (:math:`D` the gradient norms, :math:`C` unit-diagonal,
    :func:`correlation`) the condition reads :math:`\beta_i(C\beta)_i = 1` in
    :math:`\beta = D\alpha`, so it is solved on :math:`C` whatever the gradients' scales
    and :math:`\alpha = D^{-1}\beta`. :math:`\beta` is the unique minimiser of the strictly
    convex :math:`\psi(\beta)=\tfrac12\beta^\top C\beta-\sum_i\log\beta_i`
    (:math:`\nabla\psi = C\beta - 1/\beta`), found by damped Newton steps kept inside
    :math:`\beta>0`, until :math:`\max_i|\beta_i(C\beta)_i-1|\le` ``tol`` (beyond the
    round-off of :math:`C\beta`, which dominates near Pareto-stationary points). Tasks with a
    zero gradient get :math:`\alpha_i=0` (no bargaining solution involves them). A solution
    exists iff 0 is not in the convex hull of the gradients (a property of their
    directions only); when the min-norm point of the hull of the unit gradients is shorter
    than ``stationary_tol`` or than the round-off of :math:`C` (~1e-8: a Gram matrix holds
    squared lengths) the gradients are Pareto-stationary (no direction improves every
    task) and all :math:`\alpha_i` are 0.
    """
    k = gram.to("cpu", torch.float64)  # a small m × m problem with scalar control flow
    norms, c = correlation(k)
    active = norms > 0
    alpha = torch.zeros(k.shape[0], dtype=torch.float64)
    if not bool(active.any()):
        return alpha.to(gram.device)
    hull = min_norm_weights(c)
    hull_roundoff = 8 * c.shape[0] * torch.finfo(torch.float64).eps * float(hull @ c.abs() @ hull)
    if float(hull @ c @ hull) <= stationary_tol**2 + hull_roundoff:
        return alpha.to(gram.device)
    x = torch.full((c.shape[0],), math.sqrt(c.shape[0] / float(c.sum())), dtype=torch.float64)

    def psi(v: Tensor) -> float:
        return 0.5 * float(v @ c @ v) - float(v.log().sum())

    magnitude = c.abs()
    for _ in range(max_iter):
        cx = c @ x
        roundoff = 4 * x.numel() * torch.finfo(torch.float64).eps * x * (magnitude @ x)
        if float(((x * cx - 1).abs() - roundoff).max()) <= tol:
            break
        grad = cx - 1 / x
        step = -torch.linalg.solve(c + torch.diag(x.pow(-2)), grad)
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
    alpha[active] = x / norms[active]
    return alpha.to(gram.device)


def nash_mtl_weights(jacobian: Tensor, max_norm: float = 1.0) -> Tensor:
    r"""Nash-MTL's weights: :func:`nash_bargaining` on :math:`K = GG^\top`, then the update
    :math:`\alpha^\top G` (of norm :math:`\sqrt{m}` when no task gradient is zero, whatever
    the gradients' scales) is scaled down to norm ``max_norm`` when longer (``max_norm=0``: never).

    The direction is invariant to per-task gradient scales (:math:`\alpha_i \to \alpha_i/c_i`).
    """
    check_jacobian(jacobian)
    check_nonnegative("max_norm", max_norm)
    k = gramian(jacobian)
    alpha = nash_bargaining(k)
    norm = math.sqrt(max(float(alpha @ k @ alpha), 0.0))
    if max_norm > 0 and norm > max_norm:
        alpha = alpha * (max_norm / norm)
    return alpha.to(jacobian)


class NashMTL(GradientBalancer):
    r"""Nash-MTL (Navon et al. 2022, "Multi-Task Learning as a Bargaining Game", Algorithm 1).

    .. math:: d^\star = \arg\max_{d\in B_\epsilon}\ \sum_i \log(g_i^\top d)
              \iff d^\star = \sum_i\alpha_i g_i,\quad \alpha\odot(K\alpha) = \mathbf{1}

    on the raw Gram matrix :math:`K = GG^\top` (the paper's code solves the same equation:
    it divides :math:`K` by :math:`\|K\|_F` for its solver and multiplies the factor back
    into the constraint), so the update has norm :math:`\sqrt m` at any gradient scale; it
    is then clipped to norm ``max_norm`` (1.0, the code's default clipping of the shared
    gradient).

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
        self.max_norm = check_nonnegative("max_norm", max_norm)

    def combine(self, jacobian: Tensor, losses: Tensor, representation: Tensor | None) -> Combination:
        return Combination(nash_mtl_weights(jacobian.flatten(1), self.max_norm))
