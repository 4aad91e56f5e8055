"""The low-level path (weights → backward → step → observe) as the docs and examples use it."""

from __future__ import annotations

import torch
from torch import nn

import bilevel_mtl as bm


def _train(steps: int, observe_under_no_grad: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(64, 4, dtype=torch.float64)
    y = torch.stack([x[:, 0], x[:, 1] * x[:, 2]], dim=1)
    model = nn.Linear(4, 2).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    balancer = bm.Marigold(2, lr=1e-2, seed=3)
    for _ in range(steps):
        losses = ((model(x) - y) ** 2).mean(0)
        weights = balancer.weights(losses.detach())
        optimizer.zero_grad()
        (weights @ losses).backward()
        optimizer.step()
        with torch.no_grad():
            after = ((model(x) - y) ** 2).mean(0)
            if observe_under_no_grad:
                balancer.observe(after)
        if not observe_under_no_grad:
            balancer.observe(after)
    return {k: v for k, v in balancer.state_dict().items() if isinstance(v, torch.Tensor)}


def test_observe_under_no_grad_updates_the_upper_level_like_outside() -> None:
    inside = _train(5, observe_under_no_grad=True)
    outside = _train(5, observe_under_no_grad=False)
    assert inside.keys() == outside.keys()
    for key in inside:
        torch.testing.assert_close(inside[key], outside[key], rtol=0, atol=0)
    # the upper level did move: u and the adversary's logits left their initial zeros
    assert float(inside["parametrization.logits"].abs().max()) > 0
    assert float(inside["criterion.rho.logits"].abs().max()) > 0
