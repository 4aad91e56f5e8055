"""Every step and every load is all or nothing, for every registered method × failure point.

A step that raises anywhere (the closure's first or later call, the balancer's decision or
commit, the optimizer, a ``KeyboardInterrupt``) leaves the model's parameters and buffers,
the optimizer, the scaler, the balancer and the random streams exactly as before, and the
gradients ``None`` (as ``zero_grad()``, where every step starts);
the next step then gives bit-for-bit what a run that never failed gives. The cases come
from the method declarations (``reliability_cases.CASES``), the failure points from what
each declares it needs (a closure called again only where it re-evaluates).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from reliability_cases import CASES, DIM, Case, M
from torch import Tensor, nn

import bilevel_mtl as bm


class Net(nn.Module):
    """A trunk with BatchNorm (buffers a forward pass changes) and dropout (random draws)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(DIM, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(0.2))
        self.heads = nn.Linear(8, M)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.heads(self.trunk(x))
        return out


class Boom(Exception):
    """The injected failure."""


def batch(step: int, batches: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(batches, 16, DIM, generator=g), torch.randn(batches, 16, M, generator=g)


def make(case: Case, scaler: bool = False) -> tuple[Net, torch.optim.Optimizer, bm.BalancedOptimizer]:
    torch.manual_seed(0)
    net = Net()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8) if scaler else None
    trainer = bm.BalancedOptimizer(net, optimizer, case.build(net), scaler=grad_scaler)
    return net, optimizer, trainer


def closure(net: Net, step: int, batches: int, fail_on_call: int | None = None) -> Callable[[], Tensor]:
    x, y = batch(step, batches)
    calls = [0]

    def losses() -> Tensor:
        calls[0] += 1
        out = torch.stack([((net(x[b]) - y[b]) ** 2).mean(0) + 0.1 for b in range(batches)])
        if calls[0] == fail_on_call:
            raise Boom(f"call {calls[0]}")
        return out[0] if batches == 1 else out

    return losses


def same(a: Any, b: Any) -> bool:
    """Exact equality of nested states (tensors bit for bit, NaN equal to NaN)."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (
            isinstance(a, Tensor)
            and isinstance(b, Tensor)
            and a.dtype == b.dtype
            and torch.equal(
                a.view(torch.uint8) if a.dim() else a.reshape(1).view(torch.uint8),
                b.view(torch.uint8) if b.dim() else b.reshape(1).view(torch.uint8),
            )
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def state(net: Net, optimizer: torch.optim.Optimizer, trainer: bm.BalancedOptimizer) -> Any:
    """Everything a step may change (copied)."""
    everything: dict[str, Any] = {
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "balancer": trainer.balancer.state_dict(),
        "rng": torch.get_rng_state(),
        "scaler": None if trainer.scaler is None else trainer.scaler.state_dict(),
    }
    return copy.deepcopy(everything)


def failure_points(case: Case) -> list[str]:
    points = ["closure", "decide", "commit", "optimizer", "interrupt"]
    if {"lookahead", "losses_after"} & case.needs:
        points.append("closure-again")
    return points


PAIRS = [(case, point) for case in CASES for point in failure_points(case)]


def inject(
    point: str, net: Net, trainer: bm.BalancedOptimizer, step: int, batches: int
) -> Callable[[], Tensor]:
    """Arrange the failure at ``point``; return the step's closure."""
    balancer = trainer.balancer
    if point in ("decide", "commit"):
        real = getattr(balancer, point)

        def failing(*args: Any, **kwargs: Any) -> Any:
            real(*args, **kwargs)  # do the work, then fail: a half-applied commit must be undone
            raise Boom(point)

        setattr(balancer, point, failing)
    if point == "optimizer":

        def refuse(*args: Any, **kwargs: Any) -> None:
            raise Boom("optimizer")

        trainer.optimizer.step = refuse  # type: ignore[method-assign]
    if point == "interrupt":
        return _interrupting(net, step, batches)
    fail_on = {"closure": 1, "closure-again": 2}.get(point)
    return closure(net, step, batches, fail_on_call=fail_on)


def _interrupting(net: Net, step: int, batches: int) -> Callable[[], Tensor]:
    inner = closure(net, step, batches)

    def losses() -> Tensor:
        inner()  # the forward pass runs (buffers, random draws), then Ctrl-C
        raise KeyboardInterrupt

    return losses


def undo(trainer: bm.BalancedOptimizer) -> None:
    """Take the injected failures away again."""
    for name in ("decide", "commit"):
        trainer.balancer.__dict__.pop(name, None)
    trainer.optimizer.__dict__.pop("step", None)


@pytest.mark.parametrize(("case", "point"), PAIRS, ids=[f"{c.name}-{p}" for c, p in PAIRS])
def test_a_failed_step_changes_nothing_and_the_run_continues_identically(case: Case, point: str) -> None:
    batches = case.cls.num_batches
    net, optimizer, trainer = make(case)
    control_net, _, control = make(case)
    for step in range(2):  # warm state: optimizer moments, balancer history, checked closure
        torch.manual_seed(step)  # both runs draw the same dropout masks from the global stream
        trainer.step(closure(net, step, batches))
        torch.manual_seed(step)
        control.step(closure(control_net, step, batches))
    torch.manual_seed(2)
    before = state(net, optimizer, trainer)
    failing = inject(point, net, trainer, 2, batches)
    with pytest.raises((Boom, KeyboardInterrupt)):
        trainer.step(failing)
    undo(trainer)
    assert same(state(net, optimizer, trainer), before), f"a failure at {point} changed the state"
    assert all(p.grad is None for p in net.parameters())
    record = trainer.step(closure(net, 2, batches))  # the random stream as the failed step found it
    torch.manual_seed(2)
    expected = control.step(closure(control_net, 2, batches))
    torch.testing.assert_close(record.weights, expected.weights, rtol=0, atol=0)
    for p, q in zip(net.parameters(), control_net.parameters(), strict=True):
        assert torch.equal(p, q), "the run after the failure differs from one that never failed"


