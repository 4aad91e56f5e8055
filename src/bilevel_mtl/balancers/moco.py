"""MoCo: multi-objective gradient correction with tracked task gradients."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_nonnegative, check_positive
from ._simplex import check_jacobian, project_simplex
from .gradient import Combination, GradientBalancer


def moco_update(
    tracked: Tensor,
    weights: Tensor,
    jacobian: Tensor,
    beta: float,
    gamma: float,
    rho: float = 0.0,
    losses: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""One MoCo step: returns the new tracked gradients ``Y`` and weights :math:`\lambda`.

    .. math:: Y \leftarrow Y - \beta\,(Y - H),\qquad
              \lambda \leftarrow \Pi_\Delta\big(\lambda - \gamma\,(YY^\top+\rho I)\,\lambda\big)

    with :math:`H = G`, or, when ``losses`` are given, the authors' practical
    normalisation :math:`h_i = f_i\, g_i/\|g_i\|` (shared with LibMTL; that code adds
    1e-8 to :math:`\|g_i\|`, which shrinks gradients shorter than ~1e-8: here only zero
    gradients stay zero). The update is
    :math:`Y^\top\lambda`. ``beta`` and ``gamma`` are this step's step sizes.
    """
    check_jacobian(jacobian, rows=weights.numel())
    if tracked.shape != jacobian.shape:
        raise ValueError(f"tracked gradients {tuple(tracked.shape)} do not match G {tuple(jacobian.shape)}")
    target = jacobian
    if losses is not None:
        norms = jacobian.norm(dim=1, keepdim=True)
        unit = jacobian / torch.where(norms > 0, norms, torch.ones_like(norms))  # zero rows stay zero
        target = unit * losses.reshape(-1, 1).to(jacobian)
    tracked = tracked - beta * (tracked - target)
    k = (tracked @ tracked.mT).to(torch.float64)
    lam = weights.to(torch.float64)
    lam = project_simplex(lam - gamma * (k @ lam + rho * lam))
    return tracked, lam.to(weights)


class MoCo(GradientBalancer):
    r"""MoCo (Fernando et al. 2023, "Mitigating Gradient Bias in Multi-objective Learning: A Provably
    Convergent Approach", Algorithm 1).

    .. math:: y_{i} \leftarrow y_{i} - \beta_t\,(y_{i} - \nabla f_i),\quad
              \lambda \leftarrow \Pi_\Delta\big(\lambda - \gamma_t (Y Y^\top + \rho I)\lambda\big),\quad
              \theta \leftarrow \theta - \eta\, Y^\top\lambda

    with :math:`\beta_t=\beta/t^{\sigma_\beta}`, :math:`\gamma_t=\gamma/t^{\sigma_\gamma}`.
    The tracked gradients ``Y`` (an ``m × d`` state, zeros at first) reduce the bias of
    stochastic MGDA. Defaults are the authors' code as shared with LibMTL (β=0.5,
    σ_β=0.5, γ=0.1, σ_γ=0.5, ρ=0). Choices: λ is projected on the simplex as in the
    paper (that code applies a softmax instead); ``normalize_gradients=True`` uses that
    code's :math:`f_i g_i/\|g_i\|` in place of :math:`g_i` (off by default, as in the
    paper). The update lies in the span of past gradients, so it is returned as an
    explicit direction; weights (λ) are on the simplex. No scale invariance: the λ step
    grows with :math:`\|Y\|^2`.
    """

    supports_representation = False
    lam: Tensor
    step_count: Tensor

    name = "moco"
    reference = "Fernando et al. 2023 (ICLR)"
    summary = "MGDA on tracked (bias-corrected) gradients"
    simplex = True
    stateful = True

    def __init__(
        self,
        num_tasks: int,
        *,
        beta: float = 0.5,
        beta_decay: float = 0.5,
        gamma: float = 0.1,
        gamma_decay: float = 0.5,
        rho: float = 0.0,
        normalize_gradients: bool = False,
        shared: nn.Module | None = None,
    ) -> None:
        super().__init__(num_tasks, shared=shared)
        self.beta, self.gamma = check_positive("beta", beta), check_positive("gamma", gamma)
        self.beta_decay, self.gamma_decay = (
            check_nonnegative("beta_decay", beta_decay),
            check_nonnegative("gamma_decay", gamma_decay),
        )
        self.rho = check_nonnegative("rho", rho)
        if beta > 1:
            raise ValueError(f"beta must be at most 1 (a moving-average rate), got {beta!r}")
        self.normalize_gradients = normalize_gradients
        self.register_buffer("lam", torch.full((num_tasks,), 1.0 / num_tasks))
        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))
        self.tracked: Tensor | None = None

    def combine(self, jacobian: Tensor, losses: Tensor, representation: Tensor | None) -> Combination:
        tracked = torch.zeros_like(jacobian) if self.tracked is None else self.tracked
        if tracked.shape != jacobian.shape:
            raise ValueError(
                f"MoCo tracks gradients of shape {tuple(tracked.shape)}, got {tuple(jacobian.shape)}: "
                "the trained parameters changed"
            )
        step = int(self.step_count) + 1
        tracked, lam = moco_update(
            tracked.to(jacobian),
            self.lam,
            jacobian,
            beta=self.beta / step**self.beta_decay,
            gamma=self.gamma / step**self.gamma_decay,
            rho=self.rho,
            losses=losses if self.normalize_gradients else None,
        )
        state = {"tracked": tracked, "lam": lam, "step_count": self.step_count + 1}
        return Combination(lam.to(jacobian), lam.to(jacobian) @ tracked, state=state)

    def get_extra_state(self) -> dict[str, Any]:
        return {"tracked": self.tracked}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.tracked = state["tracked"]
