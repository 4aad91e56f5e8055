from __future__ import annotations

import pytest
import torch

from benchmarks.toy import LOWER_BOUND, ToyTwoTask, pareto_front, pareto_stationarity, toy_losses


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_pareto_front_is_stationary_and_not_dominated(scale: float) -> None:
    front = pareto_front(21, scale)
    assert max(pareto_stationarity(p, scale) for p in front) < 1e-6
    front_losses = toy_losses(front, scale)
    # A dense grid of the plane never dominates a front point.
    grid = torch.cartesian_prod(
        torch.linspace(-10, 10, 201, dtype=torch.float64), torch.linspace(-10, 10, 201, dtype=torch.float64)
    )
    grid_losses = toy_losses(grid, scale)
    dominated = (grid_losses[:, None, :] < front_losses[None, :, :] - 1e-9).all(-1)
    assert not bool(dominated.any())


def test_stationarity_is_positive_off_the_front() -> None:
    assert pareto_stationarity(torch.tensor([0.0, -4.0])) > 0.1
    assert pareto_stationarity(torch.tensor([9.0, 9.0])) > 1e-3


def test_model_matches_closed_form_and_bounds() -> None:
    model = ToyTwoTask((1.0, -2.0), scale=0.1)
    torch.testing.assert_close(model(), toy_losses(torch.tensor([1.0, -2.0]), 0.1))
    shifted = ToyTwoTask((1.0, -2.0), scale=0.1, shift=True)
    torch.testing.assert_close(shifted(), model() - torch.tensor([0.1 * LOWER_BOUND, LOWER_BOUND]))
    points = torch.randn(4096, 2, dtype=torch.float64) * 12
    assert bool((toy_losses(points, 0.1) > torch.tensor([0.1 * LOWER_BOUND, LOWER_BOUND])).all())


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="2 dimensions"):
        toy_losses(torch.zeros(3))
    with pytest.raises(ValueError, match="start"):
        ToyTwoTask((1.0,))
    with pytest.raises(ValueError, match="scale"):
        ToyTwoTask(scale=0.0)
