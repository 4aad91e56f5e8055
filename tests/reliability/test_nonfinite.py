"""Non-finite values, for every balancer: NaN and ±inf in each task's loss, non-finite
gradients, non-finite look-ahead and post-step losses; under ``on_nonfinite="raise"`` and
``"skip"``. In no case may the model, the optimizer state or the balancer's state be
corrupted: before the optimizer step nothing moves; a finite step stands."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from reliability_cases import (
    CASE_NAMES,
    CASES,
    M,
    Net,
    case,
    closure_for,
    global_batch,
    identical,
    num_batches,
)

import bilevel_mtl as bm

BAD_VALUES = [float("nan"), float("inf"), float("-inf")]
POLICIES = ["raise", "skip"]


def _setup(
    name: str, policy: str
) -> tuple[Net, torch.optim.Optimizer, bm.BalancedOptimizer, Callable[..., Any]]:
    torch.manual_seed(0)
    net = Net().double()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    trainer = bm.BalancedOptimizer(net, optimizer, case(name).build(net), on_nonfinite=policy)  # type: ignore[arg-type]
    batches = num_batches(trainer.balancer)
    x, y = global_batch(0)

    def closure(transform: Callable[[torch.Tensor, int], torch.Tensor] | None = None) -> Callable[[], Any]:
        losses = closure_for(net, x, y, batches)
        calls = 0

        def wrapped() -> torch.Tensor:
            nonlocal calls
            calls += 1
            out = losses()
            return out if transform is None else transform(out, calls)

        return wrapped

    for _ in range(2):  # warm optimizer and balancer state
        trainer.step(closure())
    return net, optimizer, trainer, closure


def _snapshot(net: Net, optimizer: torch.optim.Optimizer, trainer: bm.BalancedOptimizer) -> Any:
    return copy.deepcopy((net.state_dict(), optimizer.state_dict(), _tensors(trainer.balancer.state_dict())))


def _tensors(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The balancer's tensor state (upper variables, buffers); generators may advance on a skip."""
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _assert_untouched(
    saved: Any, net: Net, optimizer: torch.optim.Optimizer, trainer: bm.BalancedOptimizer
) -> None:
    assert identical(net.state_dict(), saved[0]), "model changed"
    assert str(optimizer.state_dict()) == str(saved[1]), "optimizer state changed"
    assert identical(_tensors(trainer.balancer.state_dict()), saved[2]), "balancer state changed"


def _mask(position: int, value: float) -> Callable[[torch.Tensor, int], torch.Tensor]:
    def transform(losses: torch.Tensor, calls: int) -> torch.Tensor:
        bad = torch.ones_like(losses)
        bad[..., position] = value  # every batch row of a multi-batch rule
        return losses * bad

    return transform


def _loss_cases() -> list[Any]:
    """(name, policy) for every case and policy."""
    return [pytest.param(c.name, policy) for c in CASES for policy in POLICIES]


@pytest.mark.parametrize(("name", "policy"), _loss_cases())
def test_nonfinite_task_losses_stop_the_step_before_anything_moves(name: str, policy: str) -> None:
    net, optimizer, trainer, closure = _setup(name, policy)
    for position in range(M):
        for value in BAD_VALUES:
            saved = _snapshot(net, optimizer, trainer)
            if policy == "raise":
                with pytest.raises(
                    bm.NonFiniteLossError, match=rf"task loss\(es\) \[{position}\] are not finite"
                ):
                    trainer.step(closure(_mask(position, value)))
            else:
                record = trainer.step(closure(_mask(position, value)))
                assert record.skipped is not None and f"[{position}]" in record.skipped
                assert bool(record.weights.isnan().all()), "a skipped step reports no weights"
            _assert_untouched(saved, net, optimizer, trainer)
    assert trainer.step(closure()).skipped is None, "training goes on after the bad steps"


def _infinite_gradient(losses: torch.Tensor, calls: int) -> torch.Tensor:
    """Add sqrt(z − z.detach()) = 0 to task 1: the loss stays finite, its gradient is infinite."""
    z = losses.sum()
    spike = torch.zeros_like(losses)
    spike[..., 1] = 1.0
    return losses + spike * torch.sqrt(z - z.detach())


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_nonfinite_gradients_never_reach_the_optimizer(name: str, policy: str) -> None:
    net, optimizer, trainer, closure = _setup(name, policy)
    saved = copy.deepcopy((net.state_dict(), optimizer.state_dict()))
    if policy == "raise":
        with pytest.raises(
            bm.NonFiniteGradientError, match=r"gradient is not finite for (parameter|the given output)"
        ):
            trainer.step(closure(_infinite_gradient))
    else:
        record = trainer.step(closure(_infinite_gradient))
        assert record.skipped is not None and "gradient is not finite" in record.skipped
    assert identical(net.state_dict(), saved[0]) and str(optimizer.state_dict()) == str(saved[1])
    state = _tensors(trainer.balancer.state_dict())
    assert all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())
    assert trainer.step(closure()).skipped is None


