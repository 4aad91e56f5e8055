"""PCGrad: project away the conflicting components of the task gradients."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ._simplex import check_jacobian, gramian
from .base import forked
from .gradient import Combination, GradientBalancer


def pcgrad_weights(jacobian: Tensor, generator: torch.Generator | None = None) -> Tensor:
    r"""PCGrad's update :math:`\frac1m\sum_i g_i^{PC}` written as weights on the rows of ``G``.

    For each task ``i``, in a random order of the others ``j``:
    :math:`g_i^{PC} \leftarrow g_i^{PC} - \frac{\min(g_i^{PC}\cdot g_j,\,0)}{\|g_j\|^2}\, g_j`
    (projection on the normal plane of the *original* :math:`g_j` when they conflict).
    Every :math:`g_i^{PC}` stays a combination of the rows, so the rule runs on the Gram
    matrix. The mean (not the sum of the paper's code) keeps LS's scale: without
    conflicts the weights are :math:`1/m`.
    """
    check_jacobian(jacobian)
    k = gramian(jacobian).cpu()
    m = k.shape[0]
    total = torch.zeros(m, dtype=torch.float64)
    for i in range(m):
        current = torch.zeros(m, dtype=torch.float64)
        current[i] = 1.0
        for j in torch.randperm(m, generator=generator).tolist():
            if j == i or k[j, j] <= 0:
                continue
            inner = float(k[j] @ current)
            if inner < 0:
                current[j] -= inner / float(k[j, j])
        total += current
    return (total / m).to(jacobian)


class PCGrad(GradientBalancer):
    r"""PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning", Algorithm 1).

    .. math:: g_i^{PC} = g_i - \sum_{j\in\pi_i,\ \text{conflict}}
              \frac{g_i^{PC}\cdot g_j}{\|g_j\|^2} g_j,\qquad
              \theta \leftarrow \theta - \eta\,\frac1m\sum_i g_i^{PC}

    with a fresh random order :math:`\pi_i` of the other tasks for each ``i`` (drawn from
    the balancer's own generator, ``seed``; saved in ``state_dict``). After the surgery
    no :math:`g_i^{PC}` conflicts with the last gradient it was projected against; with
    ``m = 2`` the rule is deterministic and no pair conflicts. Scale: ×1/m against the
    paper's sum (LibMTL, TorchJD) so that LS is the conflict-free case; a common gradient
    scale leaves the weights unchanged.
    """

    name = "pcgrad"
    reference = "Yu et al. 2020 (NeurIPS)"
    summary = "projects conflicting gradients"
    stateful = True
    randomized = True
    scale_invariance = "common"

    def __init__(
        self,
        num_tasks: int,
        *,
        seed: int = 0,
        shared: nn.Module | None = None,
        representation: bool = False,
    ) -> None:
        super().__init__(num_tasks, shared=shared, representation=representation)
        self.generator = torch.Generator().manual_seed(seed)

    def combine(self, jacobian: Tensor, losses: Tensor, representation: Tensor | None) -> Combination:
        generator = forked(self.generator)
        weights = pcgrad_weights(jacobian.flatten(1), generator)
        return Combination(weights, state={"generator": generator.get_state()})

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
