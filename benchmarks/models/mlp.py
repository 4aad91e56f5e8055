"""An MLP with a shared trunk and per-task linear heads computed as one matrix product (ManyTasks)."""

from __future__ import annotations

from torch import Tensor, nn


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
        if input_dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"input_dim, hidden and depth must be >= 1, got {input_dim}, {hidden}, {depth}")
        layers: list[nn.Module] = []
        for index in range(depth):
            layers += [nn.Linear(input_dim if index == 0 else hidden, hidden), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
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
