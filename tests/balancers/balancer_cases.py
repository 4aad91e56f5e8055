"""Every balancer as a test case: how to build it, what it declares, and a small model to train.

The cases are derived from the registry (:func:`bilevel_mtl.registry.balancer_classes`): one
case per registered class, built with the constructor arguments it declares in ``requires``
(values from :data:`ARGUMENTS`) and the test-friendly :data:`OPTIONS`. What the property
suite checks follows each class's declaration (``simplex``, ``randomized``,
``scale_invariance``, ``num_batches``, ``permutation_equivariant``, ``stateful``), so a newly
registered balancer is covered without editing the tests. :data:`VARIANTS` lists the few
configurations beyond a class's defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bilevel_mtl import BalancedOptimizer, Balancer
from bilevel_mtl.balancers import MGDA, GradDrop
from bilevel_mtl.registry import balancer_classes

# Scale behaviour each class declares (``Balancer.scale_invariance``), checked by test_properties.py:
UPDATE = "update"  # per-task loss scales f_i -> c_i f_i leave the parameter update unchanged
DIRECTION = "direction"  # ... leave the update's direction unchanged (its length may change)
WEIGHTS = "weights"  # ... leave the weights unchanged
COMMON = "common"  # a common scale f -> c f leaves the weights unchanged
NONE = "none"  # no invariance claimed
SCALINGS = (UPDATE, DIRECTION, WEIGHTS, COMMON, NONE)


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


ARGUMENTS: dict[str, Callable[[MultiTaskNet], Any]] = {
    "task": lambda net: 1,
    "shared": lambda net: net.encoder,
}
"""A value for each constructor argument a class may declare as required in ``requires``."""

OPTIONS: dict[str, dict[str, Any]] = {
    "rlw": {"seed": 3},
    "dwa": {"window": 1},  # a complete period every step: the weights move within a short run
    "marigold": {"seed": 5},
    "marigold_faithful": {"seed": 5},
    "pcgrad": {"seed": 4},
    "graddrop": {"seed": 4},
}
"""Test-friendly options of some registered classes (by registry name; any class works with its defaults)."""


def required_arguments(cls: type[Balancer]) -> list[str]:
    """The constructor arguments ``cls`` declares as required (``requires`` entries not marked optional)."""
    return [arg for arg, what in cls.requires.items() if not what.startswith("optional")]


@dataclass(frozen=True)
class Case:
    """One balancer configuration: a registered class, its options, and what it declares."""

    name: str
    cls: type[Balancer]
    options: Mapping[str, Callable[[MultiTaskNet], Any]] = field(default_factory=dict)
    """Options beyond the required arguments and :data:`OPTIONS` (by name, a value from the net)."""

    def build(self, num_tasks: int, net: MultiTaskNet) -> Balancer:
        unknown = [arg for arg in required_arguments(self.cls) if arg not in ARGUMENTS]
        assert not unknown, f"{self.cls.__name__} requires {unknown}: give balancer_cases.ARGUMENTS a value"
        kwargs: dict[str, Any] = {arg: ARGUMENTS[arg](net) for arg in required_arguments(self.cls)}
        assert self.cls.name is not None
        kwargs.update(OPTIONS.get(self.cls.name, {}))
        kwargs.update({arg: value(net) for arg, value in self.options.items()})
        return self.cls(num_tasks, **kwargs)

    @property
    def simplex(self) -> bool:
        return self.cls.simplex

    @property
    def deterministic(self) -> bool:
        """Seeded but random balancers are not: their draws depend on the order of the tasks."""
        return not self.cls.randomized

    @property
    def scaling(self) -> str:
        return self.cls.scale_invariance

    @property
    def batches(self) -> int:
        return self.cls.num_batches

    @property
    def order_dependent(self) -> bool:
        return not self.cls.permutation_equivariant

    @property
    def stateful(self) -> bool:
        return self.cls.stateful


VARIANTS: list[Case] = [
    Case("mgda_shared", MGDA, {"shared": lambda net: net.encoder}),
    Case(
        "graddrop_rep",
        GradDrop,
        {"shared": lambda net: net.encoder, "representation": lambda net: True},
    ),
]
"""Configurations beyond the registered classes' defaults."""

CASES: list[Case] = [Case(name, cls) for name, cls in balancer_classes().items()] + VARIANTS
CASE_IDS = [case.name for case in CASES]


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


def snapshot(value: Any) -> Any:
    """A deep copy of a (nested) state: tensors cloned, containers copied, generators' states read."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, torch.Generator):
        return value.get_state()
    if isinstance(value, Mapping):
        return {key: snapshot(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(snapshot(item) for item in value)
    return value


def differences(before: Any, after: Any, path: str = "") -> list[str]:
    """Where two snapshots differ, bit for bit (tensors by dtype, shape and value)."""
    if isinstance(before, Tensor) or isinstance(after, Tensor):
        same = (
            isinstance(before, Tensor)
            and isinstance(after, Tensor)
            and before.dtype == after.dtype
            and before.shape == after.shape
            and torch.equal(before, after)
        )
        return [] if same else [path or "<root>"]
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        if set(before) != set(after):
            return [f"{path} keys {sorted(map(str, set(before) ^ set(after)))}"]
        return [d for key in before for d in differences(before[key], after[key], f"{path}/{key}")]
    if isinstance(before, list | tuple) and isinstance(after, list | tuple):
        if len(before) != len(after):
            return [f"{path} length"]
        return [
            d
            for i, (a, b) in enumerate(zip(before, after, strict=True))
            for d in differences(a, b, f"{path}/{i}")
        ]
    return [] if before == after else [path or "<root>"]


def balancer_state(balancer: Balancer) -> Any:
    """Everything a balancer carries: its ``state_dict`` and the state of every generator it owns."""
    generators = {
        name: value.get_state()
        for name, value in vars(balancer).items()
        if isinstance(value, torch.Generator)
    }
    return snapshot({"state_dict": balancer.state_dict(), "generators": generators})