def _nan_from_second_call(losses: torch.Tensor, calls: int) -> torch.Tensor:
    """Finite at the step's own forward; NaN in task 2 at every later evaluation (look-ahead, post-step)."""
    return losses if calls == 1 else _mask(2, float("nan"))(losses, calls)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_nonfinite_losses_after_a_look_ahead_or_a_step(name: str, policy: str) -> None:
    """Faithful MARIGOLD's look-ahead evaluation: stop before anything moves. Post-step
    evaluation (perturbed MARIGOLD, FAMO): ``"raise"`` undoes the step (all or nothing),
    ``"skip"`` keeps the finite step and skips the balancer's update from those losses.
    Balancers that evaluate nothing more: a normal step."""
    net, optimizer, trainer, closure = _setup(name, policy)
    saved = _snapshot(net, optimizer, trainer)
    if name == "marigold_faithful":
        if policy == "raise":
            with pytest.raises(bm.NonFiniteLossError, match=r"\[2\] are not finite"):
                trainer.step(closure(_nan_from_second_call))
        else:
            assert "[2]" in str(trainer.step(closure(_nan_from_second_call)).skipped)
        _assert_untouched(saved, net, optimizer, trainer)
        return
    if not trainer.balancer.needs_losses_after:
        assert trainer.step(closure(_nan_from_second_call)).skipped is None
        return
    if policy == "raise":
        with pytest.raises(
            bm.NonFiniteLossError, match=r"\[2\] are not finite after the step.*step was undone"
        ):
            trainer.step(closure(_nan_from_second_call))
        _assert_untouched(saved, net, optimizer, trainer)
        assert trainer.step(closure()).skipped is None
        return
    record = trainer.step(closure(_nan_from_second_call))
    assert record.skipped == "balancer update: post-step losses [2] not finite"
    assert bool(torch.isfinite(record.weights).all())
    assert not identical(net.state_dict(), saved[0]), "the finite step stands"
    assert all(bool(torch.isfinite(v).all()) for v in net.state_dict().values())
    assert identical(_tensors(trainer.balancer.state_dict()), saved[2]), "the balancer's update was skipped"
    assert trainer.step(closure()).skipped is None


def test_nonfinite_flags_find_nan_and_inf_but_not_a_sum_that_overflows() -> None:
    from bilevel_mtl._checks import nonfinite_flags

    big = torch.full((4,), 3e38)  # finite float32 values whose sum overflows to inf
    nan, inf = torch.tensor([1.0, float("nan")]), torch.tensor([float("-inf"), 2.0])
    opposite = torch.tensor([float("inf"), float("-inf")])  # sums to NaN
    flags = nonfinite_flags([big, torch.ones(3), nan, inf, opposite])
    assert flags.tolist() == [False, False, True, True, True]


@pytest.mark.parametrize("overflowing", ["gradient", "loss"])
def test_a_step_whose_sums_overflow_but_whose_entries_are_finite_is_taken(overflowing: str) -> None:
    """The trainer's fast check sums each gradient and the losses; a sum that overflows float32
    (entries 3e38) is a false alarm, re-checked entry by entry: the step is taken."""
    weight = torch.nn.Parameter(torch.full((4,), 1e-3))
    model = torch.nn.Module()
    model.weight = weight
    optimizer = torch.optim.SGD([weight], lr=1e-40 if overflowing == "gradient" else 1e-2)
    trainer = bm.BalancedOptimizer(model, optimizer, bm.build_balancer("ls", 2))
    scale = torch.full((4,), 3e38)

    def closure() -> torch.Tensor:
        first = (weight * scale).sum() if overflowing == "gradient" else weight.sum() + 3e38
        return torch.stack([first, weight.sum() + (3e38 if overflowing == "loss" else 0.0)])

    before = weight.detach().clone()
    record = trainer.step(closure)
    assert record.skipped is None
    assert bool(torch.isfinite(record.losses).all())
    assert not torch.equal(weight.detach(), before), "the optimizer stepped"
    assert bool(torch.isfinite(weight.grad).all())
