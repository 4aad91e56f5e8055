"""Criteria: values and gradients against closed forms."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bilevel_mtl.criteria import FunctionCriterion, MainTaskLoss, WorstCaseDecrement


def _losses(m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    before = torch.rand(m, generator=g, dtype=torch.float64) + 0.1
    after = before + 0.1 * torch.randn(m, generator=g, dtype=torch.float64)
    return before, after


@given(m=st.integers(2, 8), seed=st.integers(0, 1000), beta=st.floats(0.01, 3.0))
def test_worst_case_decrement_value_and_gradients(m: int, seed: int, beta: float) -> None:
    before, after = _losses(m, seed)
    criterion = WorstCaseDecrement(m, beta=beta).double()
    with torch.no_grad():
        criterion.rho.logits.normal_(generator=torch.Generator().manual_seed(seed))
    after.requires_grad_(True)
    value = criterion(before, after)
    v = criterion.rho.logits
    rho = torch.softmax(beta * v / before, 0)
    decrement = after - before
    torch.testing.assert_close(value, rho @ decrement)
    d_after, d_v = torch.autograd.grad(value, [after, v])
    torch.testing.assert_close(d_after, rho.detach())
    # ∂/∂v_j Σ ρ_i d_i = (β/f_j) ρ_j (d_j − ρ·d)
    expected_v = beta / before * rho * (decrement - rho @ decrement)
    torch.testing.assert_close(d_v, expected_v.detach())
    assert criterion.maximize_parameters


def test_worst_case_value_is_a_lower_bound_of_the_exact_max() -> None:
    before, after = _losses(5, 0)
    learned = WorstCaseDecrement(5).double()(before, after)
    exact = WorstCaseDecrement(5, adversary="max")(before, after)
    assert float(exact) == pytest.approx(float((after - before).max()))
    assert float(learned.detach()) <= float(exact) + 1e-12
    assert list(WorstCaseDecrement(5, adversary="max").parameters()) == []


def test_main_task_loss_uses_only_the_main_tasks() -> None:
    before, after = _losses(4, 1)
    after.requires_grad_(True)
    value = MainTaskLoss(4, main=[0, 2])(before, after)
    torch.testing.assert_close(value, (after[0] - before[0] + after[2] - before[2]) / 2)
    (grad,) = torch.autograd.grad(value, after)
    torch.testing.assert_close(grad, torch.tensor([0.5, 0, 0.5, 0], dtype=torch.float64))
    weighted = MainTaskLoss(4, coefficients=[1.0, 0.0, 0.0, 3.0])(before, after)
    torch.testing.assert_close(weighted, after[0] - before[0] + 3 * (after[3] - before[3]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"main": 4}, "indices"),
        ({"main": -1}, "indices"),
        ({"main": []}, "indices"),
        ({"main": True}, "indices"),
        ({"coefficients": [1.0, -1.0, 0.0, 0.0]}, "non-negative"),
        ({"coefficients": [1.0, 1.0]}, "non-negative"),
        ({"coefficients": [0.0, 0.0, 0.0, 0.0]}, "positive sum"),
    ],
)
def test_main_task_loss_bad_input(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MainTaskLoss(4, **kwargs)  # type: ignore[arg-type]


def test_function_criterion_wraps_a_callable_and_checks_its_output() -> None:
    before, after = _losses(3, 2)
    ratio = FunctionCriterion(lambda b, a: (a / b).max())
    torch.testing.assert_close(ratio(before, after), (after / before).max())
    with pytest.raises(ValueError, match="scalar tensor"):
        FunctionCriterion(lambda b, a: a - b)(before, after)
    with pytest.raises(TypeError, match="callable"):
        FunctionCriterion(3)  # type: ignore[arg-type]


def test_worst_case_bad_input() -> None:
    with pytest.raises(ValueError, match="beta"):
        WorstCaseDecrement(3, beta=0.0)
    with pytest.raises(ValueError, match="adversary"):
        WorstCaseDecrement(3, adversary="min")
    with pytest.raises(ValueError, match="num_tasks"):
        WorstCaseDecrement(0)


def test_relative_worst_case_decrement_is_scale_invariant() -> None:
    before, after = _losses(4, 3)
    criterion = WorstCaseDecrement(4, adversary="max", relative=True)
    torch.testing.assert_close(criterion(before, after), ((after - before) / before).max())
    scales = torch.tensor([1e-3, 1.0, 10.0, 1e4], dtype=torch.float64)
    torch.testing.assert_close(criterion(before * scales, after * scales), criterion(before, after))
    learned = WorstCaseDecrement(4, relative=True).double()
    torch.testing.assert_close(
        learned(before * scales, after * scales).detach(), learned(before, after).detach()
    )
    with pytest.raises(ValueError, match="must be > 0"):
        criterion(torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.ones(4))
