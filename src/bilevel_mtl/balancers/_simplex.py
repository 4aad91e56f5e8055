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
    """The Gram matrix :math:`GG^\\top` in float64 (computed in the input's precision)."""
    return (jacobian @ jacobian.mT).to(torch.float64)


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
    :math:`(Kw)_j \ge w^\top K w` holds for all ``j`` within ``tol`` times the largest
    squared gradient norm.
    """
    k = gram.to("cpu", torch.float64)  # a small m × m problem with scalar control flow
    m = k.shape[0]
    scale = float(k.diagonal().max())
    if scale <= 0:
        return torch.full((m,), 1.0 / m, dtype=torch.float64, device=gram.device)
    k = k / scale
    limit = max_iter if max_iter is not None else 50 * m + 100
    corral = [int(k.diagonal().argmin())]
    lam = torch.zeros(m, dtype=torch.float64, device=k.device)
    lam[corral[0]] = 1.0
    for _ in range(limit):
        kw = k @ lam
        j = int(kw.argmin())
        if float(lam @ kw) - float(kw[j]) <= tol or j in corral:
            break
        corral.append(j)
        for _ in range(limit):
            alpha = _affine_minimizer(k, corral)
            sub = lam[corral]
            if bool((alpha > 1e-15).all()):
                lam.zero_()
                lam[corral] = alpha
                break
            blocked = alpha <= 1e-15
            theta = float((sub[blocked] / (sub[blocked] - alpha[blocked])).min())
            new = theta * alpha + (1 - theta) * sub
            lam.zero_()
            lam[corral] = new.clamp(min=0)
            corral = [i for i, value in zip(corral, new.tolist(), strict=True) if value > 1e-15]
            lam /= lam.sum()
    return lam.to(gram.device)


def _affine_minimizer(k: Tensor, corral: list[int]) -> Tensor:
    """Barycentric weights of the min-norm point of the affine hull of the corral's points."""
    size = len(corral)
    system = torch.zeros(size + 1, size + 1, dtype=k.dtype, device=k.device)
    system[:size, :size] = k[corral][:, corral]
    system[:size, size] = 1.0
    system[size, :size] = 1.0
    rhs = torch.zeros(size + 1, dtype=k.dtype, device=k.device)
    rhs[size] = 1.0
    alpha: Tensor = (torch.linalg.pinv(system) @ rhs)[:size]
    return alpha / alpha.sum()
