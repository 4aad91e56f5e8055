"""The default MARIGOLD configuration: FAMO as a MARIGOLD configuration, the sparse same-batch
measurement (every k-th step), the next-batch measurement, and the scale invariance of weights
on log-losses."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import bilevel_mtl as bm
from bilevel_mtl.balancers import FAMO, Marigold

M = 3
SCALES = torch.tensor([1e3, 1.0, 1e-3], dtype=torch.float64)
STEPS = 60


def _batches(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 5, generator=g, dtype=torch.float64)
    y = torch.randn(64, M, generator=g, dtype=torch.float64)
    return [(x[(8 * k) % 64 :][:8], y[(8 * k) % 64 :][:8]) for k in range(STEPS)]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, M))


def _losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return SCALES * ((model(x) - y) ** 2).mean(0) + 0.01 * SCALES  # 1e3 .. 1e-3 apart, never 0


@contextlib.contextmanager
def _float64() -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _train(make: Callable[[], bm.Balancer], optimizer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights of every step and the final parameters, in float64."""
    with _float64():
        model, balancer = _model(), make()
        opt = (
            torch.optim.SGD(model.parameters(), lr=1e-4)
            if optimizer == "sgd"
            else torch.optim.Adam(model.parameters(), lr=0.01)
        )
        trainer = bm.BalancedOptimizer(model, opt, balancer)
        weights = [trainer.step(lambda x=x, y=y: _losses(model, x, y)).weights for x, y in _batches()]
        return torch.stack(weights), torch.cat([p.detach().flatten() for p in model.parameters()])


