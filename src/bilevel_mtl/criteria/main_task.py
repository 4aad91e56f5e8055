"""Main-task loss for auxiliary learning."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_num_tasks
from .base import Criterion


class MainTaskLoss(Criterion):
    r"""Main-task loss after the look-ahead, as a change:
    :math:`\sum_i c_i\,(f_i(A(\omega, \theta)) - f_i(\theta))`.

    ``main`` is one task index or a list of indices (equal weights ``c``);
    ``coefficients`` gives a full non-negative weighting ``c`` instead. The auxiliary tasks
    only enter through the step A, so the upper level learns how much each
    auxiliary task helps the main one (MARIGOLD, Table 4, minimises
    :math:`f_{main}(A(\omega,\theta))`). Subtracting :math:`f(\theta)`, which does not
    depend on ω, leaves the gradient unchanged and removes the :math:`(n\,f_{main}/r)^2`
    term from the variance of zeroth-order estimates, which scale with the value.
    """

    coef: Tensor

    def __init__(
        self,
        num_tasks: int,
        main: int | Sequence[int] = 0,
        coefficients: Sequence[float] | Tensor | None = None,
    ) -> None:
        super().__init__()
        self.num_tasks = check_num_tasks(num_tasks)
        if coefficients is not None:
            coef = torch.as_tensor(coefficients, dtype=torch.get_default_dtype()).clone()
            if coef.shape != (num_tasks,) or bool((coef < 0).any()) or float(coef.sum()) <= 0:
                raise ValueError(
                    f"coefficients must be {num_tasks} non-negative numbers with a positive "
                    f"sum, got {coef.tolist()}"
                )
        else:
            indices = [main] if isinstance(main, int) else list(main)
            if not indices or any(
                isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < num_tasks for i in indices
            ):
                raise ValueError(f"main task indices must lie in [0, {num_tasks}), got {main!r}")
            coef = torch.zeros(num_tasks, dtype=torch.get_default_dtype())
            coef[indices] = 1.0 / len(indices)
        self.register_buffer("coef", coef)

    def forward(self, losses_before: Tensor, losses_after: Tensor) -> Tensor:
        return torch.dot(self.coef.to(losses_after), losses_after - losses_before)
