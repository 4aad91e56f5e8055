"""Every balancer as a test case: how to build it, what it claims, and a small model to train."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bilevel_mtl import BalancedOptimizer, Balancer, Marigold, MarigoldFaithful
from bilevel_mtl.balancers import (
    DWA,
    FAMO,
    IMTLG,
    LS,
    MGDA,
    RLW,
    SI,
    STL,
    UW,
    BiLB4MTL,
    CAGrad,
    GradDrop,
    MoCo,
    MoDo,
    NashMTL,
    PCGrad,
    SDMGrad,
)

# Scale behaviour claimed in each docstring, checked by test_properties.py:
UPDATE = "update"  # per-task loss scales f_i -> c_i f_i leave the parameter update unchanged
DIRECTION = "direction"  # ... leave the update's direction unchanged (its length may change)
WEIGHTS = "weights"  # ... leave the weights unchanged
COMMON = "common"  # a common scale f -> c f leaves the weights unchanged
NONE = "none"  # no invariance claimed


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[int, MultiTaskNet], Balancer]
    simplex: bool
    deterministic: bool
    scaling: str
    batches: int = 1
    order_dependent: bool = False


class MultiTaskNet(nn.Module):
    """A shared encoder and one linear head per task."""

    def __init__(self, num_tasks: int, seed: int = 0, width: int = 6) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.encoder = nn.Sequential(nn.Linear(4, width), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(num_tasks))
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.7)

    def forward(self, x: Tensor) -> Tensor:
        z = self.encoder(x)
        return torch.cat([head(z) for head in self.heads], dim=1)


def task_data(num_tasks: int, seed: int = 1, n: int = 48) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    y = torch.randn(n, num_tasks, generator=generator) * torch.linspace(0.5, 2.0, num_tasks)
    return x, y


def make_closure(
    model: MultiTaskNet,
    data: tuple[Tensor, Tensor],
    batches: int = 1,
    perm: list[int] | None = None,
    scales: Tensor | None = None,
) -> Callable[[], Tensor]:
    """Mean squared error per task (positive); ``batches`` > 1 gives ``[b, m]`` from disjoint chunks."""
    x, y = data

    def losses_of(xb: Tensor, yb: Tensor) -> Tensor:
        losses = ((model(xb) - yb) ** 2).mean(0) + 0.05
        if scales is not None:
            losses = losses * scales
        return losses if perm is None else losses[perm]

    def closure() -> Tensor:
        if batches == 1:
            return losses_of(x, y)
        return torch.stack([losses_of(x[i::batches], y[i::batches]) for i in range(batches)])

    return closure


CASES: list[Case] = [
    Case("stl", lambda m, net: STL(m, task=1), True, True, WEIGHTS, order_dependent=True),
    Case("ls", lambda m, net: LS(m), True, True, WEIGHTS),
    Case("si", lambda m, net: SI(m), False, True, UPDATE),
    Case("rlw", lambda m, net: RLW(m, seed=3), True, False, WEIGHTS),
    Case("dwa", lambda m, net: DWA(m, window=1), True, True, WEIGHTS),
    Case("uw", lambda m, net: UW(m), False, True, NONE),
    Case("famo", lambda m, net: FAMO(m), True, True, DIRECTION),
    Case("bilb4mtl", lambda m, net: BiLB4MTL(m), False, True, UPDATE, order_dependent=True),
    # The default (perturbed) mode reports the perturbed weights λ + r·u, off the simplex.
    Case("marigold", lambda m, net: Marigold(m, seed=5), False, False, NONE),
    Case("marigold_faithful", lambda m, net: MarigoldFaithful(m, seed=5), True, False, NONE),
    Case("mgda", lambda m, net: MGDA(m), True, True, COMMON),
    Case("mgda_ub", lambda m, net: MGDA(m, shared=net.encoder, representation=True), True, True, COMMON),
    Case("mgda_shared", lambda m, net: MGDA(m, shared=net.encoder), True, True, COMMON),
    Case("pcgrad", lambda m, net: PCGrad(m, seed=4), False, False, COMMON),
    Case("graddrop", lambda m, net: GradDrop(m, seed=4), True, False, COMMON),
    Case(
        "graddrop_rep",
        lambda m, net: GradDrop(m, seed=4, shared=net.encoder, representation=True),
        True,
        False,
        COMMON,
    ),
    Case("cagrad", lambda m, net: CAGrad(m), False, True, COMMON),
    Case("imtlg", lambda m, net: IMTLG(m), False, True, DIRECTION),
    Case("nashmtl", lambda m, net: NashMTL(m), False, True, DIRECTION),
    Case("moco", lambda m, net: MoCo(m), True, True, NONE),
    Case("modo", lambda m, net: MoDo(m), True, True, NONE, batches=3),
    Case("sdmgrad", lambda m, net: SDMGrad(m), True, True, COMMON, batches=3),
]
CASE_IDS = [case.name for case in CASES]


def trainer(
    case: Case, num_tasks: int = 3, seed: int = 0, lr: float = 0.05
) -> tuple[MultiTaskNet, BalancedOptimizer]:
    model = MultiTaskNet(num_tasks, seed)
    balancer = case.build(num_tasks, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    return model, BalancedOptimizer(model, optimizer, balancer)


def flat_grad(model: nn.Module) -> Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])


def flat_params(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])
