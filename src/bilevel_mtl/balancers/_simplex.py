"""Numerical helpers on the probability simplex shared by the gradient balancers."""

from __future__ import annotations

import torch
from torch import Tensor


def check_jacobian(jacobian: Tensor, name: str = "G", rows: int | None = None) -> Tensor:
    """Return ``jacobian`` if it is a finite floating ``[m, d]`` matrix, else raise ``ValueError``."""
    if not isinstance(jacobian, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(jacobian).__name__}")
    if jacobian.dim() != 2:
        raise ValueError(f"{name} must be a matrix [m, d] of task gradients, got {tuple(jacobian.shape)}")
    if rows is not None and jacobian.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows (one per task), got {jacobian.shape[0]}")
    if jacobian.shape[0] == 0:
        raise ValueError(f"{name} has no rows: there must be at least one task")
    if not jacobian.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {jacobian.dtype}")
    if not bool(torch.isfinite(jacobian).all()):
        raise ValueError(f"{name} has non-finite entries (NaN or inf task gradients)")
    return jacobian


def gramian(jacobian: Tensor) -> Tensor:
    r"""The Gram matrix :math:`GG^\top` in float64, safe at any row scale.

    Each row is divided by its largest entry :math:`s_i` before the product (computed in
    the input's precision), and :math:`K_{ij} = s_is_j(\hat G\hat G^\top)_{ij}` is assembled
    in float64, so rows with norms far apart (1e-20 beside 1e20 in float32) neither
    overflow nor underflow.
    """
    scale = jacobian.detach().abs().amax(dim=1, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    unit = jacobian / scale
    scale64 = scale.to(torch.float64)
    return (unit @ unit.mT).to(torch.float64) * (scale64 @ scale64.mT)


def correlation(gram: Tensor) -> tuple[Tensor, Tensor]:
    r"""The gradient norms :math:`n_i=\sqrt{K_{ii}}` and :math:`C = D^{-1}KD^{-1}` (unit
    diagonal) of the tasks with :math:`n_i>0`, as ``(norms, C)``; ``norms`` has every task."""
    norms = gram.diagonal().clamp(min=0).sqrt()
    active = norms > 0
    unit = norms[active]
    return norms, gram[active][:, active] / torch.outer(unit, unit)


def project_simplex(v: Tensor) -> Tensor:
    r"""Euclidean projection of ``v`` (``[m]``) onto :math:`\{w \ge 0, \sum w = 1\}` (sort-based).

    ``v`` is first shifted by its maximum (the projection is invariant to adding a constant
    to every entry), so that the largest entry is always in the support, whatever the
    magnitude of ``v`` (at 1e20, ``u - 1`` would round back to ``u``).
    """
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"cannot project non-finite weights {v.tolist()} on the simplex")
    v = v - v.max()
    u, _ = torch.sort(v, descending=True)
    cumulative = torch.cumsum(u, 0) - 1
    index = torch.arange(1, v.numel() + 1, dtype=v.dtype, device=v.device)
    support = int((u - cumulative / index > 0).nonzero().max())
    threshold = cumulative[support] / (support + 1)
    return (v - threshold).clamp(min=0)


def min_norm_weights(gram: Tensor, tol: float = 1e-12, max_iter: int | None = None) -> Tensor:
    r"""Weights :math:`w\in\Delta` of the min-norm point of the convex hull of the rows of ``G``.

    Wolfe's (1976) minimum-norm-point algorithm on the Gram matrix ``gram`` = :math:`GG^\top`:
    finite termination, exact up to round-off. Stops when the optimality condition
    :math:`(Kw)_j \ge w^\top K w` holds for all ``j`` within ``tol`` times :math:`w^\top Kw`
    plus the round-off of :math:`Kw`. Every threshold is relative, so a short hull beside
    a long gradient is solved as accurately as any other: the affine sub-problems are
    solved on the unit-diagonal :math:`C = D^{-1}KD^{-1}` (:func:`correlation`), and a point
    leaves the corral when its contribution :math:`w_i\|g_i\|` is negligible against the others'.
    """
    k = gram.to("cpu", torch.float64)  # a small m × m problem with scalar control flow
    m = k.shape[0]
    norms = k.diagonal().clamp(min=0).sqrt()
    lam = torch.zeros(m, dtype=torch.float64)
    if float(norms.max()) <= 0:
        return torch.full((m,), 1.0 / m, dtype=torch.float64, device=gram.device)
    if bool((norms == 0).any()):  # a zero gradient is the min-norm point
        lam[int((norms == 0).nonzero()[0])] = 1.0
        return lam.to(gram.device)
    largest = float(norms.max())
    k, norms = k / largest**2, norms / largest
    unit = k / torch.outer(norms, norms)
    magnitude = k.abs()
    roundoff = 4 * m * torch.finfo(torch.float64).eps
    limit = max_iter if max_iter is not None else 50 * m + 100

    def significant(weights: Tensor, corral: list[int]) -> Tensor:
        contribution = weights * norms[corral]
        return contribution > 1e-15 * float(contribution.abs().max())

    corral = [int(norms.argmin())]
    lam[corral[0]] = 1.0
    for _ in range(limit):
        kw = k @ lam
        j = int(kw.argmin())
        norm2 = float(lam @ kw)
        slack = tol * norm2 + roundoff * float((magnitude @ lam).max())
        if norm2 - float(kw[j]) <= slack or j in corral:
            break
        corral.append(j)
        for _ in range(limit):
            alpha = _affine_minimizer(unit, norms, corral)
            sub = lam[corral]
            inside = significant(alpha, corral)
            if bool(inside.all()):
                lam.zero_()
                lam[corral] = alpha
                break
            blocked = ~inside
            theta = float((sub[blocked] / (sub[blocked] - alpha[blocked])).min())
            new = theta * alpha + (1 - theta) * sub
            keep = significant(new, corral)
            lam.zero_()
            lam[corral] = new.clamp(min=0)
            corral = [i for i, kept in zip(corral, keep.tolist(), strict=True) if kept]
            lam /= lam.sum()
    return lam.to(gram.device)


def _affine_minimizer(unit: Tensor, norms: Tensor, corral: list[int]) -> Tensor:
    r"""Barycentric weights of the min-norm point of the affine hull of the corral's points.

    :math:`\min x^\top Kx` s.t. :math:`\mathbf 1^\top x = 1` in the contributions
    :math:`y = x\odot\|g\|`: :math:`\min y^\top Cy` s.t. :math:`(1/\|g\|)^\top y = 1`, a
    bordered system free of the gradients' scales.
    """
    size = len(corral)
    border = 1 / norms[corral]
    system = torch.zeros(size + 1, size + 1, dtype=unit.dtype)
    system[:size, :size] = unit[corral][:, corral]
    system[:size, size] = border / border.max()
    system[size, :size] = border / border.max()
    rhs = torch.zeros(size + 1, dtype=unit.dtype)
    rhs[size] = 1.0
    x: Tensor = (torch.linalg.pinv(system) @ rhs)[:size] / norms[corral]
    return x / x.sum()
