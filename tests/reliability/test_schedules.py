"""Learning-rate schedulers through the one-call step; gradient accumulation is refused."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import bilevel_mtl as bm
from bilevel_mtl.criteria import Criterion

X = torch.randn(16, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
Y = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).double()


def _losses(model: nn.Module) -> torch.Tensor:
    return ((model(X) - Y) ** 2).mean(0)


class _Recorder(Criterion):
    """The worst-case decrement with ρ fixed at uniform, recording the losses after the look-ahead."""

    def __init__(self) -> None:
        super().__init__()
        self.after: list[torch.Tensor] = []

    def forward(self, losses_before: torch.Tensor, losses_after: torch.Tensor) -> torch.Tensor:
        self.after.append(losses_after.detach().clone())
        return (losses_after - losses_before).mean()


@pytest.mark.parametrize(
    ("optimizer_cls", "options"),
    [(torch.optim.Adam, {"lr": 0.05}), (torch.optim.SGD, {"lr": 0.2, "momentum": 0.9})],
)
def test_the_look_ahead_uses_the_scheduled_learning_rate(
    optimizer_cls: type[torch.optim.Optimizer], options: dict[str, float]
) -> None:
    """After two scheduler steps (lr × 0.1 each), the look-ahead equals a real step of a
    twin optimizer with the weights λ + r·u at the *current* lr, and not at the first lr."""
    model = _model()
    optimizer = optimizer_cls(model.parameters(), **options)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.1)
    criterion = _Recorder()
    balancer = bm.MarigoldFaithful(2, criterion=criterion, lr=0.05, radius=0.1)
    trainer = bm.BalancedOptimizer(model, optimizer, balancer)
    for _ in range(2):
        trainer.step(lambda: _losses(model))
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(options["lr"] * 0.01)

    generator = copy.deepcopy(balancer.generator)
    before = _losses(model).detach()
    lam = balancer.current_weights(before)
    weights = lam + balancer.estimator.radius * balancer.estimator.sample(lam, generator)[0]
    snapshot = copy.deepcopy((model, optimizer))

    def twin_after(lr: float) -> torch.Tensor:
        twin, twin_optimizer = copy.deepcopy(snapshot)
        for group in twin_optimizer.param_groups:
            group["lr"] = lr
        twin_optimizer.zero_grad()
        (weights @ _losses(twin)).backward()
        twin_optimizer.step()
        with torch.no_grad():
            return _losses(twin)

    trainer.step(lambda: _losses(model))
    seen = criterion.after[-1]
    torch.testing.assert_close(seen, twin_after(optimizer.param_groups[0]["lr"]), rtol=1e-12, atol=1e-14)
    assert float((seen - twin_after(options["lr"])).abs().max()) > 1e-6


def _trainer() -> tuple[nn.Module, torch.optim.Optimizer, bm.BalancedOptimizer]:
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    return model, optimizer, bm.BalancedOptimizer(model, optimizer, bm.Marigold(2))


def test_a_gradient_left_by_an_outside_backward_is_refused_not_discarded() -> None:
    model, optimizer, trainer = _trainer()
    trainer.step(lambda: _losses(model))
    _losses(model).sum().backward()  # a micro-batch's backward, as in gradient accumulation
    saved = copy.deepcopy((model.state_dict(), optimizer.state_dict()))
    with pytest.raises(ValueError, match=r"gradient accumulation is not supported: parameter '0\.weight'"):
        trainer.step(lambda: _losses(model))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved[0].values(), strict=True))
    assert str(optimizer.state_dict()) == str(saved[1])


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zeroed_gradients_and_the_steps_own_gradients_are_accepted(set_to_none: bool) -> None:
    model, optimizer, trainer = _trainer()
    trainer.step(lambda: _losses(model))
    trainer.step(lambda: _losses(model))  # the previous step's .grad is its own
    _losses(model).sum().backward()
    optimizer.zero_grad(set_to_none=set_to_none)
    assert trainer.step(lambda: _losses(model)).skipped is None


def test_a_caught_error_does_not_look_like_accumulation() -> None:
    model, _, trainer = _trainer()
    trainer.step(lambda: _losses(model))
    with pytest.raises(bm.NonFiniteLossError):
        trainer.step(lambda: _losses(model) * torch.tensor([1.0, float("nan")], dtype=torch.float64))
    assert trainer.step(lambda: _losses(model)).skipped is None
