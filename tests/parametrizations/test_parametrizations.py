"""Parametrizations: closed forms, simplex membership, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bilevel_mtl.parametrizations import PositiveWeights, ScaledSoftmax, Softmax


@given(m=st.integers(1, 10), seed=st.integers(0, 1000), beta=st.floats(0.01, 3.0))
def test_scaled_softmax_closed_form_and_jacobian(m: int, seed: int, beta: float) -> None:
    g = torch.Generator().manual_seed(seed)
    losses = torch.rand(m, generator=g, dtype=torch.float64) * 5 + 1e-3
    p = ScaledSoftmax(m, beta=beta).double()
    with torch.no_grad():
        p.logits.normal_(generator=g)
    w = p(losses)
    expected = torch.softmax(beta * p.logits / losses, 0)
    torch.testing.assert_close(w, expected)
    assert float(w.detach().sum()) == pytest.approx(1.0) and bool((w >= 0).all())
    jac = torch.autograd.functional.jacobian(lambda u: torch.softmax(beta * u / losses, 0), p.logits.detach())
    s = expected.detach()
    torch.testing.assert_close(jac, (torch.diag(s) - torch.outer(s, s)) * (beta / losses))


def test_scaled_softmax_starts_uniform_whatever_the_losses() -> None:
    w = ScaledSoftmax(4)(torch.tensor([1e-3, 1.0, 10.0, 1e4]))
    torch.testing.assert_close(w, torch.full((4,), 0.25))


def test_scaled_softmax_refuses_negative_losses_and_floors_zero_ones() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        ScaledSoftmax(2)(torch.tensor([1.0, -1e-3]))
    p = ScaledSoftmax(2, min_loss=0.5)
    with torch.no_grad():
        p.logits.copy_(torch.tensor([1.0, 0.0]))
    # a zero loss (e.g. a masked task with no positives in the batch) counts as min_loss
    expected = torch.softmax(torch.tensor([1.0 / 0.5, 0.0]), 0)
    torch.testing.assert_close(p(torch.tensor([0.0, 2.0])), expected)
    with pytest.raises(ValueError, match="min_loss"):
        ScaledSoftmax(2, min_loss=0.0)
    with pytest.raises(ValueError, match="shape"):
        ScaledSoftmax(2)(torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="beta"):
        ScaledSoftmax(2, beta=-1.0)


def test_softmax_allows_any_losses() -> None:
    w = Softmax(3)(torch.tensor([-1.0, 0.0, 2.0]))
    torch.testing.assert_close(w, torch.full((3,), 1 / 3))


def test_positive_weights_keep_fixed_entries_fixed() -> None:
    p = PositiveWeights(3, init=[1.0, 0.5, 2.0], trainable=[False, True, True])
    w = p(torch.ones(3))
    torch.testing.assert_close(w, torch.tensor([1.0, 0.5, 2.0]))
    w.sum().backward()
    assert p.log_weights.grad is not None
    torch.testing.assert_close(p.log_weights.grad, torch.tensor([0.0, 0.5, 2.0]))
    assert not PositiveWeights.on_simplex


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"init": 0.0}, "> 0"), ({"init": [1.0, -1.0, 1.0]}, "> 0"), ({"trainable": [True]}, "3 flags")],
)
def test_positive_weights_bad_input(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PositiveWeights(3, **kwargs)  # type: ignore[arg-type]
