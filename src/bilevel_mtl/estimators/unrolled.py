"""Hypergradients by reverse-mode autodiff through k look-ahead steps of the user's optimizer."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_integer, check_nonnegative
from ..lower_level import LowerLevel
from .base import Estimate, Estimator, UpperObjective


def check_eps_root(eps_root: float) -> float:
    """Return ``float(eps_root)`` if it is a finite number >= 0, else raise ``ValueError``."""
    return check_nonnegative("eps_root", eps_root)


def unrolled_losses(context: LowerLevel, weights: Tensor, steps: int, eps_root: float) -> Tensor:
    r"""Task losses :math:`f(A^k(w,\theta))` after ``steps`` look-ahead steps on the step's batch.

    Differentiable in ``weights`` (make it require grad). Every step uses the user's
    optimizer rule from its warm state, the same batch and the same dropout masks;
    step ``j > 1`` takes the gradient of :math:`w^\top f` at the new parameters.
    """
    lookahead = context.lookahead(eps_root)
    grads = context.gradients(weights, create_graph=True)
    result = lookahead.step(grads)
    active = [i for i, g in enumerate(grads) if g is not None]
    for _ in range(steps - 1):
        losses = context.losses_at(result.params)
        weighted = torch.dot(weights.to(losses), losses)
        new = torch.autograd.grad(
            weighted, [result.params[i] for i in active], create_graph=True, allow_unused=True
        )
        step_grads: list[Tensor | None] = [None] * len(grads)
        for i, g in zip(active, new, strict=True):
            step_grads[i] = g
        result = lookahead.step(step_grads, result.params, result.states)
    return context.losses_at(result.params)


class Unrolled(Estimator):
    r"""Exact hypergradient of the ``k``-step objective by autodiff through the unrolled steps:

    .. math:: \nabla_\lambda\, R\big(f(\theta),\, f(A^k(\lambda, \theta))\big),
              \qquad A^{j+1} = A(\lambda, A^j),

    where ``A`` is one step of the user's own optimizer (Adam, AdamW, SGD, Adagrad,
    RMSprop) replayed functionally from its *warm* state (Maclaurin et al. 2015,
    "Gradient-based hyperparameter optimization through reversible learning";
    Franceschi et al. 2017, "Forward and reverse gradient-based hyperparameter
    optimization"). ``steps=1`` is the gradient of the very objective the
    zeroth-order estimators sample (MARIGOLD's Φ); ``steps > 1`` looks further
    ahead on the same batch (a different, longer-horizon objective).

    ``eps_root`` (default 1e-16) goes under the square roots of adaptive optimizers:
    with 0, a coordinate whose gradient and second moment are zero gives
    :math:`0\cdot\infty` = NaN in the derivative. From a *fresh* Adam state the first
    step is sign-like, :math:`-\eta g/(|g|+\epsilon)`, so the one-step hypergradient is
    ≈ 0; use the warm state (this estimator always does) or ``steps >= 2``.

    Cost per estimate: ``k`` backwards that keep their graph (the first on the
    step's retained graph), ``k`` forwards at the look-ahead parameters, then one
    reverse pass through all of them (≈ 2k more backward-equivalents, double
    backward). Extra memory: ``k`` sets of activations with their double-backward
    graphs, plus ``k`` parameter and optimizer-state copies.
    """

    name = "unrolled"
    through_step = True
    reference = "reverse-mode differentiation through k optimizer steps (Maclaurin et al. 2015)"
    summary = "exact gradient of the k-step objective; double backward, memory grows with k"

    def __init__(self, steps: int = 1, eps_root: float = 1e-16) -> None:
        steps = check_integer("steps", steps)
        self.steps = steps
        self.eps_root = check_eps_root(eps_root)

    def __repr__(self) -> str:
        return f"Unrolled(steps={self.steps}, eps_root={self.eps_root})"

    def value(self, objective: UpperObjective, weights: Tensor) -> Tensor:
        """The ``k``-step objective Φ_k(weights), differentiable in ``weights`` (no recording)."""
        context = objective.require_lower(type(self).__name__)
        with torch.enable_grad():
            after = unrolled_losses(context, weights, self.steps, self.eps_root)
            value: Tensor = objective.criterion(objective.losses_before, after)
        return value

    def estimate(self, objective: UpperObjective, weights: Tensor, generator: torch.Generator) -> Estimate:
        del generator
        context = objective.require_lower(type(self).__name__)
        lam = weights.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            after = unrolled_losses(context, lam, self.steps, self.eps_root)
            value = objective.criterion(objective.losses_before, after)
            (grad,) = torch.autograd.grad(value, lam, materialize_grads=True)
        return Estimate(grad.detach(), [objective.value(after)])
