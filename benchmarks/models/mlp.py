"""MLPs with a shared ReLU trunk: vectorised heads (ManyTasks), per-task heads in natural units (Scales),
and the constant predictor of the trivial baselines."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn


def relu_trunk(input_dim: int, hidden: int, depth: int) -> nn.Sequential:
    """``depth`` layers ``Linear → ReLU`` of width ``hidden``."""
    if input_dim < 1 or hidden < 1 or depth < 1:
        raise ValueError(f"input_dim, hidden and depth must be >= 1, got {input_dim}, {hidden}, {depth}")
    layers: list[nn.Module] = []
    for index in range(depth):
        layers += [nn.Linear(input_dim if index == 0 else hidden, hidden), nn.ReLU()]
    return nn.Sequential(*layers)


class ManyTasksMLP(nn.Module):
    """``depth`` hidden ReLU layers of width ``hidden`` shared by all tasks.

    Task ``k``'s head is row block ``k`` of one linear layer, so the cost of the
    heads grows with ``m`` only through a matrix product. Outputs: ``regression``
    ``[B, m_r]`` and ``classification`` ``[B, m_c, num_classes]`` logits (a key is
    absent when its task count is zero).
    """

    def __init__(
        self,
        input_dim: int,
        num_regression: int,
        num_classification: int = 0,
        num_classes: int = 2,
        hidden: int = 64,
        depth: int = 2,
    ) -> None:
        super().__init__()
        if num_regression < 0 or num_classification < 0 or num_regression + num_classification < 1:
            raise ValueError(
                f"need >= 1 task, got {num_regression} regression and {num_classification} classification"
            )
        self.trunk = relu_trunk(input_dim, hidden, depth)
        self.num_classes = num_classes
        self.regression = nn.Linear(hidden, num_regression) if num_regression else None
        self.classification = (
            nn.Linear(hidden, num_classification * num_classes) if num_classification else None
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.trunk(x)
        outputs = {}
        if self.regression is not None:
            outputs["regression"] = self.regression(features)
        if self.classification is not None:
            outputs["classification"] = self.classification(features).unflatten(1, (-1, self.num_classes))
        return outputs


class TabularMLP(nn.Module):
    r"""A shared ReLU trunk :math:`h(x)` and one linear head per task.

    A regression task ``k`` with unit ``(μ_k, s_k)`` answers in its natural unit,
    :math:`\hat y_k = \mu_k + s_k (a_k^\top h + b_k)` (``[B]``), as a model fed standardised
    targets and mapped back would; a classification task gives logits ``[B, C_k]``.
    """

    offset: Tensor
    scale: Tensor

    def __init__(
        self,
        input_dim: int,
        units: Mapping[str, tuple[float, float]],
        classes: Mapping[str, int],
        hidden: int = 64,
        depth: int = 2,
    ) -> None:
        super().__init__()
        if not units and not classes:
            raise ValueError("need >= 1 task")
        if set(units) & set(classes):
            raise ValueError(
                f"tasks {sorted(set(units) & set(classes))} are both regression and classification"
            )
        self.trunk = relu_trunk(input_dim, hidden, depth)
        self.heads = nn.ModuleDict({task: nn.Linear(hidden, 1) for task in units})
        self.heads.update({task: nn.Linear(hidden, count) for task, count in classes.items()})
        self.register_buffer("offset", torch.tensor([offset for offset, _ in units.values()]))
        self.register_buffer("scale", torch.tensor([scale for _, scale in units.values()]))
        self.regression_tasks = tuple(units)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.trunk(x)
        outputs = {task: head(features) for task, head in self.heads.items()}
        for index, task in enumerate(self.regression_tasks):
            outputs[task] = self.offset[index] + self.scale[index] * outputs[task].squeeze(1)
        return outputs


class ConstantModel(nn.Module):
    """Gives the same outputs for every sample: ``outputs[key]`` repeated over the batch."""

    def __init__(self, outputs: Mapping[str, Tensor]) -> None:
        super().__init__()
        self.outputs = {key: value.detach().clone() for key, value in outputs.items()}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {key: value.expand(len(x), *value.shape) for key, value in self.outputs.items()}