SCALER_CASES = [c for c in CASES if c.name in ("ls", "famo", "marigold", "marigold_faithful", "pcgrad")]


@pytest.mark.parametrize("case", SCALER_CASES, ids=lambda c: c.name)
def test_a_failed_step_under_a_grad_scaler_changes_nothing(case: Case) -> None:
    net, optimizer, trainer = make(case, scaler=True)
    trainer.step(closure(net, 0, 1))
    before = state(net, optimizer, trainer)
    point = "closure-again" if {"lookahead", "losses_after"} & trainer.balancer.step_needs else "optimizer"
    failing = inject(point, net, trainer, 1, 1)
    with pytest.raises(Boom):
        trainer.step(failing)
    undo(trainer)
    assert same(state(net, optimizer, trainer), before)
    assert all(p.grad is None for p in net.parameters())
    assert trainer.step(closure(net, 1, 1)).skipped is None


STATEFUL = [c for c in CASES if c.stateful or c.cls.randomized]


@pytest.mark.parametrize("case", STATEFUL, ids=lambda c: c.name)
def test_a_state_for_another_number_of_tasks_or_method_is_refused_before_anything_loads(case: Case) -> None:
    net, optimizer, trainer = make(case)
    trainer.step(closure(net, 0, case.cls.num_batches))
    before = copy.deepcopy(trainer.balancer.state_dict())
    other_m = case.build(Net(), M + 1)
    with pytest.raises(
        ValueError, match=rf"saved by .*{M + 1} tasks\), not by .*{M} tasks\): nothing was loaded"
    ):
        trainer.balancer.load_state_dict(other_m.state_dict())
    other = next(c for c in STATEFUL if c.cls is not case.cls).build(Net())
    with pytest.raises(
        ValueError, match=rf"saved by {type(other).__qualname__} .*not by {case.cls.__qualname__}"
    ):
        trainer.load_state_dict({"optimizer": optimizer.state_dict(), "balancer": other.state_dict()})
    assert same(trainer.balancer.state_dict(), before)


@pytest.mark.parametrize("case", STATEFUL, ids=lambda c: c.name)
def test_a_state_that_fails_half_way_is_rolled_back(case: Case) -> None:
    """A state without its identity (an old checkpoint) whose tensors have the wrong size."""
    net, _, trainer = make(case)
    trainer.step(closure(net, 0, case.cls.num_batches))
    before = copy.deepcopy(trainer.balancer.state_dict())
    broken = dict(trainer.balancer.state_dict())
    del broken["_bilevel_mtl"]
    tensors = [k for k, v in broken.items() if isinstance(v, Tensor) and v.dim() > 0]
    if not tensors:
        pytest.skip(f"{case.name} keeps its state outside tensors of the state dict")
    broken[tensors[-1]] = torch.zeros(*broken[tensors[-1]].shape[:-1], 99)
    with pytest.raises(ValueError, match="nothing was changed"):
        trainer.balancer.load_state_dict(broken)
    assert same(trainer.balancer.state_dict(), before)


def test_a_trainer_state_without_its_parts_is_refused_naming_them() -> None:
    _, optimizer, trainer = make(CASES[0])
    with pytest.raises(ValueError, match=r"not a BalancedOptimizer state: it has no \['balancer'\]"):
        trainer.load_state_dict({"optimizer": optimizer.state_dict()})
    with pytest.raises(TypeError, match="must be a mapping"):
        trainer.load_state_dict([1, 2])  # type: ignore[arg-type]


REEVALUATING = [c for c in CASES if "losses_after" in c.needs]


@pytest.mark.parametrize("case", REEVALUATING, ids=lambda c: c.name)
def test_a_first_step_that_fails_after_the_update_leaves_a_fresh_optimizer(case: Case) -> None:
    """The optimizer state the undone step created (Adam's moments) is dropped again. Calls:
    the step's forward, the same-batch check, then the post-step evaluation (fails)."""
    net, optimizer, trainer = make(case)
    before = state(net, optimizer, trainer)
    with pytest.raises(Boom):
        trainer.step(closure(net, 0, 1, fail_on_call=3))
    assert len(optimizer.state) == 0
    assert same(state(net, optimizer, trainer), before)


@pytest.mark.parametrize("case", REEVALUATING, ids=lambda c: c.name)
def test_atomic_false_keeps_an_update_that_a_later_failure_interrupts(case: Case) -> None:
    """``atomic=False`` skips the copy that undoes the update: the parameters moved, the
    balancer (which commits after the post-step losses) did not."""
    torch.manual_seed(0)
    net = Net()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    trainer = bm.BalancedOptimizer(net, optimizer, case.build(net), atomic=False)
    trainer.step(closure(net, 0, 1))
    while not trainer.balancer.needs_losses_after:  # up to the next measured step
        trainer.step(closure(net, 0, 1))
    weights = [p.detach().clone() for p in net.parameters()]
    balancer = copy.deepcopy(trainer.balancer.state_dict())
    with pytest.raises(Boom):
        trainer.step(closure(net, 1, 1, fail_on_call=2))
    assert not all(torch.equal(p, w) for p, w in zip(net.parameters(), weights, strict=True))
    assert same(trainer.balancer.state_dict(), balancer)
