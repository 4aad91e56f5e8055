"""The low-level path (weights → backward → step → update) as the docs and examples use it."""

from __future__ import annotations

import torch
from torch import nn

import bilevel_mtl as bm


def _train(steps: int, update_under_no_grad: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(64, 4, dtype=torch.float64)
    y = torch.stack([x[:, 0], x[:, 1] * x[:, 2]], dim=1)
    model = nn.Linear(4, 2).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    balancer = bm.Marigold.paper(2, lr=1e-2, seed=3)
    for _ in range(steps):
        losses = ((model(x) - y) ** 2).mean(0)
        weights = balancer.weights(losses.detach())
        optimizer.zero_grad()
        (weights @ losses).backward()
        optimizer.step()
        with torch.no_grad():
            after = ((model(x) - y) ** 2).mean(0)
            if update_under_no_grad:
                balancer.update(losses.detach(), after)
        if not update_under_no_grad:
            balancer.update(losses.detach(), after)
    return {k: v for k, v in balancer.state_dict().items() if isinstance(v, torch.Tensor)}


def test_update_under_no_grad_updates_the_upper_level_like_outside() -> None:
    inside = _train(5, update_under_no_grad=True)
    outside = _train(5, update_under_no_grad=False)
    assert inside.keys() == outside.keys()
    for key in inside:
        torch.testing.assert_close(inside[key], outside[key], rtol=0, atol=0)
    # the upper level did move: u and the adversary's logits left their initial zeros
    assert float(inside["parametrization.logits"].abs().max()) > 0
    assert float(inside["criterion.rho.logits"].abs().max()) > 0


def test_weights_are_pure_and_the_low_level_path_equals_the_one_call_step() -> None:
    """``weights()`` twice gives the same (perturbed) weights and changes no state; the loop
    weights → backward → step → update trains exactly as ``BalancedOptimizer.step``."""
    torch.manual_seed(0)
    x = torch.randn(64, 4, dtype=torch.float64)
    y = torch.stack([x[:, 0], x[:, 1] * x[:, 2]], dim=1)

    def setup() -> tuple[nn.Module, torch.optim.Optimizer, bm.Marigold]:
        torch.manual_seed(0)
        model = nn.Linear(4, 2).double()
        return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), bm.Marigold.paper(2, lr=1e-2)

    model, optimizer, balancer = setup()
    twin, twin_optimizer, twin_balancer = setup()
    trainer = bm.BalancedOptimizer(twin, twin_optimizer, twin_balancer)
    for _ in range(4):
        losses = ((model(x) - y) ** 2).mean(0)
        state = {k: v.clone() for k, v in balancer.state_dict().items() if isinstance(v, torch.Tensor)}
        weights = balancer.weights(losses)
        assert torch.equal(balancer.weights(losses), weights)
        assert all(torch.equal(balancer.state_dict()[k], v) for k, v in state.items())
        optimizer.zero_grad()
        (weights @ losses).backward()
        optimizer.step()
        with torch.no_grad():
            after = ((model(x) - y) ** 2).mean(0)
        report = balancer.update(losses, after)
        record = trainer.step(lambda: ((twin(x) - y) ** 2).mean(0))
        assert report is not None and record.hypergradient is not None
        assert torch.equal(record.weights, weights)
        assert torch.equal(record.hypergradient, report.hypergradient)
        assert record.criterion_value is not None and record.criterion_value.dim() == 0
        assert torch.equal(record.criterion_value, report.criterion_value)
    for mine, reference in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(mine, reference)
