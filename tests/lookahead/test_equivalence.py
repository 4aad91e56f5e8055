"""The look-ahead equals ``optimizer.step()`` for every supported optimizer and option (float64)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from bilevel_mtl.lookahead import LookAhead

OptimizerFactory = Callable[[Any], torch.optim.Optimizer]


def _options(**grid: list[Any]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


CASES: list[tuple[str, type[torch.optim.Optimizer], dict[str, Any]]] = []
for opts in _options(weight_decay=[0.0, 0.1], amsgrad=[False, True], maximize=[False, True]):
    CASES.append(("Adam", torch.optim.Adam, {"lr": 0.01, **opts}))
    CASES.append(("AdamW", torch.optim.AdamW, {"lr": 0.01, **opts}))
CASES.append(("Adam-betas", torch.optim.Adam, {"lr": 0.05, "betas": (0.5, 0.9), "eps": 1e-3}))
CASES.append(
    ("Adam-decoupled", torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True})
)
for opts in _options(momentum=[0.0, 0.9], weight_decay=[0.0, 0.05], maximize=[False, True]):
    CASES.append(("SGD", torch.optim.SGD, {"lr": 0.1, **opts}))
CASES.append(("SGD-nesterov", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}))
CASES.append(("SGD-dampening", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}))
for opts in _options(lr_decay=[0.0, 0.1], weight_decay=[0.0, 0.1], initial_accumulator_value=[0.0, 0.5]):
    CASES.append(("Adagrad", torch.optim.Adagrad, {"lr": 0.1, **opts}))
CASES.append(("Adagrad-max", torch.optim.Adagrad, {"lr": 0.1, "maximize": True}))
for opts in _options(centered=[False, True], momentum=[0.0, 0.5], weight_decay=[0.0, 0.1]):
    CASES.append(("RMSprop", torch.optim.RMSprop, {"lr": 0.01, **opts}))
CASES.append(("RMSprop-max", torch.optim.RMSprop, {"lr": 0.01, "alpha": 0.9, "maximize": True}))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def _loss(model: nn.Module, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 4, generator=g, dtype=torch.float64)
    y = torch.randn(8, 3, generator=g, dtype=torch.float64)
    return ((model(x) - y) ** 2).mean()


def _param_groups(model: nn.Module, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Two groups with different hyper-parameters, to test per-group handling."""
    first, second = list(model.parameters())[:2], list(model.parameters())[2:]
    return [{"params": first}, {"params": second, "lr": 0.5 * options["lr"]}]


@pytest.mark.parametrize(("name", "cls", "options"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("warm_steps", [0, 3])
def test_lookahead_matches_optimizer_step(
    name: str, cls: type[torch.optim.Optimizer], options: dict[str, Any], warm_steps: int
) -> None:
    model = _model()
    optimizer = cls(_param_groups(model, options), **options)
    for k in range(warm_steps):
        optimizer.zero_grad()
        _loss(model, k).backward()
        optimizer.step()
    optimizer.zero_grad()
    _loss(model, 99).backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    grads = [p.grad.clone() for p in params]
    before_state = {
        id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
        for p, s in optimizer.state.items()
    }
    before_params = [p.detach().clone() for p in params]

    predicted = LookAhead(optimizer).step(grads)

    # The look-ahead changed nothing.
    for p, p0 in zip(params, before_params, strict=True):
        assert torch.equal(p, p0)
    for p, s in optimizer.state.items():
        for key, value in s.items():
            if torch.is_tensor(value):
                assert torch.equal(value, before_state[id(p)][key]), key
    optimizer.step()
    for new, actual in zip(predicted.params, params, strict=True):
        torch.testing.assert_close(new, actual.detach(), rtol=1e-13, atol=1e-15)
    # The returned states equal the optimizer's new states.
    for state, p in zip(predicted.states, params, strict=True):
        for key, value in optimizer.state[p].items():
            if torch.is_tensor(value) and key != "step":
                torch.testing.assert_close(state[key], value, rtol=1e-13, atol=1e-15)


def test_lookahead_uses_the_current_learning_rate() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.1)
    for k in range(2):
        optimizer.zero_grad()
        _loss(model, k).backward()
        optimizer.step()
        scheduler.step()
    optimizer.zero_grad()
    _loss(model, 5).backward()
    predicted = LookAhead(optimizer).step([p.grad for p in model.parameters()])
    optimizer.step()
    for new, actual in zip(predicted.params, model.parameters(), strict=True):
        torch.testing.assert_close(new, actual.detach(), rtol=1e-13, atol=1e-15)


def test_two_chained_lookahead_steps_match_two_real_steps() -> None:
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    lookahead = LookAhead(optimizer)
    optimizer.zero_grad()
    _loss(model, 0).backward()
    first = lookahead.step([p.grad for p in model.parameters()])
    optimizer.step()
    optimizer.zero_grad()
    _loss(model, 1).backward()
    second = lookahead.step([p.grad for p in model.parameters()], first.params, first.states)
    optimizer.step()
    for new, actual in zip(second.params, model.parameters(), strict=True):
        torch.testing.assert_close(new, actual.detach(), rtol=1e-13, atol=1e-15)


def test_params_without_gradient_are_left_alone_like_torch() -> None:
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.5)
    optimizer.zero_grad()
    loss = model[2](torch.randn(5, 6, dtype=torch.float64)).pow(2).mean()  # first layer unused
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert grads[0] is None
    predicted = LookAhead(optimizer).step(grads)
    optimizer.step()
    for new, actual in zip(predicted.params, model.parameters(), strict=True):
        torch.testing.assert_close(new, actual.detach(), rtol=1e-13, atol=1e-15)


def test_lookahead_is_differentiable_in_the_gradient() -> None:
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for k in range(2):
        optimizer.zero_grad()
        _loss(model, k).backward()
        optimizer.step()
    lookahead = LookAhead(optimizer, eps_root=1e-16)
    grad0 = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)

    def last_bias(g: torch.Tensor) -> torch.Tensor:
        grads = [None, None, g, None]
        return lookahead.step(grads).params[2]

    assert torch.autograd.gradcheck(last_bias, (grad0,))


def test_unsupported_optimizer_names_supported_ones() -> None:
    optimizer = torch.optim.NAdam(_model().parameters())
    with pytest.raises(TypeError, match=r"NAdam.*Adagrad, Adam, AdamW, RMSprop, SGD"):
        LookAhead(optimizer)


def test_wrong_number_of_gradients_is_refused() -> None:
    optimizer = torch.optim.SGD(_model().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="expects 4 gradients"):
        LookAhead(optimizer).step([None])


def test_negative_eps_root_is_refused() -> None:
    with pytest.raises(ValueError, match="eps_root"):
        LookAhead(torch.optim.SGD(_model().parameters(), lr=0.1), eps_root=-1.0)
