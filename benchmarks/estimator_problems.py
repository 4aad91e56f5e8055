"""The three problems of the estimator benchmark: a quadratic bilevel problem, an MLP and a conv net.

Each is a multi-task model with a fixed batch and a warm optimizer, ready for one
training step: ``closure()`` returns the ``m`` task losses on the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Problem:
    """A model, its optimizer (warm) and a closure over one fixed batch."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    closure: Callable[[], Tensor]

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


class LeastSquares(nn.Module):
    """Linear tasks f_i(θ) = ‖A_iθ − b_i‖²/(2n) on one shared parameter vector θ."""

    design: Tensor
    targets: Tensor

    def __init__(self, design: Tensor, targets: Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(design.shape[-1]))
        self.register_buffer("design", design)
        self.register_buffer("targets", targets)

    def forward(self) -> Tensor:
        residual = self.design @ self.theta - self.targets
        return (residual**2).sum(dim=1) / (2 * residual.shape[1])


class MultiTaskMLP(nn.Module):
    """Shared trunk (two hidden layers, ReLU, dropout) and one linear output per task."""

    def __init__(self, inputs: int, hidden: int, num_tasks: int, dropout: float) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(inputs, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.heads = nn.Linear(hidden, num_tasks)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.heads(self.trunk(x))
        return out


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class SegNetLite(nn.Module):
    """A small SegNet-style encoder-decoder (conv-BN-ReLU, max-pool / upsample) with a 1×1 head per task."""

    def __init__(self, num_tasks: int, width: int = 16) -> None:
        super().__init__()
        self.enc1, self.enc2 = _conv_block(3, width), _conv_block(width, 2 * width)
        self.bottleneck = _conv_block(2 * width, 4 * width)
        self.dec2, self.dec1 = _conv_block(4 * width, 2 * width), _conv_block(2 * width, width)
        self.heads = nn.Conv2d(width, num_tasks, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(self.enc1(x), 2)
        x = F.max_pool2d(self.enc2(x), 2)
        x = self.bottleneck(x)
        x = self.dec2(F.interpolate(x, scale_factor=2.0))
        x = self.dec1(F.interpolate(x, scale_factor=2.0))
        out: Tensor = self.heads(x)
        return out


def _warm_up(problem: Problem, steps: int) -> Problem:
    """Linear-scalarization steps, so the optimizer's state is warm as in mid-training."""
    for _ in range(steps):
        problem.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(problem.closure().mean())
        problem.optimizer.step()
    problem.optimizer.zero_grad(set_to_none=True)
    return problem


def quadratic_problem(num_tasks: int, seed: int, dim: int = 64, rows: int = 32) -> Problem:
    """(a) Least-squares tasks, one SGD step: Φ is exactly quadratic in λ for a linear criterion."""
    gen = torch.Generator().manual_seed(seed)
    shared = torch.randn(dim, generator=gen)
    design = torch.randn(num_tasks, rows, dim, generator=gen) / dim**0.5
    truth = shared + 0.5 * torch.randn(num_tasks, dim, generator=gen)
    targets = torch.einsum("ird,id->ir", design, truth) + 0.1 * torch.randn(num_tasks, rows, generator=gen)
    model = LeastSquares(design, targets)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

    def closure() -> Tensor:
        losses: Tensor = model()
        return losses

    return _warm_up(Problem("quadratic", model, optimizer, closure), 5)


def mlp_problem(num_tasks: int, seed: int, inputs: int = 32, hidden: int = 128, batch: int = 64) -> Problem:
    """(b) MLP regression tasks sharing a latent teacher (half aligned, some conflicting), Adam."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, inputs, generator=gen)
    latent = torch.tanh(x @ torch.randn(inputs, 8, generator=gen) / inputs**0.5)
    mixing = torch.randn(8, num_tasks, generator=gen)
    mixing[:, 1::2] = -mixing[:, 0::2][:, : num_tasks // 2] + 0.3 * torch.randn(
        8, num_tasks // 2, generator=gen
    )
    y = latent @ mixing + 0.1 * torch.randn(batch, num_tasks, generator=gen)
    torch.manual_seed(seed)
    model = MultiTaskMLP(inputs, hidden, num_tasks, dropout=0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def closure() -> Tensor:
        losses: Tensor = ((model(x) - y) ** 2).mean(dim=0)
        return losses

    return _warm_up(Problem("mlp", model, optimizer, closure), 20)


def conv_problem(num_tasks: int, seed: int, size: int = 32, batch: int = 8, width: int = 16) -> Problem:
    """(c) SegNet-lite dense regression (one map per task from a fixed random teacher), Adam."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=gen)
    smooth = F.avg_pool2d(images, 5, stride=1, padding=2)
    teacher = torch.randn(num_tasks, 3, 1, 1, generator=gen)
    targets = torch.tanh(F.conv2d(smooth, teacher)) + 0.1 * torch.randn(
        batch, num_tasks, size, size, generator=gen
    )
    torch.manual_seed(seed)
    model = SegNetLite(num_tasks, width)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def closure() -> Tensor:
        losses: Tensor = ((model(images) - targets) ** 2).mean(dim=(0, 2, 3))
        return losses

    return _warm_up(Problem("conv", model, optimizer, closure), 10)


PROBLEMS: dict[str, Callable[[int, int], Problem]] = {
    "quadratic": quadratic_problem,
    "mlp": mlp_problem,
    "conv": conv_problem,
}
