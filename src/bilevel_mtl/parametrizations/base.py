"""Parametrizations map trainable upper-level variables (and the current losses) to task weights."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import Tensor, nn

from .._checks import check_num_tasks


class Parametrization(nn.Module, ABC):
    """``forward(losses) -> weights``: task weights from trainable variables and the losses.

    ``on_simplex`` says whether every output lies on the probability simplex.
    """

    on_simplex: ClassVar[bool] = True

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.num_tasks = check_num_tasks(num_tasks)

    @abstractmethod
    def forward(self, losses: Tensor) -> Tensor:
        """Weights of shape ``[num_tasks]`` for the (detached) task losses ``losses``."""

    def _check_losses(self, losses: Tensor) -> None:
        if losses.shape != (self.num_tasks,):
            raise ValueError(
                f"{type(self).__name__} expects losses of shape [{self.num_tasks}], got {tuple(losses.shape)}"
            )
