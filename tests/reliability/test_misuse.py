"""Inputs a new user gives that are supported on purpose (the refused ones are rows of
``bad_inputs.py``): named losses, losses in another precision than the model, a near-zero
loss under MARIGOLD's scaled softmax, and the warning of a loop that forgets ``update()``."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import bilevel_mtl as bm
from bilevel_mtl.balancers import DWA, LS
from bilevel_mtl.parametrizations import ScaledSoftmax

X = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
NAMES = ("depth", "normals", "edges")


def setup(balancer: bm.Balancer) -> tuple[nn.Module, bm.BalancedOptimizer]:
    torch.manual_seed(0)
    model = nn.Linear(3, 3)
    return model, bm.BalancedOptimizer(model, torch.optim.SGD(model.parameters(), lr=0.1), balancer)


def losses(model: nn.Module) -> torch.Tensor:
    return model(X).pow(2).mean(0) + 1.0


@pytest.mark.parametrize("make", [lambda: LS(3), lambda: bm.Marigold(3, lr=0.05)], ids=["ls", "marigold"])
def test_named_losses_train_like_a_vector_and_name_the_record(make: object) -> None:
    named_model, named = setup(make())  # type: ignore[operator]
    plain_model, plain = setup(make())  # type: ignore[operator]
    for step in range(3):
        order = NAMES if step % 2 == 0 else NAMES[::-1]  # any order of the same names

        def closure(order: tuple[str, ...] = order) -> dict[str, torch.Tensor]:
            values = losses(named_model)
            return {name: values[NAMES.index(name)] for name in order}

        record = named.step(closure)
        expected = plain.step(lambda: losses(plain_model))
        torch.testing.assert_close(record.weights, expected.weights, rtol=0, atol=0)
        assert record.tasks == NAMES
    for p, q in zip(named_model.parameters(), plain_model.parameters(), strict=True):
        assert torch.equal(p, q)
    flat = record.as_dict()
    assert {f"loss/{n}" for n in NAMES} | {f"weight/{n}" for n in NAMES} <= set(flat)
    assert plain.step(lambda: losses(plain_model)).tasks is None


def test_a_loss_balancer_takes_named_losses_in_a_loop_you_own() -> None:
    balancer = LS(3)
    named = dict(zip(NAMES, torch.tensor([1.0, 2.0, 3.0]), strict=True))
    torch.testing.assert_close(balancer.weights(named), balancer.weights(torch.tensor([1.0, 2.0, 3.0])))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_losses_in_another_precision_than_the_model_are_supported(dtype: torch.dtype) -> None:
    """float64 losses keep their precision for the balancer; half-precision losses are upcast
    to float32 (its arithmetic, e.g. λ + r·u, needs it); the gradients are the model's dtype."""
    model, trainer = setup(bm.Marigold(3, lr=0.05))
    reference_model, reference = setup(bm.Marigold(3, lr=0.05))
    record = trainer.step(lambda: losses(model).to(dtype))
    expected = reference.step(lambda: losses(reference_model))
    assert record.losses.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    tolerance = 1e-6 if dtype == torch.float64 else 1e-2
    torch.testing.assert_close(record.losses.float(), expected.losses, rtol=tolerance, atol=0)
    for p, q in zip(model.parameters(), reference_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=tolerance, atol=tolerance)


def test_a_near_zero_loss_does_not_take_every_weight() -> None:
    """λ = softmax(βu/f̃) with f̃ floored at ρ·max f: a loss of 1e-9 beside losses of 1 is
    as sensitive as one of 1e-3; ρ = 0 divides by the raw loss (the paper's formula)."""
    safe, raw = ScaledSoftmax(3), ScaledSoftmax(3, min_loss_ratio=0.0)
    with torch.no_grad():
        for p in (safe, raw):
            p.logits.copy_(torch.tensor([0.0, 1e-4, 0.0]))
    values = torch.tensor([1.0, 1e-9, 1.0])
    expected = torch.softmax(torch.tensor([0.0, 1e-4 / 1e-3, 0.0]), 0)
    with torch.no_grad():
        torch.testing.assert_close(safe(values), expected)
        assert float(raw(values)[1]) > 1 - 1e-6  # one-hot without the floor
        ordinary = torch.tensor([1.0, 0.5, 2.0])  # every loss above the floor: the plain formula
        plain = torch.softmax(torch.tensor([0.0, 1e-4, 0.0]) / ordinary, 0)
        torch.testing.assert_close(safe(ordinary), plain)


def test_weights_of_new_losses_without_update_warn_once_the_state_would_never_change() -> None:
    balancer = DWA(3, window=2)
    first = torch.tensor([1.0, 2.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        balancer.weights(first)
        balancer.weights(first)  # the same losses again: a pure call, no warning
        balancer.update(first)
        balancer.weights(first * 2)  # a new step after update(): fine
    with pytest.warns(UserWarning, match=r"DWA.weights\(\) was called for new losses without update\(\)"):
        balancer.weights(first * 3)
