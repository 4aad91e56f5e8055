"""Positive (off-simplex) weights, for auxiliary-task weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import Parametrization


class PositiveWeights(Parametrization):
    r"""Positive weights :math:`\omega_i = \exp(s_i)`, trainable only where ``trainable``.

    For auxiliary learning: keep the main task's weight fixed (at ``init``) and
    learn positive weights for the auxiliary tasks. Not on the simplex.
    """

    on_simplex = False
    trainable_mask: Tensor

    def __init__(
        self,
        num_tasks: int,
        init: float | Sequence[float] = 1.0,
        trainable: Sequence[bool] | None = None,
    ) -> None:
        super().__init__(num_tasks)
        start = torch.as_tensor(init, dtype=torch.get_default_dtype())
        if start.dim() > 1 or (start.dim() == 1 and start.numel() != num_tasks):
            raise ValueError(
                f"init must be one number or {num_tasks} numbers (one per task), got {start.tolist()}"
            )
        start = start.expand(num_tasks).clone()
        if not bool((start > 0).all()) or not bool(torch.isfinite(start).all()):
            raise ValueError(f"initial weights must be finite and > 0, got {start.tolist()}")
        mask = torch.ones(num_tasks, dtype=torch.bool)
        if trainable is not None:
            if len(trainable) != num_tasks:
                raise ValueError(f"trainable needs {num_tasks} flags, got {len(trainable)}")
            mask = torch.as_tensor(list(trainable), dtype=torch.bool)
        self.log_weights = nn.Parameter(start.log(), requires_grad=bool(mask.any()))
        self.register_buffer("trainable_mask", mask)

    def forward(self, losses: Tensor) -> Tensor:
        self._check_losses(losses)
        log_w = torch.where(self.trainable_mask, self.log_weights, self.log_weights.detach())
        return log_w.to(losses).exp()
