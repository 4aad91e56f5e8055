"""The trainer's contract with every balancer: the balancer decides, the trainer writes ``.grad``
and steps, and only a completed step commits.

* a ``GradScaler`` changes no update (SGD, whose update is the gradient itself, so a wrong
  scale shows; Adam would hide it), for every registered balancer and the extra
  configurations, and for GradDrop on a layer whose module also ran in an abandoned forward;
* a step that fails after the balancer decided commits nothing: the balancer's state and
  its generators are bitwise unchanged, and a retry equals a run that never failed;
* on CUDA, one step reads the device once (the finiteness flag before ``optimizer.step``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from reliability_cases import CASES, Case, Net, case, closure_for, global_batch, identical, num_batches
from torch import Tensor, nn

import bilevel_mtl as bm
from bilevel_mtl.balancers import LS, GradDrop, GradientBalancer

SCALE = 2.0**8
RTOL = 1e-6


def _one_step(
    make_balancer: Callable[[Net], bm.Balancer],
    scaler: torch.amp.GradScaler | None,
    closure_of: Callable[[Net, bm.Balancer], Callable[[], Tensor]] | None = None,
) -> tuple[list[Tensor], list[Tensor]]:
    """Parameters before and after one SGD step (float64) from the same initial state."""
    torch.manual_seed(0)
    net = Net().double()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    balancer = make_balancer(net)
    trainer = bm.BalancedOptimizer(net, optimizer, balancer, scaler=scaler)
    before = [p.detach().clone() for p in net.parameters()]
    if closure_of is None:
        x, y = global_batch(0)
        closure = closure_for(net, x, y, num_batches(balancer))
    else:
        closure = closure_of(net, balancer)
    record = trainer.step(closure)
    assert record.skipped is None, record.skipped
    return before, [p.detach().clone() for p in net.parameters()]


def _assert_same_update(
    plain: tuple[list[Tensor], list[Tensor]], scaled: tuple[list[Tensor], list[Tensor]]
) -> None:
    for start, end, scaled_start, scaled_end in zip(*plain, *scaled, strict=True):
        assert torch.equal(start, scaled_start)
        update, scaled_update = end - start, scaled_end - scaled_start
        size = float(update.abs().max())
        torch.testing.assert_close(scaled_update, update, rtol=RTOL, atol=RTOL * size)


def test_graddrop_on_a_layer_with_an_abandoned_forward_under_a_scaler() -> None:
    """The closure runs the shared module once more and drops its output; GradDrop's layer is
    the call that feeds the losses, and its update is the same with a scaler as without."""
    x, y = global_batch(0)

    def closure_of(net: Net, balancer: bm.Balancer) -> Callable[[], Tensor]:
        def closure() -> Tensor:
            net.trunk(x[0] * 2.0)  # an abandoned forward of the shared module (e.g. a probe)
            return ((net(x.reshape(-1, x.shape[-1])) - y.reshape(-1, y.shape[-1])) ** 2).mean(0)

        return closure

    def graddrop(net: Net) -> bm.Balancer:
        return GradDrop(3, shared=net.trunk, representation=True)

    plain = _one_step(graddrop, None, closure_of)
    scaled = _one_step(graddrop, torch.amp.GradScaler("cpu", init_scale=SCALE), closure_of)
    _assert_same_update(plain, scaled)
    moved = [float((end - start).abs().max()) for start, end in zip(*plain, strict=True)]
    assert min(moved) > 0, "every parameter moves (the trunk through the representation's VJP)"


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_a_scaler_leaves_the_update_unchanged(name: str) -> None:
    plain = _one_step(case(name).build, None)
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE)
    scaled = _one_step(case(name).build, scaler)
    _assert_same_update(plain, scaled)
    assert scaler.get_scale() == SCALE


# --- a failed step commits nothing ----------------------------------------------------------------


class _StepFailed(RuntimeError):
    pass


def _generators(balancer: nn.Module) -> dict[str, Tensor]:
    """The state of every ``torch.Generator`` the balancer (or one of its submodules) holds."""
    found = {}
    for prefix, module in balancer.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, torch.Generator):
                found[f"{prefix}.{attr}"] = value.get_state()
    return found


def _state(balancer: bm.Balancer) -> Any:
    return copy.deepcopy((balancer.state_dict(), _generators(balancer)))


STATEFUL = [c for c in CASES if c.stateful]
NAN_GRADIENT = [c for c in STATEFUL if not issubclass(c.cls, GradientBalancer)]
"""Stateful balancers whose update the trainer backpropagates (a hook on ``.grad`` sees it)."""


def _trained(c: Case) -> tuple[Net, torch.optim.Optimizer, bm.BalancedOptimizer, Callable[[int], Any]]:
    """Case ``c`` after two steps (warm state), and the closure of any step."""
    torch.manual_seed(0)
    net = Net().double()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    trainer = bm.BalancedOptimizer(net, optimizer, c.build(net), on_nonfinite="skip")

    def closure(step: int) -> Any:
        x, y = global_batch(step)
        return closure_for(net, x, y, num_batches(trainer.balancer))

    for step in range(2):
        assert trainer.step(closure(step)).skipped is None
    return net, optimizer, trainer, closure


def _raise(*args: object, **kwargs: object) -> None:
    raise _StepFailed("the optimizer step failed")


def _retry_equals_a_run_that_never_failed(
    c: Case, net: Net, trainer: bm.BalancedOptimizer, closure: Callable[[int], Any]
) -> None:
    """Steps 2 and 3 after the failure equal those of a twin that never failed, bit for bit."""
    twin, _, twin_trainer, twin_closure = _trained(c)
    for step in (2, 3):
        assert trainer.step(closure(step)).skipped is None
        assert twin_trainer.step(twin_closure(step)).skipped is None
    assert identical(net.state_dict(), twin.state_dict())
    assert identical(_state(trainer.balancer), _state(twin_trainer.balancer))


@pytest.mark.parametrize("name", [c.name for c in STATEFUL])
def test_a_step_whose_optimizer_fails_commits_nothing(name: str) -> None:
    net, optimizer, trainer, closure = _trained(case(name))
    saved, model = _state(trainer.balancer), copy.deepcopy(net.state_dict())
    optimizer.step = _raise  # type: ignore[method-assign]
    with pytest.raises(_StepFailed):
        trainer.step(closure(2))
    assert identical(_state(trainer.balancer), saved), "the balancer committed a failed step"
    assert identical(net.state_dict(), model)
    del optimizer.step  # the class's step again
    _retry_equals_a_run_that_never_failed(case(name), net, trainer, closure)


@pytest.mark.parametrize("name", [c.name for c in NAN_GRADIENT])
def test_a_step_skipped_for_a_nan_gradient_after_deciding_commits_nothing(name: str) -> None:
    """A hook turns the update's ``.grad`` NaN once the balancer has decided (the look-ahead's
    gradients are not ``.grad``, so it is not touched): the step is skipped, nothing commits."""
    net, optimizer, trainer, closure = _trained(case(name))
    saved, model = _state(trainer.balancer), copy.deepcopy((net.state_dict(), optimizer.state_dict()))
    param = net.heads.bias

    def poison(p: Tensor) -> None:
        assert p.grad is not None
        p.grad.fill_(float("nan"))

    handle = param.register_post_accumulate_grad_hook(poison)
    try:
        record = trainer.step(closure(2))
    finally:
        handle.remove()
    assert record.skipped is not None and "gradient is not finite" in record.skipped, record.skipped
    assert identical(_state(trainer.balancer), saved), "the balancer committed a skipped step"
    assert identical(net.state_dict(), model[0]) and str(optimizer.state_dict()) == str(model[1])
    _retry_equals_a_run_that_never_failed(case(name), net, trainer, closure)


# --- host synchronizations ----------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_one_ls_step_reads_the_device_once() -> None:
    """The default path of a step syncs once: the combined finiteness flag before ``optimizer.step``."""
    torch.manual_seed(0)
    net = Net().cuda()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    trainer = bm.BalancedOptimizer(net, optimizer, LS(3))
    x, y = (t.float().cuda() for t in global_batch(0))
    closure = closure_for(net, x, y, 1)
    for _ in range(2):  # warm-up: lazy initialisation, optimizer state
        trainer.step(closure)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            record = trainer.step(closure)
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    assert record.skipped is None
    assert len(syncs) <= 1, syncs
