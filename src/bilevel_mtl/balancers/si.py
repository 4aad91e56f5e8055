"""Scale-invariant scalarization: the mean of the log losses."""

from __future__ import annotations

from torch import Tensor

from .base import LossBalancer


class SI(LossBalancer):
    r"""Scale-invariant loss (the ``SI`` baseline of Navon et al. 2022, "Multi-Task Learning as a
    Bargaining Game"): minimise :math:`\frac1m\sum_i \log f_i`, i.e. weights

    .. math:: w_i = \frac{1}{m\, f_i},\qquad \nabla \tfrac1m\textstyle\sum_i\log f_i = \sum_i w_i\nabla f_i .

    The update is exactly invariant to per-task loss scales :math:`f_i \to c_i f_i`.
    The mean (the baselines' code sums) keeps LS's scale when all :math:`f_i = 1`.
    Losses must be > 0. Weights are not on the simplex.
    """

    name = "si"
    reference = "Navon et al. 2022 (ICML), SI baseline"
    summary = "mean of log losses"
    scale_invariance = "update"

    def _weights(self, losses: Tensor) -> Tensor:
        if bool((losses <= 0).any()):
            bad = [i for i, value in enumerate(losses.tolist()) if value <= 0]
            raise ValueError(f"SI takes the log of the losses: they must be > 0, tasks {bad} are not")
        return 1.0 / (self.num_tasks * losses)
