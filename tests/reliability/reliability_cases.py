"""The balancers the reliability tests cover, and the small problem they train on.

Every class of :func:`bilevel_mtl.registry.balancer_classes` is a case, built from its
declaration: the constructor arguments it ``requires`` come from :data:`ARGUMENTS` (by
argument name), and what the tests check follows its declared ``simplex``, ``stateful``
and ``num_batches``. A balancer added to the registry is picked up by every reliability
test without editing them; :data:`VARIANTS` lists the few configurations beyond a
class's defaults (GradDrop on the encoder's output). This module is also imported by
the spawned DDP workers and the resume subprocess.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

import bilevel_mtl as bm
from bilevel_mtl.balancers import GradDrop, Marigold
from bilevel_mtl.registry import balancer_classes

M = 3
DIM = 5


class Net(nn.Module):
    """A shared trunk and one linear head per task (``forward`` gives ``[batch, M]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(DIM, 8), nn.Tanh())
        self.heads = nn.Linear(8, M)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.heads(self.trunk(x))
        return out


ARGUMENTS: dict[str, Callable[[nn.Module], Any]] = {
    "task": lambda net: 0,
    "shared": lambda net: net.trunk,
}
"""A value for each constructor argument a class may declare in ``requires`` (``net``: the
case's network, whose ``trunk`` is the shared encoder)."""

OPTIONS: dict[str, dict[str, Any]] = {
    "dwa": {"window": 2},  # update its loss history within a short run
    "sdmgrad": {"lr": 0.1, "num_iterations": 1},  # defaults reach the same vertex from any w here
    # the upper level visibly moves within a few steps; it re-measures on steps 0, 2, 4, ...
    # (the default every 16th), so the tests see measured and unmeasured steps
    "marigold": {"lr": 0.05, "measure_every": 2},
    "marigold_faithful": {"lr": 0.05},
}
"""Test-friendly options of some registered classes (any class works with its defaults)."""


def required_arguments(cls: type[bm.Balancer]) -> list[str]:
    """The constructor arguments ``cls`` declares as required (``requires`` entries not marked optional)."""
    return [arg for arg, what in cls.requires.items() if not what.startswith("optional")]


@dataclass(frozen=True)
class Case:
    """One balancer configuration: a registered class and its constructor options."""

    name: str
    cls: type[bm.Balancer]
    options: Mapping[str, Callable[[nn.Module], Any]] = field(default_factory=dict)
    """Extra options (by name, a value from the network) beyond the required arguments."""
    make: Callable[..., bm.Balancer] | None = None
    """What builds the balancer from ``(num_tasks, **options)`` (default: the class itself)."""

    @property
    def simplex(self) -> bool:
        """Whether the class declares its weights on the probability simplex."""
        return self.cls.simplex

    @property
    def needs(self) -> frozenset[str]:
        """What a step of this configuration needs (its balancer's ``step_needs``; building it
        leaves the global random state alone)."""
        with torch.random.fork_rng(devices=[]):
            return frozenset(self.build(Net()).step_needs)

    @property
    def stateful(self) -> bool:
        """Whether the class declares state carried from step to step."""
        return self.cls.stateful

    def build(self, net: nn.Module, num_tasks: int = M) -> bm.Balancer:
        """The balancer for ``num_tasks`` tasks; ``net.trunk`` is the shared module where one is needed."""
        unknown = [arg for arg in required_arguments(self.cls) if arg not in ARGUMENTS]
        assert not unknown, f"{self.cls.__name__} requires {unknown}: give ARGUMENTS a value"
        kwargs = {arg: ARGUMENTS[arg](net) for arg in required_arguments(self.cls)}
        kwargs.update(OPTIONS.get(self.name, {}))
        kwargs.update({arg: value(net) for arg, value in self.options.items()})
        return (self.make or self.cls)(num_tasks, **kwargs)


VARIANTS: list[Case] = [
    Case(
        "graddrop_representation",
        GradDrop,
        {"shared": lambda net: net.trunk, "representation": lambda net: True},
    ),
    Case(  # the paper's preset: same-batch re-measure, a learned adversary, random directions
        "marigold_paper", Marigold, {"lr": lambda net: 0.05}, make=Marigold.paper
    ),
]
"""Configurations beyond the classes' defaults, each named after its registry entry."""

CASES = [Case(name, cls) for name, cls in balancer_classes().items()] + VARIANTS
CASE_NAMES = [case.name for case in CASES]
STATEFUL = [case.name for case in CASES if case.stateful]
"""Cases whose balancer carries state from step to step (checked: see test_checkpoint.py)."""


