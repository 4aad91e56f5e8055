"""MARIGOLD through the one-call step and the low-level path."""

from __future__ import annotations

import copy
import functools
import io
from collections.abc import Callable

import pytest
import torch
from torch import nn

import bilevel_mtl as bm
from bilevel_mtl.context import StepContext
from bilevel_mtl.estimators import SinglePoint

M = 3
MODES: dict[str, Callable[..., bm.Balancer]] = {
    "faithful": bm.MarigoldFaithful,
    "perturbed": bm.Marigold.paper,
    "default": bm.Marigold,
    "next-batch": functools.partial(bm.Marigold, measurement="next-batch"),
}
"""Algorithm 2 (a virtual look-ahead), Algorithm 1 (through the real perturbed step, the paper's
configuration), the library's default (log-decrements measured again on the step's batch on
every 16th step) and the default measured on the next batch."""


def _data(seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 5, generator=g, dtype=dtype), torch.randn(16, M, generator=g, dtype=dtype)


def _model(dropout: float = 0.0, batchnorm: bool = False, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(5, 12), nn.Tanh()]
    if batchnorm:
        layers.append(nn.BatchNorm1d(12))
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(12, M))
    return nn.Sequential(*layers).to(dtype)


def _closure(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    return lambda: ((model(x) - y) ** 2).mean(0)


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("mode", list(MODES))
def test_the_real_step_is_a_plain_step_with_the_reported_weights(mode: str) -> None:
    """The look-ahead leaves model, buffers and optimizer state as a plain step would."""
    x, y = _data()
    model = _model(dropout=0.2, batchnorm=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    trainer = bm.BalancedOptimizer(model, optimizer, MODES[mode](M, lr=0.05))
    for _ in range(3):
        trainer.step(_closure(model, x, y))
    twin, twin_opt = copy.deepcopy((model, optimizer))
    torch.manual_seed(123)
    record = trainer.step(_closure(model, x, y))
    after_marigold = torch.rand(4)

    torch.manual_seed(123)
    twin_opt.zero_grad()
    losses = _closure(twin, x, y)()
    torch.testing.assert_close(losses.detach(), record.losses, rtol=0, atol=0)
    (record.weights @ losses).backward()
    twin_opt.step()
    assert torch.equal(torch.rand(4), after_marigold), "the step consumed extra model randomness"
    for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-15)
    for a, b in zip(optimizer.state.values(), twin_opt.state.values(), strict=True):
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-14, atol=1e-15)


def test_losses_at_replays_dropout_masks_and_batch_statistics() -> None:
    x, y = _data()
    model = _model(dropout=0.5, batchnorm=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    closure = _closure(model, x, y)
    running = model[2].running_mean.clone()
    rng = torch.get_rng_state()
    context = StepContext.evaluate(model, optimizer, closure)
    losses = context.losses
    state_after_forward = torch.get_rng_state()
    again = context.losses_at([p.detach() for p in model.parameters()])
    torch.testing.assert_close(again, losses.detach(), rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), state_after_forward)
    # BatchNorm running stats were updated once, by the real forward only.
    model2 = _model(dropout=0.5, batchnorm=True)
    torch.set_rng_state(rng)
    _closure(model2, x, y)()
    torch.testing.assert_close(model[2].running_mean, model2[2].running_mean, rtol=0, atol=0)
    assert not torch.equal(model[2].running_mean, running)


def test_faithful_criterion_value_is_measured_after_the_perturbed_step() -> None:
    x, y = _data()
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    balancer = bm.MarigoldFaithful(M, estimator=SinglePoint())  # the paper's estimator
    trainer = bm.BalancedOptimizer(model, optimizer, balancer)
    trainer.step(_closure(model, x, y))
    twin, twin_opt = copy.deepcopy((model, optimizer))
    rho_logits = balancer.criterion.rho.logits.detach().clone()
    lam = balancer.current_weights(_closure(model, x, y)().detach())
    direction = SinglePoint().sample(lam, copy.deepcopy(balancer.generator))[0]
    record = trainer.step(_closure(model, x, y))

    twin_opt.zero_grad()
    before = _closure(twin, x, y)()
    ((lam + 1e-3 * direction) @ before).backward()
    twin_opt.step()
    with torch.no_grad():
        after = _closure(twin, x, y)()
    rho = torch.softmax(rho_logits.double() / before.detach(), 0)
    expected = float(rho @ (after - before.detach()))
    assert record.criterion_value is not None and record.criterion_value.dim() == 0
    assert float(record.criterion_value) == pytest.approx(expected, rel=1e-10)
    assert record.hypergradient is not None
    torch.testing.assert_close(record.hypergradient, (M / 1e-3) * expected * direction)


