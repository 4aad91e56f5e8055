"""MARIGOLD with unusual but valid input (its invalid input is in the table of
``tests/reliability/bad_inputs.py``, tested by ``tests/reliability/test_bad_inputs.py``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bilevel_mtl as bm

M = 2


def _setup(
    optimizer_cls: type[torch.optim.Optimizer] = torch.optim.Adam, balancer: type[bm.Balancer] = bm.Marigold
):
    torch.manual_seed(0)
    model = nn.Linear(3, M)
    optimizer = optimizer_cls(model.parameters(), lr=0.1)
    return model, optimizer, bm.BalancedOptimizer(model, optimizer, balancer(M))


X = torch.randn(4, 3)


@pytest.mark.parametrize("balancer", [bm.Marigold, bm.Marigold.paper], ids=["default", "paper"])
def test_marigold_works_with_any_optimizer(balancer: type[bm.Balancer]) -> None:
    model, _, trainer = _setup(torch.optim.NAdam, balancer)
    records = [trainer.step(lambda: model(X).mean(0).abs() + 1.0) for _ in range(3)]
    learnt = [r.hypergradient for r in records if r.hypergradient is not None]
    assert learnt and all(float(g.abs().max()) > 0 for g in learnt)


def test_adversary_is_updated_even_when_update_runs_under_no_grad() -> None:
    balancer = bm.Marigold.paper(2, lr=0.1)
    before = balancer.criterion.rho.logits.detach().clone()
    losses = torch.tensor([1.0, 2.0])
    balancer.weights(losses)
    assert torch.equal(balancer.criterion.rho.logits.detach(), before)  # weights() changes nothing
    with torch.no_grad():
        report = balancer.update(losses, torch.tensor([0.5, 2.5]))
    assert report is not None and report.criterion_value.dim() == 0
    after = balancer.criterion.rho.logits.detach()
    # ascent on ρ: the task whose loss rose (task 1) gains adversary weight
    assert float(after[1] - before[1]) > 0 > float(after[0] - before[0])
