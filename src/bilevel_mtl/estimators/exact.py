"""The reference hypergradient: the dense Jacobian of the look-ahead losses, by autograd."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Estimate, Estimator, UpperObjective
from .unrolled import check_eps_root, unrolled_losses


class Exact(Estimator):
    r"""Reference :math:`\nabla\Phi(\lambda) = J^\top \partial_{f'} R`, with the dense Jacobian
    :math:`J_{ij} = \partial f_i(A(\lambda,\theta)) / \partial\lambda_j` built row by row.

    ``A`` is one step of the user's optimizer from its warm state (as in
    :class:`Unrolled` with ``steps=1``, which gets the same vector from a single
    vector-Jacobian product); here every row of ``J`` is its own reverse pass, so the
    two are independent computations of one quantity, and :meth:`jacobian` exposes
    how each weight moves each task's loss after the step. For the zeroth-order
    estimators it is the gradient of the *un-smoothed* Φ they sample (their
    smoothing bias is :math:`O(r^2)`). For tests and benchmarks; ``eps_root`` as in
    :class:`Unrolled`.

    Cost per estimate: one backward that keeps its graph, one forward at the
    look-ahead parameters, then ``m`` reverse passes (double backward) through
    both. Extra memory: one set of activations with its double-backward graph and
    one parameter and optimizer-state copy.
    """

    name = "exact"
    through_step = True
    reference = "dense autograd through the look-ahead (reference)"
    summary = "m Jacobian rows through the one-step look-ahead: for tests and benchmarks"
    cost = "O(m·d)"

    def __init__(self, eps_root: float = 1e-16) -> None:
        self.eps_root = check_eps_root(eps_root)

    def __repr__(self) -> str:
        return f"Exact(eps_root={self.eps_root})"

    def jacobian(self, objective: UpperObjective, weights: Tensor) -> tuple[Tensor, Tensor]:
        """``(losses_after, J)``: :math:`f(A(\\lambda,\\theta))` ``[m]`` and its Jacobian ``[m, m]``."""
        context = objective.require_lower(type(self).__name__)
        lam = weights.detach().clone().requires_grad_(True)
        rows: list[Tensor] = []
        with torch.enable_grad():
            after = unrolled_losses(context, lam, 1, self.eps_root)
            for i in range(after.numel()):
                (row,) = torch.autograd.grad(
                    after[i], lam, retain_graph=i + 1 < after.numel(), materialize_grads=True
                )
                rows.append(row)
        return after.detach(), torch.stack(rows)

    def estimate(self, objective: UpperObjective, weights: Tensor, generator: torch.Generator) -> Estimate:
        del generator
        after, jac = self.jacobian(objective, weights)
        point = after.clone().requires_grad_(True)
        with torch.enable_grad():
            value = objective.criterion(objective.losses_before, point)
            (outer,) = torch.autograd.grad(value, point, materialize_grads=True)
        return Estimate(jac.T @ outer.to(jac), [objective.value(after)])