def test_perturbed_mode_low_level_loop_matches_the_one_call_step() -> None:
    x, y = _data()
    model_a, model_b = _model(), _model()
    opt_a = torch.optim.Adam(model_a.parameters(), lr=0.01)
    opt_b = torch.optim.Adam(model_b.parameters(), lr=0.01)
    trainer = bm.BalancedOptimizer(model_a, opt_a, bm.Marigold.paper(M, lr=0.01))
    balancer = bm.Marigold.paper(M, lr=0.01)
    for _ in range(5):
        record = trainer.step(_closure(model_a, x, y))
        opt_b.zero_grad()
        losses = _closure(model_b, x, y)()
        w = balancer.weights(losses)
        (w @ losses).backward()
        opt_b.step()
        with torch.no_grad():
            report = balancer.update(losses, _closure(model_b, x, y)())
        torch.testing.assert_close(w, record.weights)
        assert report is not None
        torch.testing.assert_close(report.hypergradient, record.hypergradient)
        torch.testing.assert_close(report.criterion_value, record.criterion_value)
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("mode", list(MODES))
def test_checkpoint_and_resume_give_the_same_trajectory(mode: str) -> None:
    x, y = _data()

    def make() -> tuple[nn.Module, bm.BalancedOptimizer]:
        model = _model(dropout=0.1)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
        return model, bm.BalancedOptimizer(model, optimizer, MODES[mode](M, lr=0.01, seed=3))

    model, trainer = make()
    torch.manual_seed(0)
    for _ in range(14):  # the resumed steps 14-17 include the default's measured step 16
        trainer.step(_closure(model, x, y))
    buffer = io.BytesIO()
    torch.save(
        {"model": model.state_dict(), "trainer": trainer.state_dict(), "rng": torch.get_rng_state()}, buffer
    )
    reference = [trainer.step(_closure(model, x, y)) for _ in range(4)]

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    model2, trainer2 = make()
    for _ in range(2):  # a different history before loading must not matter
        trainer2.step(_closure(model2, x, y))
    model2.load_state_dict(saved["model"])
    trainer2.load_state_dict(saved["trainer"])
    torch.set_rng_state(saved["rng"])
    resumed = [trainer2.step(_closure(model2, x, y)) for _ in range(4)]
    assert any(record.hypergradient is not None for record in reference)  # the upper level learnt
    for a, b in zip(reference, resumed, strict=True):
        assert torch.equal(a.weights, b.weights)
        assert torch.equal(a.losses, b.losses)
        assert (a.hypergradient is None) == (b.hypergradient is None)
        if a.hypergradient is not None and b.hypergradient is not None:
            assert torch.equal(a.hypergradient, b.hypergradient)
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", list(MODES))
def test_the_model_decides_the_dtype(dtype: torch.dtype, mode: str) -> None:
    x, y = _data(dtype=dtype)
    model = _model(dtype=dtype, batchnorm=True, dropout=0.1)
    trainer = bm.BalancedOptimizer(model, torch.optim.Adam(model.parameters()), MODES[mode](M))
    # next-batch learns from the second step on, the default on the first (measured) one
    records = [trainer.step(_closure(model, x, y)) for _ in range(2)]
    assert all(record.weights.dtype == dtype for record in records)
    learnt = [r.hypergradient for r in records if r.hypergradient is not None]
    assert learnt and all(g.dtype == dtype and bool(torch.isfinite(g).all()) for g in learnt)


@pytest.mark.parametrize("cls", [bm.Marigold, bm.MarigoldFaithful])
def test_the_paper_preset_is_appendix_c(cls: type[bm.Marigold] | type[bm.MarigoldFaithful]) -> None:
    from bilevel_mtl.criteria import WorstCaseDecrement
    from bilevel_mtl.estimators import SinglePoint
    from bilevel_mtl.parametrizations import ScaledSoftmax

    paper = cls.paper(3)
    assert isinstance(paper.parametrization, ScaledSoftmax) and paper.parametrization.min_loss_ratio == 0
    assert paper.parametrization.beta == 1.0
    assert isinstance(paper.criterion, WorstCaseDecrement) and not paper.criterion.relative
    assert paper.criterion.rho is not None and paper.criterion.rho.min_loss_ratio == 0
    assert isinstance(paper.estimator, SinglePoint) and paper.estimator.radius == 1e-3
    assert paper.estimator.directions == "sphere" and paper.estimator.num_directions == 1
    assert [g["lr"] for g in paper.upper_optimizer.param_groups] == [1e-4, 1e-4]
    assert [g["maximize"] for g in paper.upper_optimizer.param_groups] == [False, True]
    # with losses within a factor 1e3 of each other the library's floor never acts: same run
    floored = {"parametrization": ScaledSoftmax(3), "criterion": WorstCaseDecrement(3)}
    runs = []
    for balancer in (cls.paper(3, seed=1), cls.paper(3, seed=1, **floored)):
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        x = torch.randn(16, 4)
        trainer = bm.BalancedOptimizer(model, torch.optim.Adam(model.parameters(), lr=0.01), balancer)
        runs.append([trainer.step(lambda m=model, x=x: (m(x) ** 2).mean(0) + 0.5).weights for _ in range(3)])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        paper.parametrization.logits.copy_(torch.tensor([0.0, 1e-4, 0.0]))
    one_hot = paper.current_weights(torch.tensor([1.0, 1e-9, 1.0]))
    assert float(one_hot[1]) > 1 - 1e-6  # the paper's raw division by a near-zero loss
