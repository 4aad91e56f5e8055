"""Dynamic weight average."""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_integer, check_positive
from .base import LossBalancer


class DWA(LossBalancer):
    r"""Dynamic Weight Average (Liu, Johns & Davison 2019, "End-to-End Multi-Task Learning with
    Attention", eq. 7):

    .. math:: w_i(t) = \operatorname{softmax}_i\big(r(t-1)/T\big),\qquad
              r_i(t-1) = \bar L_i(t-1)/\bar L_i(t-2),\qquad T = 2,

    where :math:`\bar L_i(t)` is task ``i``'s mean loss over period ``t``; uniform weights
    until two periods are complete. The paper's period is an epoch; the one-call step
    does not see epochs, so a period is ``window`` consecutive steps: set it to your steps
    per epoch for the paper's rule. The default 25 is Nash-MTL's ``iteration_window``; that
    code compares two *sliding* windows updated every step, here the periods are disjoint,
    as epochs are (LibMTL uses epochs). Weights are
    on the simplex (the paper's ``K·softmax`` sums to ``m``; here LS's scale). They are
    exactly invariant to per-task loss scales (only loss ratios enter). Losses must be > 0.
    """

    name = "dwa"
    reference = "Liu, Johns & Davison 2019 (CVPR)"
    summary = "softmax of loss ratios, T=2"
    simplex = True
    stateful = True
    scale_invariance = "weights"

    running_sum: Tensor
    running_count: Tensor
    history: Tensor
    periods: Tensor

    def __init__(self, num_tasks: int, *, temperature: float = 2.0, window: int = 25) -> None:
        super().__init__(num_tasks)
        temperature = check_positive("temperature", temperature)
        window = check_integer("window", window, what=" (steps per period)")
        self.temperature = float(temperature)
        self.window = window
        self.register_buffer("running_sum", torch.zeros(num_tasks, dtype=torch.float64))
        self.register_buffer("running_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("history", torch.ones(2, num_tasks, dtype=torch.float64))
        self.register_buffer("periods", torch.zeros((), dtype=torch.long))

    def _weights(self, losses: Tensor) -> Tensor:
        if bool((losses <= 0).any()):
            bad = [i for i, value in enumerate(losses.tolist()) if value <= 0]
            raise ValueError(f"DWA uses ratios of mean losses: they must be > 0, tasks {bad} are not")
        if int(self.periods) >= 2:
            ratios = self.history[1] / self.history[0]
            weights = torch.softmax(ratios / self.temperature, 0)
        else:
            weights = torch.full((self.num_tasks,), 1.0 / self.num_tasks, dtype=torch.float64)
        return weights.to(losses)

    def _update(self, losses: Tensor, losses_after: Tensor | None) -> None:
        self.running_sum += losses.to(self.running_sum)
        self.running_count += 1
        if int(self.running_count) == self.window:
            self.history.copy_(torch.stack([self.history[1], self.running_sum / self.window]))
            self.running_sum.zero_()
            self.running_count.zero_()
            self.periods += 1
