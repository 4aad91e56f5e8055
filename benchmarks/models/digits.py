"""A small CNN with a shared trunk and one linear head per digit (MultiDigits)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn


class DigitsCNN(nn.Module):
    """Two conv-ReLU-pool layers and a hidden layer shared by all tasks; one linear head per task."""

    def __init__(
        self, heads: Mapping[str, int], height: int, width: int, channels: int = 16, hidden: int = 64
    ) -> None:
        super().__init__()
        if not heads:
            raise ValueError("heads must name at least one task")
        if height < 4 or width < 4:
            raise ValueError(f"images must be at least 4x4 (two 2x2 poolings), got {height}x{width}")
        self.trunk = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * channels * (height // 4) * (width // 4), hidden),
            nn.ReLU(),
        )
        self.heads = nn.ModuleDict({task: nn.Linear(hidden, classes) for task, classes in heads.items()})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.trunk(x)
        return {task: head(features) for task, head in self.heads.items()}
