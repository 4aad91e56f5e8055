"""MGDA and MGDA-UB: the min-norm point of the convex hull of the task gradients."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor, nn

from .._checks import check_choice
from ._simplex import check_jacobian, gramian, min_norm_weights
from .gradient import Combination, GradientBalancer

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def gradient_normalizers(jacobian: Tensor, losses: Tensor | None, normalization: str) -> Tensor:
    r"""Sener & Koltun's normalizers :math:`n_i`: 1, :math:`\|g_i\|`, :math:`f_i` or :math:`f_i\|g_i\|`."""
    check_choice("normalization", normalization, NORMALIZATIONS)
    norms = jacobian.to(torch.float64).norm(dim=1)
    if normalization in ("loss", "loss+"):
        if losses is None:
            raise ValueError(f"normalization={normalization!r} needs the task losses")
        values = losses.detach().to(torch.float64).reshape(-1)
        if bool((values <= 0).any()):
            raise ValueError(f"normalization={normalization!r} divides by the losses: they must be > 0")
    tiny = torch.finfo(torch.float64).tiny
    normalizers: Tensor
    if normalization == "none":
        normalizers = torch.ones_like(norms)
    elif normalization == "l2":
        normalizers = norms.clamp(min=tiny)
    elif normalization == "loss":
        normalizers = values
    else:
        normalizers = (values * norms).clamp(min=tiny)
    return normalizers


def mgda_weights(jacobian: Tensor, losses: Tensor | None = None, normalization: str = "none") -> Tensor:
    r"""MGDA's weights :math:`w^\star = \arg\min_{w\in\Delta}\|\sum_i w_i g_i / n_i\|^2`.

    ``jacobian`` is :math:`G\in\mathbb{R}^{m\times d}` (rows :math:`g_i`); :math:`n_i` are
    :func:`gradient_normalizers`. The min-norm problem is solved exactly on the Gram
    matrix by Wolfe's algorithm (KKT: :math:`(Kw)_j\ge w^\top Kw` for all ``j``, with
    equality on the support). As in Sener & Koltun's code, the returned weights
    multiply the *raw* losses (with ``normalization="none"`` the update :math:`w^\top G`
    is the min-norm element itself).
    """
    check_jacobian(jacobian)
    norms = gradient_normalizers(jacobian, losses, normalization)
    weights = min_norm_weights(gramian(jacobian) / torch.outer(norms, norms))
    return weights.to(jacobian)


class MGDA(GradientBalancer):
    r"""MGDA (Désidéri 2012; Sener & Koltun 2018, "Multi-Task Learning as Multi-Objective Optimization").

    .. math:: w^\star = \arg\min_{w\in\Delta}\Big\|\sum_i w_i \nabla f_i\Big\|^2,
              \qquad \theta \leftarrow \theta - \eta \sum_i w^\star_i \nabla f_i

    The common descent direction of minimal norm (zero at Pareto-stationary points).
    ``representation=True`` with ``shared=encoder`` is **MGDA-UB**: the same problem on
    the gradients with respect to the encoder's output (an upper bound of the shared
    objective), then one ordinary backward of :math:`\sum_i w_i f_i`.

    Weights are on the simplex. Invariance: a common scale of all gradients leaves the
    weights unchanged (the update scales with it); per-task scales do not.

    Args:
        num_tasks: ``m``.
        normalization: Sener & Koltun's gradient normalization ``"none"`` (default, as
            LibMTL), ``"l2"``, ``"loss"`` or ``"loss+"``; the weights are computed on
            :math:`g_i/n_i` and applied to the raw losses, as in their code.
        shared, representation: see :class:`GradientBalancer`.

    Solver: Wolfe's exact min-norm-point algorithm (Sener's code and TorchJD use
    Frank–Wolfe with a 1e-5 / 1e-3 stopping rule; the weights agree within those).
    """

    name = "mgda"
    reference = "Désidéri 2012; Sener & Koltun 2018 (NeurIPS)"
    summary = "min-norm point of the task gradients' convex hull"
    simplex = True
    scale_invariance = "common"

    def __init__(
        self,
        num_tasks: int,
        *,
        normalization: str = "none",
        shared: nn.Module | None = None,
        representation: bool = False,
    ) -> None:
        super().__init__(num_tasks, shared=shared, representation=representation)
        self.normalization = check_choice("normalization", normalization, NORMALIZATIONS)

    def combine(self, jacobian: Tensor, losses: Tensor, representation: Tensor | None) -> Combination:
        return Combination(mgda_weights(jacobian.flatten(1), losses, self.normalization))


class MGDAUB(MGDA):
    r"""MGDA-UB (Sener & Koltun 2018): :class:`MGDA` on the gradients with respect to the shared
    module's output, ``MGDA(m, shared=encoder, representation=True)``.

    The min-norm problem on :math:`\nabla_z f_i` (an upper bound of the shared objective),
    from one batched backward through the heads only, then one ordinary backward of
    :math:`\sum_i w_i f_i`: O(d) per step.
    """

    name = "mgda_ub"
    reference = "Sener & Koltun 2018 (NeurIPS), MGDA-UB"
    summary = "MGDA on representation gradients (m backward passes through the heads only)"
    cost = "O(d)"
    requires: ClassVar[Mapping[str, str]] = {"shared": "the encoder module whose output feeds the task heads"}

    def __init__(self, num_tasks: int, *, shared: nn.Module, normalization: str = "none") -> None:
        super().__init__(num_tasks, normalization=normalization, shared=shared, representation=True)
