"""Bad input to MARIGOLD and the one-call step: each gets a clear error, nothing is modified."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import bilevel_mtl as bm

M = 2


def _setup(optimizer_cls: type[torch.optim.Optimizer] = torch.optim.Adam, mode: str = "faithful"):
    torch.manual_seed(0)
    model = nn.Linear(3, M)
    optimizer = optimizer_cls(model.parameters(), lr=0.1)
    return model, optimizer, bm.BalancedOptimizer(model, optimizer, bm.Marigold(M, mode=mode))


X = torch.randn(4, 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_tasks": 1}, ValueError, "at least 2 tasks"),
        ({"num_tasks": 0}, ValueError, "num_tasks"),
        ({"num_tasks": 2.0}, ValueError, "num_tasks"),
        ({"num_tasks": 2, "mode": "fast"}, ValueError, "unknown mode"),
        ({"num_tasks": 2, "radius": 0.0}, ValueError, "radius"),
        ({"num_tasks": 2, "beta": -1.0}, ValueError, "beta"),
        ({"num_tasks": 2, "lr": float("inf")}, ValueError, "lr"),
        ({"num_tasks": 3, "parametrization": bm.Softmax(2)}, ValueError, "for 2 tasks"),
        (
            {"num_tasks": 2, "mode": "perturbed", "estimator": bm.SinglePoint(num_directions=2)},
            ValueError,
            "num_directions=1",
        ),
        (
            {
                "num_tasks": 2,
                "criterion": bm.MainTaskLoss(2),
                "parametrization": bm.PositiveWeights(2, trainable=[False, False]),
            },
            ValueError,
            "no trainable parameters|neither",
        ),
    ],
)
def test_bad_marigold_options(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        bm.Marigold(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("closure", "error", "match"),
    [
        (lambda model: model(X).mean(0)[:1], ValueError, "expected 2 task losses, got 1"),
        (lambda model: model(X).mean(), ValueError, "1-D tensor"),
        (lambda model: model(X), ValueError, "1-D tensor"),
        (lambda model: [model(X)[:, 0], model(X)[:, 1]], ValueError, "task loss 0 must be a scalar"),
        (
            lambda model: model(X).mean(0) * torch.tensor([1.0, float("nan")]),
            bm.NonFiniteLossError,
            r"task loss\(es\) \[1\] are not finite",
        ),
        (lambda model: model(X).mean(0) * torch.tensor([float("inf"), 1.0]), bm.NonFiniteLossError, r"\[0\]"),
        (lambda model: model(X).mean(0).detach(), ValueError, "do not require grad"),
        (lambda model: (model(X).mean(0) > 0).long(), ValueError, "floating point"),
        (lambda model: [], ValueError, "got none"),
    ],
)
def test_bad_closures_leave_model_and_optimizer_untouched(closure, error, match) -> None:  # type: ignore[no-untyped-def]
    model, optimizer, trainer = _setup()
    trainer.step(lambda: model(X).mean(0).abs() + 1.0)  # warm state
    saved = copy.deepcopy((model.state_dict(), optimizer.state_dict(), trainer.balancer.state_dict()))
    with pytest.raises(error, match=match):
        trainer.step(lambda: closure(model))
    for a, b in zip(model.state_dict().values(), saved[0].values(), strict=True):
        assert torch.equal(a, b)
    assert str(optimizer.state_dict()) == str(saved[1])
    for a, b in zip(trainer.balancer.state_dict().values(), saved[2].values(), strict=False):
        if torch.is_tensor(a):
            assert torch.equal(a, b)


def test_faithful_mode_refuses_unsupported_optimizers_by_name() -> None:
    model, _, trainer = _setup(torch.optim.NAdam)
    with pytest.raises(TypeError, match=r"NAdam.*supported optimizers"):
        trainer.step(lambda: model(X).mean(0).abs() + 1.0)


def test_perturbed_mode_works_with_any_optimizer() -> None:
    model, _, trainer = _setup(torch.optim.NAdam, mode="perturbed")
    record = trainer.step(lambda: model(X).mean(0).abs() + 1.0)
    assert record.hypergradient is not None


def test_low_level_misuse_is_explained() -> None:
    with pytest.raises(RuntimeError, match="BalancedOptimizer"):
        bm.Marigold(2, mode="faithful").weights(torch.ones(2))
    with pytest.raises(RuntimeError, match="must follow weights"):
        bm.Marigold(2, mode="perturbed").observe(torch.ones(2))


def test_adversary_is_updated_even_when_observe_runs_under_no_grad() -> None:
    balancer = bm.Marigold(2, mode="perturbed", lr=0.1)
    before = balancer.criterion.rho.logits.detach().clone()
    balancer.weights(torch.tensor([1.0, 2.0]))
    with torch.no_grad():
        balancer.observe(torch.tensor([0.5, 2.5]))
    after = balancer.criterion.rho.logits.detach()
    # ascent on ρ: the task whose loss rose (task 1) gains adversary weight
    assert float(after[1] - before[1]) > 0 > float(after[0] - before[0])


def test_wrong_objects_are_named() -> None:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        bm.BalancedOptimizer(object(), optimizer, bm.LS(2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        bm.BalancedOptimizer(model, object(), bm.LS(2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Balancer"):
        bm.BalancedOptimizer(model, optimizer, object())  # type: ignore[arg-type]
    frozen = nn.Linear(3, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        bm.BalancedOptimizer(frozen, torch.optim.SGD(frozen.parameters(), lr=0.1), bm.LS(2))
    other = nn.Linear(3, 2)
    trainer = bm.BalancedOptimizer(model, torch.optim.SGD(other.parameters(), lr=0.1), bm.Marigold(2))
    with pytest.raises(ValueError, match="not in the model"):
        trainer.step(lambda: other(X).mean(0).abs() + 1.0)