def _famo_by_hand(
    lr: float, learn: Callable[[FAMO, int, torch.Tensor, Callable[[], torch.Tensor]], None]
) -> tuple[torch.Tensor, torch.Tensor]:
    """FAMO(lr, γ = 1e-3, ε = 0) in a loop by hand with Adam: the weights of every step and the
    final parameters; ``learn(famo, k, losses, losses_after)`` applies step k's state change
    (``losses_after()``: the losses on step k's batch after its step)."""
    with _float64():
        reference, model = FAMO(M, eps=0.0, gamma=1e-3, lr=lr), _model()
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        expected = []
        for k, (x, y) in enumerate(_batches()):
            losses = _losses(model, x, y)
            weights = reference.weights(losses)
            expected.append(weights)
            opt.zero_grad()
            (weights @ losses).backward()
            opt.step()
            learn(reference, k, losses.detach(), lambda x=x, y=y: _losses(model, x, y))
    return torch.stack(expected), torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_same_batch_log_decrement_is_famo_step_for_step(optimizer: str) -> None:
    """Marigold's default configuration measured on the same batch (log-decrement criterion,
    first-order estimator, softmax logits, Adam(0.025, weight decay 1e-3), weights on the
    log-losses) is FAMO (with its ε = 0): the same weights at every step, the same model."""
    famo = _train(lambda: FAMO(M, eps=0.0, gamma=1e-3, lr=0.025), optimizer)
    marigold = _train(
        lambda: Marigold(M, measurement="same-batch", measure_every=1, lr=0.025, weight_decay=1e-3), optimizer
    )
    moved = (famo[0][-1] / famo[0][0]).log().abs().max()
    assert float(moved) > 0.05  # the weights did move
    torch.testing.assert_close(marigold[0], famo[0], rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(marigold[1], famo[1], rtol=1e-10, atol=1e-13)


@pytest.mark.filterwarnings("ignore:FAMO.weights\\(\\) was called")
@pytest.mark.parametrize("every", [3, 16])
def test_measuring_every_kth_step_is_famo_updated_on_those_steps_only(every: int) -> None:
    """The default re-measures the step's batch on steps 0, k, 2k, ...: by hand, FAMO's logit
    update from (f before, f after) of those steps only, the other steps leaving its state
    alone; BalancedOptimizer evaluates the closure again on exactly those steps."""

    def learn(famo: FAMO, k: int, losses: torch.Tensor, after: Callable[[], torch.Tensor]) -> None:
        if k % every == 0:
            with torch.no_grad():
                famo.update(losses, losses_after=after())

    expected, _ = _famo_by_hand(0.2, learn)
    with _float64():
        model, balancer = _model(), Marigold(M, measure_every=every)
        trainer = bm.BalancedOptimizer(model, torch.optim.Adam(model.parameters(), lr=0.01), balancer)
        calls, weights = [], []
        for x, y in _batches():
            count = [0]

            def closure(x: torch.Tensor = x, y: torch.Tensor = y, count: list[int] = count) -> torch.Tensor:
                count[0] += 1
                return _losses(model, x, y)

            weights.append(trainer.step(closure).weights)
            calls.append(count[0])
    assert balancer.measure_every == every
    torch.testing.assert_close(torch.stack(weights), expected, rtol=1e-10, atol=1e-13)
    # the first step also checks once that the closure is deterministic (one more call)
    assert calls == [3] + [2 if k % every == 0 else 1 for k in range(1, STEPS)]


def test_in_a_loop_you_own_losses_after_is_wanted_on_the_measured_steps_only() -> None:
    balancer = Marigold(M, measure_every=2)
    losses, after = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.9, 1.9, 2.9])
    assert balancer.needs_losses_after  # step 0 is measured
    with pytest.raises(ValueError, match="needs losses_after"):
        balancer.update(losses)
    assert balancer.update(losses, after) is not None
    assert not balancer.needs_losses_after  # step 1 is not
    with pytest.raises(ValueError, match="takes no losses_after"):
        balancer.update(losses, after)
    assert balancer.update(losses) is None  # no upper step between measurements
    assert balancer.needs_losses_after


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"measure_every": 0}, "measure_every must be an integer >= 1"),
        ({"measure_every": 2.0}, "measure_every must be an integer >= 1"),
        ({"measure_every": True}, "measure_every must be an integer >= 1"),
        ({"measurement": "next-batch", "measure_every": 4}, "applies to measurement='same-batch'"),
    ],
)
def test_bad_measure_every_is_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Marigold(M, **options)  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:FAMO.weights\\(\\) was called")
def test_next_batch_measurement_learns_from_the_next_steps_losses() -> None:
    """The default reads the losses after step k from step k+1's forward pass: by hand, FAMO's
    logit update from the pair (f_k on batch k, f_{k+1} on batch k+1), applied once step k+1's
    weights are decided; the first step only records."""
    previous: list[torch.Tensor] = []

    def learn(famo: FAMO, k: int, losses: torch.Tensor, after: Callable[[], torch.Tensor]) -> None:
        if previous:
            famo.update(previous.pop(), losses_after=losses)
        previous.append(losses)

    expected, parameters = _famo_by_hand(0.025, learn)
    marigold = _train(lambda: Marigold(M, measurement="next-batch", lr=0.025, weight_decay=1e-3), "adam")
    torch.testing.assert_close(marigold[0], expected, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(marigold[1], parameters)


@settings(max_examples=40, deadline=None)
@given(
    task=st.integers(0, M - 1),
    exponent=st.floats(-3.0, 3.0),
    seed=st.integers(0, 2**16),
    measurement=st.sampled_from(["next-batch", "same-batch"]),
    every=st.sampled_from([1, 3, 16]),
)
def test_a_tasks_loss_scale_changes_nothing_but_round_off(
    task: int, exponent: float, seed: int, measurement: str, every: int
) -> None:
    """Multiplying one task's loss by 10^±3 at every step: the upper level's weights and the
    direction of the weighted update Σ w_i ∇f_i are those of the unscaled run, step for step."""
    g = torch.Generator().manual_seed(seed)
    steps = 12
    losses = (
        torch.rand(steps + 1, M, generator=g, dtype=torch.float64)
        * 10.0 ** torch.randint(-2, 3, (M,), generator=g)
        + 1e-3
    )
    after = losses[:-1] * (0.9 + 0.2 * torch.rand(steps, M, generator=g, dtype=torch.float64))
    grads = torch.randn(steps, M, 7, generator=g, dtype=torch.float64)  # ∇f_i of each step
    scale = torch.ones(M, dtype=torch.float64)
    scale[task] = 10.0**exponent
    runs = []
    for c in (torch.ones_like(scale), scale):
        every_k = every if measurement == "same-batch" else 1
        balancer = Marigold(M, measurement=measurement, measure_every=every_k).double()
        trail = []
        for k in range(steps):
            w = balancer.weights(c * losses[k])
            direction = w @ (c[:, None] * grads[k])
            upper = balancer.parametrization(c * losses[k]).detach()
            trail.append((upper, direction / direction.norm()))
            if balancer.needs_losses_after:  # same-batch: the measured steps
                balancer.update(c * losses[k], c * after[k])
            else:
                balancer.update(c * losses[k])
        runs.append(trail)
    assert float((runs[0][-1][0] - runs[0][0][0]).abs().max()) > 1e-3  # the upper level did move
    for (upper, unit), (upper_s, unit_s) in zip(*runs, strict=True):
        torch.testing.assert_close(upper_s, upper, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(unit_s, unit, rtol=1e-9, atol=1e-12)


def test_next_batch_with_a_single_point_estimator_learns_from_the_previous_steps_draw() -> None:
    """measurement='next-batch' with SinglePoint(r): the upper step taken at step k+1 is the
    one a same-batch balancer in the state of step k takes from step k's losses, its draw u
    (weights λ+ru) and step k+1's losses as the losses after it; the first step only records."""
    import copy

    from bilevel_mtl.criteria import MainTaskLoss
    from bilevel_mtl.estimators import SinglePoint
    from bilevel_mtl.parametrizations import PositiveWeights

    def make(measurement: str) -> Marigold:
        return Marigold(
            M,
            measurement=measurement,
            measure_every=1,
            objective="losses",
            lr=0.05,
            criterion=MainTaskLoss(M, main=0),
            parametrization=PositiveWeights(M, init=1.0, trainable=[False, True, True]),
            estimator=SinglePoint(0.3, space="log-weights"),
            seed=3,
        ).double()

    g = torch.Generator().manual_seed(0)
    losses = torch.rand(8, M, generator=g, dtype=torch.float64) + 0.5
    balancer = make("next-batch")
    snapshot = None
    for k in range(len(losses)):
        balancer.weights(losses[k])
        state = copy.deepcopy(balancer.state_dict())
        report = balancer.update(losses[k])
        if snapshot is None:
            assert float(report.hypergradient.abs().max()) == 0.0  # the first step only records
        else:
            twin = make("same-batch")
            twin.load_state_dict(snapshot)
            expected = twin.update(losses[k - 1], losses[k]).hypergradient
            assert float(expected.abs().max()) > 0
            torch.testing.assert_close(report.hypergradient, expected, rtol=1e-12, atol=0)
        snapshot = state
    learnt = balancer.parametrization(losses[0]).detach()
    assert float((learnt[1:] - 1).abs().max()) > 1e-3, "the auxiliary weights moved"
