"""BiLB4MTL (LDC-MTL): bi-level loss balancing by loss-discrepancy control."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_nonnegative, check_positive
from .base import LossBalancer

ACTIVATIONS = ("softmax", "sigmoid")
OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


def discrepancy_objective(normalized: Tensor, router: Tensor, penalty: float) -> Tensor:
    r"""The joint objective :math:`\frac{\sum_k\sigma_k\tilde f_k}{\sum_k\sigma_k}
    + \lambda\sum_{k=1}^{m-1}|\sigma_k\tilde f_k-\sigma_{k+1}\tilde f_{k+1}|`.

    ``normalized`` are the losses :math:`\tilde f` and ``router`` the weights σ.
    """
    weighted = router * normalized
    return weighted.sum() / router.sum() + penalty * (weighted[:-1] - weighted[1:]).abs().sum()


class BiLB4MTL(LossBalancer):
    r"""BiLB4MTL (Xiao, Dong, Zou & Ji 2025, "Scalable Bilevel Loss Balancing for Multi-Task
    Learning", since renamed LDC-MTL; code OptMN-Lab/LDC-MTL).

    Bi-level problem on normalised losses :math:`\tilde f_k = f_k/f_k(\theta_0)` with
    router weights :math:`\sigma(W)`:

    .. math:: \min_W \sum_{k=1}^{m-1}\big|\sigma_k\tilde f_k(\theta^\star)
              - \sigma_{k+1}\tilde f_{k+1}(\theta^\star)\big|
              \quad\text{s.t.}\quad \theta^\star\in\arg\min_\theta \sum_k\sigma_k\tilde f_k(\theta),

    solved first-order by one joint gradient step per iteration on θ and W of the
    penalised objective (:func:`discrepancy_objective`)

    .. math:: \mathcal L(\theta, W) = \frac{\sum_k\sigma_k\tilde f_k}{\sum_k\sigma_k}
              + \lambda \sum_{k=1}^{m-1}|\sigma_k\tilde f_k - \sigma_{k+1}\tilde f_{k+1}| .

    Loss-only and O(1) in ``m``: the model gets the weights :math:`w = \partial\mathcal L/\partial f`
    (one ordinary backward of :math:`w^\top f`) and, once the model has stepped, the router
    takes one step of its own optimizer (default Adam, ``lr=1e-3``) on
    :math:`\partial\mathcal L/\partial W` at the same point (a simultaneous joint step).

    The code varies this per data set; the general form here takes, as choices:
    σ = ``softmax`` of a free logit vector (the code's routers are a linear map of pooled
    features with softmax (NYUv2, Cityscapes) or free sigmoids (CelebA, QM9)); ``clamp``
    off (NYUv2 and Cityscapes clamp σ to (0.2, 0.8)); normalisation by the first step's
    losses (NYUv2 divides by ``f0/min f0``, QM9 uses ``log(f/f0)``, Cityscapes none);
    the penalty on the weighted losses :math:`\sigma_k\tilde f_k` (Cityscapes penalises
    :math:`|f_1-f_2|` unweighted); λ = 0.05 (NYUv2, QM9; 0.1 Cityscapes, 0.01 CelebA);
    the router's learning rate is the model's in the code.
    The penalty couples *consecutive* tasks, so the method is not permutation
    equivariant; with normalisation the update is exactly invariant to per-task loss
    scales. Losses must be > 0 at the first step.
    """

    name = "bilb4mtl"
    reference = "Xiao et al. 2025 (arXiv 2502.08585, LDC-MTL)"
    summary = "bi-level loss-discrepancy control, first-order joint step"
    stateful = True
    scale_invariance = "update"
    permutation_equivariant = False

    initial_losses: Tensor
    has_initial: Tensor

    def __init__(
        self,
        num_tasks: int,
        *,
        penalty: float = 0.05,
        lr: float = 1e-3,
        activation: str = "softmax",
        clamp: tuple[float, float] | None = None,
        normalize: bool = True,
        optimizer: OptimizerFactory | None = None,
    ) -> None:
        super().__init__(num_tasks)
        penalty = check_nonnegative("penalty", penalty)
        lr = check_positive("lr", lr)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        if clamp is not None and not (len(clamp) == 2 and 0 <= clamp[0] < clamp[1]):
            raise ValueError(f"clamp must be (low, high) with 0 <= low < high, got {clamp!r}")
        self.penalty = float(penalty)
        self.clamp = clamp
        self.normalize = normalize
        self.router = nn.Parameter(torch.zeros(num_tasks))
        self.register_buffer("initial_losses", torch.ones(num_tasks))
        self.register_buffer("has_initial", torch.zeros((), dtype=torch.bool))
        factory = optimizer or (lambda params: torch.optim.Adam(params, lr=lr))
        self.optimizer = factory([self.router])

    def router_weights(self) -> Tensor:
        """The router's task weights σ (differentiable in ``router``)."""
        sigma = torch.softmax(self.router, 0) if self.activation == "softmax" else torch.sigmoid(self.router)
        if self.clamp is not None:
            sigma = sigma.clamp(self.clamp[0], self.clamp[1])
        return sigma

    def _initial(self, values: Tensor) -> Tensor:
        """The normalising losses: the first step's (these losses at the first step)."""
        if bool(self.has_initial):
            return self.initial_losses
        if bool((values <= 0).any()):
            raise ValueError("BiLB4MTL divides by the first step's losses: they must be > 0")
        return values

    def _gradients(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        r"""The model's weights :math:`\partial\mathcal L/\partial f` and the router's gradient."""
        values = losses.to(self.router)
        variable = values.clone().requires_grad_(True)
        with torch.enable_grad():
            normalized = variable / self._initial(values) if self.normalize else variable
            objective = discrepancy_objective(normalized, self.router_weights(), self.penalty)
            model_weights, router_grad = torch.autograd.grad(objective, [variable, self.router])
        return model_weights.to(losses), router_grad

    def _weights(self, losses: Tensor) -> Tensor:
        return self._gradients(losses)[0]

    def _update(self, losses: Tensor, losses_after: Tensor | None) -> None:
        router_grad = self._gradients(losses)[1]
        if self.normalize and not bool(self.has_initial):
            self.initial_losses.copy_(losses.to(self.initial_losses))
            self.has_initial.fill_(True)
        self.optimizer.zero_grad(set_to_none=True)
        self.router.grad = router_grad
        self.optimizer.step()

    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
