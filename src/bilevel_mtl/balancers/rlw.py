"""Random loss weighting."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import LossBalancer, forked


class RLW(LossBalancer):
    r"""Random loss weighting (Lin et al. 2022, "Reasonable Effectiveness of Random Weighting: A
    Litmus Test for Multi-Task Learning"): fresh weights every step,

    .. math:: w = \operatorname{softmax}(z),\qquad z\sim\mathcal N(0, I_m),

    from the balancer's own generator (``seed``; saved in ``state_dict``, so a resumed
    run draws the same sequence). Weights are on the simplex, ignore the losses, and
    have mean :math:`1/m` (LS's weights) by symmetry.
    """

    name = "rlw"
    reference = "Lin et al. 2022 (TMLR)"
    summary = "softmax of Gaussian weights each step"
    simplex = True
    stateful = True
    randomized = True
    scale_invariance = "weights"

    def __init__(self, num_tasks: int, *, seed: int = 0) -> None:
        super().__init__(num_tasks)
        self.generator = torch.Generator().manual_seed(seed)

    def _draw(self, generator: torch.Generator) -> Tensor:
        return torch.randn(self.num_tasks, generator=generator, dtype=torch.float64)

    def _weights(self, losses: Tensor) -> Tensor:
        return torch.softmax(self._draw(forked(self.generator)), 0).to(losses)

    def _update(self, losses: Tensor, losses_after: Tensor | None) -> None:
        self._draw(self.generator)  # advance past this step's draw

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
