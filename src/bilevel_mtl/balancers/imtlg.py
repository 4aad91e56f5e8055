"""IMTL-G: the update with equal projections on every task's unit gradient."""

from __future__ import annotations

import torch
from torch import Tensor

from ._simplex import check_jacobian, correlation, gramian
from .gradient import Combination, GradientBalancer


def imtlg_weights(jacobian: Tensor) -> Tensor:
    r"""IMTL-G's weights :math:`w = v/\mathbf{1}^\top v` with :math:`Kv = (\|g_1\|,\dots,\|g_m\|)`.

    Then :math:`d = G^\top w` has the same projection :math:`d^\top g_i/\|g_i\|` on every
    task (the closed form of Liu et al. 2021). For independent gradients it is solved as
    :math:`v = D^{-1}C^{-1}\mathbf{1}` with :math:`K = DCD` (:func:`correlation`), so tasks
    whose gradient norms lie orders of magnitude apart keep their share; dependent
    gradients use :math:`v = K^{+}(\|g_i\|)_i`, TorchJD's generalisation. Weights sum to 1;
    they are 0 when :math:`\mathbf{1}^\top v` vanishes against :math:`\sum_i|v_i|`.
    """
    check_jacobian(jacobian)
    k = gramian(jacobian)
    norms, c = correlation(k)
    if c.shape[0] == k.shape[0] and int(torch.linalg.matrix_rank(c, hermitian=True)) == k.shape[0]:
        v = torch.linalg.solve(c, torch.ones_like(norms)) / norms
    else:
        v = torch.linalg.pinv(k, hermitian=True) @ norms
    total = float(v.sum())
    if abs(total) <= 1e-12 * float(v.abs().sum()) or total == 0:
        return torch.zeros_like(v).to(jacobian)
    weights: Tensor = (v / total).to(jacobian)
    return weights


class IMTLG(GradientBalancer):
    r"""IMTL-G (Liu et al. 2021, "Towards Impartial Multi-task Learning", gradient balance).

    .. math:: d = \sum_i w_i g_i,\quad \sum_i w_i = 1,\quad
              d^\top \frac{g_i}{\|g_i\|} = d^\top \frac{g_j}{\|g_j\|}\ \ \forall i,j

    The paper's closed form :math:`w_{2:m} = g_1^\top U^\top (DU^\top)^{-1}` (with
    :math:`D, U` the differences of gradients and unit gradients) equals
    :func:`imtlg_weights` for independent gradients. Only the gradient part: IMTL-L's
    learned loss scales are not included. Invariance: per-task gradient scales leave the
    update direction unchanged (the projections stay equal).
    """

    name = "imtlg"
    reference = "Liu et al. 2021 (ICLR), IMTL-G"
    summary = "equal projections on unit gradients"
    scale_invariance = "direction"

    def combine(self, jacobian: Tensor, losses: Tensor, representation: Tensor | None) -> Combination:
        return Combination(imtlg_weights(jacobian.flatten(1)))
