"""Each balancer trains the two-task toy of CAGrad/FAMO to its Pareto set (pipeline test)."""

from __future__ import annotations

import pytest
import torch
from balancer_cases import required_arguments

from benchmarks.toy import CAGRAD_STARTS, ToyTwoTask, pareto_front, pareto_stationarity
from bilevel_mtl import BalancedOptimizer, Marigold
from bilevel_mtl.registry import balancer_classes, build_balancer

SCALE = 0.1  # the Nash-MTL/FAMO version of the toy (task 1 scaled down)
START = CAGRAD_STARTS[1]
STEPS = 200
OPTIONS = {"stl": {"task": 0}, "dwa": {"window": 10}}
# The toy has no shared representation: every registered class but those that require one (MGDA-UB).
NAMES = [name for name, cls in balancer_classes().items() if "shared" not in required_arguments(cls)]


@pytest.fixture(scope="module")
def front() -> torch.Tensor:
    return pareto_front(2001, SCALE)


@pytest.mark.parametrize("name", NAMES)
def test_balancer_reaches_the_pareto_set(name: str, front: torch.Tensor) -> None:
    torch.manual_seed(0)
    toy = ToyTwoTask(START, scale=SCALE, shift=True)
    balancer = build_balancer(name, 2, **OPTIONS.get(name, {}))
    optimizer = BalancedOptimizer(toy, torch.optim.Adam(toy.parameters(), lr=0.07), balancer)
    batches = balancer.num_batches
    closure = toy if batches == 1 else (lambda: torch.stack([toy()] * batches))
    start = toy().detach()
    for _ in range(STEPS):
        record = optimizer.step(closure)
    assert bool(torch.isfinite(record.weights).all())
    x = toy.x.detach().to(torch.float64)
    assert float((front - x).norm(dim=1).min()) < 0.06
    assert pareto_stationarity(x, SCALE) < 0.005
    final = toy().detach()
    if name == "stl":  # only task 0 counts; it heads for its own minimum (the front's end, x1 = 7)
        assert float(final[0]) < float(start[0])
        assert float(x[0]) > 0
    else:
        assert float(final.sum()) < float(start.sum())


def test_a_model_used_as_its_own_closure_keeps_its_parameters() -> None:
    toy = ToyTwoTask(START, scale=SCALE, shift=True)
    optimizer = BalancedOptimizer(toy, torch.optim.Adam(toy.parameters(), lr=0.05), Marigold(2))
    for _ in range(3):
        optimizer.step(toy)
    assert isinstance(toy.x, torch.nn.Parameter)
    assert toy.x.requires_grad
