"""Matrix-free solvers of :math:`A x = b` for a symmetric operator given by its products."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

MatVec = Callable[[Tensor], Tensor]


class SolveInfo(NamedTuple):
    """How a solve ended."""

    iterations: int
    """Operator products used (normal CG counts two per iteration)."""
    relative_residual: float
    r""":math:`\|b - Ax\| / \|b\|` of the system the solver iterates on (CG's recurrence;
    the normal equations for normal CG; NaN for Neumann, where it would cost one more product)."""
    breakdown: bool = False
    """CG met non-positive curvature (the operator is not positive definite) and stopped there;
    at the first iteration the returned solution is 0."""


def _relative(residual: Tensor, rhs_norm: float) -> float:
    return float(residual.norm()) / rhs_norm if rhs_norm > 0 else 0.0


def conjugate_gradient(matvec: MatVec, rhs: Tensor, max_iter: int, tol: float) -> tuple[Tensor, SolveInfo]:
    r"""Conjugate gradients (Hestenes & Stiefel 1952) from :math:`x_0 = 0`.

    Needs ``A`` symmetric positive definite; stops when :math:`\|r\| \le \mathrm{tol}\,\|b\|`
    or after ``max_iter`` products.
    """
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rhs_norm = float(rhs.norm())
    rr = torch.dot(r, r)
    done = 0
    breakdown = False
    while done < max_iter and _relative(r, rhs_norm) > tol:
        ap = matvec(p)
        done += 1
        curvature = torch.dot(p, ap)
        if curvature <= 0:
            breakdown = True  # not positive definite along p: keep the last iterate
            break
        alpha = rr / curvature
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = torch.dot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, SolveInfo(done, _relative(r, rhs_norm), breakdown)


def normal_conjugate_gradient(
    matvec: MatVec, rhs: Tensor, max_iter: int, tol: float
) -> tuple[Tensor, SolveInfo]:
    r"""CG on the normal equations :math:`A^\top A x = A^\top b` (here :math:`A^\top = A`).

    Works for symmetric indefinite (nonsingular) ``A`` at the price of squaring the
    condition number; two products per iteration; ``max_iter`` counts iterations.
    """
    x, info = conjugate_gradient(lambda v: matvec(matvec(v)), matvec(rhs), max_iter, tol)
    return x, SolveInfo(2 * info.iterations + 1, info.relative_residual, info.breakdown)


def neumann(matvec: MatVec, rhs: Tensor, max_iter: int, alpha: float) -> tuple[Tensor, SolveInfo]:
    r"""Truncated Neumann series :math:`x = \alpha\sum_{j=0}^{K-1}(I-\alpha A)^j b`, ``K = max_iter``.

    Converges to :math:`A^{-1}b` when the eigenvalues of ``A`` lie in :math:`(0, 2/\alpha)`;
    the error after ``K`` terms is :math:`(I-\alpha A)^K A^{-1} b` (Lorraine et al. 2020,
    "Optimizing millions of hyperparameters by implicit differentiation").
    """
    term = alpha * rhs
    x = term.clone()
    for _ in range(max_iter - 1):
        term = term - alpha * matvec(term)
        x = x + term
    return x, SolveInfo(max_iter - 1, float("nan"))


def largest_eigenvalue(matvec: MatVec, like: Tensor, iterations: int, generator: torch.Generator) -> float:
    r"""Power-iteration estimate of :math:`\max_i |\mu_i(A)|` from a random start."""
    v = torch.randn(like.numel(), generator=generator, dtype=torch.float64).to(like)
    estimate = 0.0
    for _ in range(iterations):
        v = v / v.norm()
        av = matvec(v)
        estimate = float(av.norm())
        if estimate == 0.0:
            break
        v = av
    return estimate
