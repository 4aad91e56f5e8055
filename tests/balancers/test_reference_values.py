"""TorchJD's reference values on J = [[-4, 1, 1], [6, 1, 1]] (its tests/unit/aggregation/test_values.py).

TorchJD reports *aggregated directions* (and, for weightings, the weights on the Gramian);
its PCGrad sums the projected gradients and its CAGrad does not rescale, so PCGrad is
compared ×m and CAGrad with ``rescale="none"``.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from bilevel_mtl import BalancedOptimizer, Balancer
from bilevel_mtl.balancers import IMTLG, MGDA, CAGrad, GradDrop, NashMTL, PCGrad
from bilevel_mtl.functional import (
    cagrad_weights,
    graddrop_direction,
    imtlg_weights,
    mgda_weights,
    nash_mtl_weights,
    pcgrad_weights,
)

J = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
ATOL = 1e-4


def close(actual: Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected), atol=ATOL, rtol=0)


def test_mgda_weights_and_direction() -> None:
    weights = mgda_weights(J)
    close(weights, [0.6, 0.4])
    close(weights @ J, [0.0, 1.0, 1.0])


def test_cagrad_without_rescaling_is_torchjds() -> None:
    weights = cagrad_weights(J, c=0.5, rescale="none")
    close(weights, [0.7041, 0.5000])
    close(weights @ J, [0.1835, 1.2041, 1.2041])
    rescaled = cagrad_weights(J, c=0.5)
    torch.testing.assert_close(rescaled * 1.25, weights, atol=1e-6, rtol=0)


def test_pcgrad_is_torchjds_sum_divided_by_m() -> None:
    weights = 2 * pcgrad_weights(J)
    close(weights, [2.2222, 1.5789])
    close(weights @ J, [0.5848, 3.8012, 3.8012])


def test_imtlg() -> None:
    weights = imtlg_weights(J)
    close(weights, [0.5923, 0.4077])
    close(weights @ J, [0.0767, 1.0, 1.0])


def test_nash_mtl_direction() -> None:
    close(nash_mtl_weights(J) @ J, [0.0542, 0.7061, 0.7061])


def test_graddrop_keeps_unanimous_coordinates_and_one_sign_of_the_others() -> None:
    seen = set()
    for seed in range(20):
        direction = 2 * graddrop_direction(J, torch.Generator().manual_seed(seed))
        close(direction[1:], [2.0, 2.0])
        seen.add(round(float(direction[0]), 4))
    # TorchJD's value [6, 2, 2] is the draw that keeps the positive sign.
    assert seen == {6.0, -4.0}


class Linear(nn.Module):
    """Losses f_i(θ) = J_i·θ, so the task Jacobian is exactly J."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(3))

    def forward(self) -> Tensor:
        return J @ self.theta


@pytest.mark.parametrize(
    ("balancer", "expected"),
    [
        (MGDA(2), [0.0, 1.0, 1.0]),
        (CAGrad(2, c=0.5, rescale="none"), [0.1835, 1.2041, 1.2041]),
        (PCGrad(2), [0.5848 / 2, 3.8012 / 2, 3.8012 / 2]),
        (IMTLG(2), [0.0767, 1.0, 1.0]),
        (NashMTL(2), [0.0542, 0.7061, 0.7061]),
    ],
    ids=["mgda", "cagrad", "pcgrad", "imtlg", "nashmtl"],
)
def test_balancers_set_the_reference_update_as_grad(balancer: Balancer, expected: list[float]) -> None:
    model = Linear()
    optimizer = BalancedOptimizer(model, torch.optim.SGD(model.parameters(), lr=0.0), balancer)
    optimizer.step(model)
    assert model.theta.grad is not None
    close(model.theta.grad, expected)


def test_graddrop_balancer_sets_one_of_the_two_draws() -> None:
    model = Linear()
    optimizer = BalancedOptimizer(model, torch.optim.SGD(model.parameters(), lr=0.0), GradDrop(2, seed=0))
    optimizer.step(model)
    assert model.theta.grad is not None
    assert round(float(model.theta.grad[0]), 4) in (3.0, -2.0)
    close(model.theta.grad[1:], [1.0, 1.0])
