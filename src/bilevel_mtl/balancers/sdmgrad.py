"""SDMGrad: stochastic direction-oriented multi-objective gradient descent."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._checks import check_integer, check_nonnegative, check_positive
from ._simplex import check_jacobian, project_simplex
from .gradient import Combination, GradientBalancer


def sdmgrad_update(
    weights: Tensor,
    first: Tensor,
    second: Tensor,
    lam: float = 0.3,
    num_iterations: int = 20,
    lr: float = 10.0,
    momentum: float = 0.5,
) -> Tensor:
    r"""SDMGrad's inner loop on :math:`w\in\Delta`: projected SGD with momentum on
    :math:`\tfrac12 w^\top \hat K w + \lambda\, w^\top \hat K\mathbf{1}/m`.

    :math:`\hat K = G_1G_2^\top/s^2` from two independent batches, normalised by
    :math:`s=\operatorname{mean}_i\sqrt{\max(\hat K_{ii},0)}` (LibMTL's safe form of the
    code's :math:`\sqrt{K_{ii}+10^{-4}}`), so the weights do not depend on the gradients'
    common scale. Each iteration: :math:`b \leftarrow \mu b + \nabla`,
    :math:`w \leftarrow \Pi_\Delta(w - \text{lr}\, b)` (``torch.optim.SGD``'s momentum).
    """
    check_jacobian(first, "first", rows=weights.numel())
    check_jacobian(second, "second", rows=weights.numel())
    if first.shape != second.shape:
        raise ValueError(
            f"the two gradient samples differ in shape: {tuple(first.shape)} vs {tuple(second.shape)}"
        )
    k = (first @ second.mT).to(torch.float64)
    scale = float(k.diagonal().clamp(min=0).sqrt().mean())
    if scale > 0:
        k = k / scale**2
    mean_row = k.mean(dim=1)
    w = weights.to(torch.float64)
    buffer: Tensor | None = None
    for _ in range(num_iterations):
        grad = k @ w + lam * mean_row
        buffer = grad if buffer is None else momentum * buffer + grad
        w = project_simplex(w - lr * buffer)
    return w.to(weights)


class SDMGrad(GradientBalancer):
    r"""SDMGrad (Xiao, Ban & Ji 2023, "Direction-oriented Multi-objective Learning: Simple and
    Provable Stochastic Algorithms", Algorithm 1).

    .. math:: w \leftarrow \Pi_\Delta\Big(w - \beta\, G_{\xi}\big(G_{\xi'}^\top w
              + \lambda\, \bar g_{\xi'}\big)\Big),\qquad
              \theta \leftarrow \theta - \eta\,\frac{G_\zeta^\top w + \lambda\,\bar g_\zeta}{1+\lambda}

    :math:`\lambda` pulls the direction toward the average gradient :math:`\bar g`
    (λ → ∞ is LS, λ = 0 stochastic MGDA). **The closure returns a** ``[3, m]``
    **tensor** of losses on three independent batches: row 0 is ζ (the update), rows 1
    and 2 are ξ, ξ' (the official code's order). ``w`` persists across steps and is
    refined by ``num_iterations`` projected momentum-SGD steps per call
    (:func:`sdmgrad_update`). Defaults are the official scripts' (λ = 0.3, 20 iterations,
    lr 10, momentum 0.5; LibMTL uses lr 5). The official code multiplies the update by
    ``m`` "to match the sum loss"; here it keeps LS's scale. Reported weights
    :math:`(w+\lambda/m)/(1+\lambda)` are on the simplex; parameters outside ``shared``
    get the gradient of those weights on the rows' mean loss. Invariance: a common
    gradient scale leaves the weights unchanged.
    """

    supports_representation = False
    w: Tensor

    name = "sdmgrad"
    reference = "Xiao, Ban & Ji 2023 (NeurIPS)"
    summary = "direction-oriented stochastic MGDA"
    num_batches = 3
    simplex = True
    stateful = True
    scale_invariance = "common"

    def __init__(
        self,
        num_tasks: int,
        *,
        lam: float = 0.3,
        num_iterations: int = 20,
        lr: float = 10.0,
        momentum: float = 0.5,
        shared: nn.Module | None = None,
    ) -> None:
        super().__init__(num_tasks, shared=shared)
        lam = check_nonnegative("lam", lam)
        lr = check_positive("lr", lr)
        if not (math.isfinite(momentum) and 0 <= momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        num_iterations = check_integer("num_iterations", num_iterations)
        self.lam, self.lr, self.momentum = float(lam), float(lr), float(momentum)
        self.num_iterations = num_iterations
        self.register_buffer("w", torch.full((num_tasks,), 1.0 / num_tasks))

    def combine(self, jacobian: Tensor, losses: Tensor, representation: Tensor | None) -> Combination:
        w = sdmgrad_update(
            self.w.to(jacobian),
            jacobian[1],
            jacobian[2],
            self.lam,
            self.num_iterations,
            self.lr,
            self.momentum,
        )
        weights = (w + self.lam / self.num_tasks) / (1 + self.lam)
        return Combination(weights, weights @ jacobian[0], state={"w": w})
