"""Small problems shared by the estimator tests."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from bilevel_mtl.context import StepContext
from bilevel_mtl.criteria import Criterion, FunctionCriterion
from bilevel_mtl.estimators import UpperObjective

Closure = Callable[[], Tensor]


def step_context(model: nn.Module, optimizer: torch.optim.Optimizer, closure: Closure) -> StepContext:
    """What BalancedOptimizer.step builds before calling the balancer."""
    return StepContext.evaluate(model, optimizer, closure)


def lookahead_objective(criterion: Criterion, context: StepContext) -> UpperObjective:
    """Φ(w) = R(f(θ), f(A(w, θ))), built from the public pieces exactly as documented for
    :meth:`UpperObjective.lookahead` (kept separate so the tests do not trust that helper)."""
    lookahead = context.lookahead()

    def losses_after(w: Tensor) -> Tensor:
        return context.losses_at(lookahead.step(context.gradients(w)).params)

    return UpperObjective(criterion, context.losses.detach(), losses_after, context)


def mlp_losses(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per-task mean squared errors, shape ``[m]``."""
    return ((model(x) - y) ** 2).mean(dim=0)


def mlp_data(num_tasks: int, seed: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """The fixed batch of :func:`mlp_problem`."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(24, 4, generator=gen, dtype=dtype)
    return x, torch.randn(24, num_tasks, generator=gen, dtype=dtype)


def mlp_problem(
    num_tasks: int,
    *,
    optimizer: str = "adam",
    lr: float = 1e-2,
    warm_steps: int = 3,
    dropout: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[nn.Module, torch.optim.Optimizer, Closure]:
    """A tiny shared-trunk regression model with ``num_tasks`` outputs, warmed up by LS steps."""
    x, y = mlp_data(num_tasks, seed, dtype)
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(4, 12), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(12, num_tasks))
    model = nn.Sequential(*layers).to(dtype)
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=lr)
    elif optimizer == "sgd_momentum":
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-3)
    elif optimizer == "rmsprop":
        opt = torch.optim.RMSprop(model.parameters(), lr=lr, centered=True, momentum=0.5)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    else:
        raise ValueError(optimizer)

    def closure() -> Tensor:
        return mlp_losses(model, x, y)

    for _ in range(warm_steps):
        opt.zero_grad()
        closure().sum().backward()
        opt.step()
    opt.zero_grad()  # BalancedOptimizer refuses gradients left from outside its step
    return model, opt, closure


def random_adversary(criterion: Criterion, seed: int) -> Criterion:
    """Give a learned adversary (if any) non-uniform logits, so tests are not at a symmetric point."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in criterion.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return criterion


class QuadraticObjective(UpperObjective):
    r"""A fake objective :math:`\Phi(w) = \tfrac12 w^\top H w + b^\top w + c`, vectorised over points."""

    def __init__(self, hessian: Tensor, linear: Tensor, constant: float) -> None:
        m = linear.numel()
        super().__init__(
            FunctionCriterion(lambda before, after: after.sum()), torch.zeros(m), lambda w: w, None
        )
        self.hessian, self.linear, self.constant = hessian, linear, constant

    def evaluate(self, points: Tensor) -> Tensor:
        quad = 0.5 * torch.einsum("pi,ij,pj->p", points, self.hessian, points)
        return quad + points @ self.linear + self.constant

    def __call__(self, weights: Tensor) -> Tensor:
        return self.evaluate(weights[None])[0]

    def gradient(self, weights: Tensor) -> Tensor:
        return self.hessian @ weights + self.linear