def case(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


def num_batches(balancer: bm.Balancer) -> int:
    return balancer.num_batches


def global_batch(step: int, size: int = 12, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """The global batch of ``step``: 3 independent sub-batches (rows for multi-batch rules)."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(3, size, DIM, generator=g, dtype=dtype)
    y = torch.randn(3, size, M, generator=g, dtype=dtype) * torch.tensor([1.0, 3.0, 0.3], dtype=dtype)
    return x, y


def shard(batch: tuple[Tensor, Tensor], rank: int, world: int) -> tuple[Tensor, Tensor]:
    """This rank's equal share of every sub-batch."""
    x, y = batch
    per = x.shape[1] // world
    return x[:, rank * per : (rank + 1) * per], y[:, rank * per : (rank + 1) * per]


def closure_for(
    model: nn.Module, x: Tensor, y: Tensor, batches: int, autocast: torch.dtype | None = None
) -> Callable[[], Tensor]:
    """Task losses (MSE per task, > 0): ``[M]`` on all rows, or ``[batches, M]`` one row per sub-batch.

    ``autocast`` runs the forward under ``torch.autocast("cpu", dtype=autocast)``.
    """

    def losses() -> Tensor:
        if batches == 1:
            return ((model(x.reshape(-1, DIM)) - y.reshape(-1, M)) ** 2).mean(0)
        return torch.stack([((model(x[b]) - y[b]) ** 2).mean(0) for b in range(batches)])

    def closure() -> Tensor:
        if autocast is None:
            return losses()
        with torch.autocast("cpu", dtype=autocast):
            return losses()

    return closure


def train(
    name: str,
    steps: int,
    *,
    rank: int = 0,
    world: int = 1,
    wrap: Callable[[Net], nn.Module] | None = None,
    start: dict[str, Any] | None = None,
    save_at: int | None = None,
    trainer_kwargs: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float64,
    autocast: torch.dtype | None = None,
    restore_balancer: bool = True,
) -> dict[str, Any]:
    """Train case ``name`` for ``steps`` steps (Adam, ``dtype``); return its trajectory.

    ``wrap`` wraps the network (DDP, FSDP); ``start`` is a checkpoint to resume from
    (its ``step`` is the first step to run; ``restore_balancer=False`` leaves the
    balancer fresh, a control); ``save_at`` returns the checkpoint taken before that
    step under ``"checkpoint"``.
    """
    torch.manual_seed(0)
    net = Net().to(dtype)
    model = net if wrap is None else wrap(net)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    balancer = case(name).build(net)
    trainer = bm.BalancedOptimizer(model, optimizer, balancer, **(trainer_kwargs or {}))
    first = 0
    if start is not None:
        start = copy.deepcopy(start)  # load_state_dict aliases tensors, which training then updates
        net.load_state_dict(start["model"])
        if restore_balancer:
            trainer.load_state_dict(start["trainer"])
        else:
            optimizer.load_state_dict(start["trainer"]["optimizer"])
        torch.set_rng_state(start["rng"])
        first = start["step"]
    records: list[dict[str, Tensor | None]] = []
    out: dict[str, Any] = {}
    for step in range(first, steps):
        if step == save_at:
            out["checkpoint"] = copy.deepcopy(
                {
                    "model": net.state_dict(),
                    "trainer": trainer.state_dict(),
                    "rng": torch.get_rng_state(),
                    "step": step,
                }
            )
        x, y = shard(global_batch(step, dtype=dtype), rank, world)
        record = trainer.step(closure_for(model, x, y, num_batches(balancer), autocast))
        records.append(
            {
                "weights": record.weights,
                "losses": record.losses,
                "losses_after": record.losses_after,
                "hypergradient": record.hypergradient,
                "skipped": record.skipped,
            }
        )
    out["records"] = records
    out["params"] = [_full(p) for p in net.parameters()]
    out["balancer"] = {k: v.clone() for k, v in balancer.state_dict().items() if isinstance(v, Tensor)}
    return out


def _full(param: Tensor) -> Tensor:
    """A parameter's whole value (gathers an FSDP shard: a collective, run on every rank)."""
    full = getattr(param, "full_tensor", None)
    value: Tensor = full() if callable(full) else param
    return value.detach().clone()


def max_abs_difference(a: Any, b: Any) -> float:
    """Largest absolute difference between two nested structures of tensors (inf on a mismatch)."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.shape != b.shape:
            return float("inf")
        return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return float("inf")
        return max((max_abs_difference(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return float("inf")
        return max((max_abs_difference(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    return 0.0 if a == b else float("inf")


def identical(a: Any, b: Any) -> bool:
    """Bitwise equality of two nested structures of tensors."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
