"""Small problems shared by the estimator tests."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from bilevel_mtl.context import StepContext
from bilevel_mtl.criteria import Criterion, FunctionCriterion
from bilevel_mtl.estimators import ForwardDifference, SinglePoint, UpperObjective, ZerothOrder

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


D, N = 6, 30
"""Parameters and samples per task of :class:`Quadratic`."""


class SplitLinear(nn.Module):
    """θ stored as two parameters of different shapes (exercises flattening in the solver)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
        self.head = nn.Parameter(torch.zeros(D - 4, dtype=torch.float64))

    def theta(self) -> Tensor:
        return torch.cat([self.body.flatten(), self.head])

    def load(self, theta: Tensor) -> None:
        with torch.no_grad():
            self.body.copy_(theta[:4].view(2, 2))
            self.head.copy_(theta[4:])


class Quadratic:
    """Quadratic tasks f_i(θ) = ½θᵀQ_iθ − q_iᵀθ + k_i (least squares: Q_i = A_iᵀA_i/n, q_i = A_iᵀb_i/n)."""

    def __init__(self, seed: int, indefinite: bool = False, num_tasks: int = 3) -> None:
        gen = torch.Generator().manual_seed(seed)
        a = torch.randn(num_tasks, N, D, generator=gen, dtype=torch.float64)
        b = torch.randn(num_tasks, N, generator=gen, dtype=torch.float64)
        self.q_mat = a.transpose(1, 2) @ a / N
        if indefinite:
            self.q_mat = (
                self.q_mat
                - 1.2 * torch.eye(D, dtype=torch.float64) * self.q_mat.diagonal(dim1=1, dim2=2).mean()
            )
        self.q_vec = torch.einsum("ind,in->id", a, b) / N
        self.offset = (b**2).sum(dim=1) / (2 * N) + 1.0  # keeps every loss > 0

    def losses(self, theta: Tensor) -> Tensor:
        """The ``[m]`` task losses at ``theta`` (``[D]``), or ``[..., m]`` at a batch ``[..., D]``."""
        quadratic = 0.5 * torch.einsum("...d,ide,...e->...i", theta, self.q_mat, theta)
        return quadratic - theta @ self.q_vec.T + self.offset

    def solution(self, lam: Tensor, ridge: float) -> Tensor:
        hessian = torch.einsum("i,ide->de", lam, self.q_mat) + ridge * torch.eye(D, dtype=torch.float64)
        return torch.linalg.solve(hessian, lam @ self.q_vec)

    def reference(self, criterion: Criterion, lam: Tensor, ridge: float) -> Tensor:
        lam = lam.clone().requires_grad_(True)
        before = self.losses(self.solution(lam, ridge)).detach()
        value = criterion(before, self.losses(self.solution(lam, ridge)))
        (grad,) = torch.autograd.grad(value, lam)
        return grad

    def objective(self, criterion: Criterion, theta: Tensor) -> UpperObjective:
        model = SplitLinear()
        model.load(theta)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        return lookahead_objective(
            criterion, step_context(model, optimizer, lambda: self.losses(model.theta()))
        )


def closed_form(
    kind: type[ZerothOrder], hessian: Tensor, grad: Tensor, value: float, radius: float, projector: Tensor
) -> tuple[Tensor, float]:
    r"""(mean, total variance) of one-direction zeroth-order estimates on a quadratic Φ (DESIGN §5).

    Φ(λ) = ½λᵀHλ + bᵀλ + c with ``grad`` a = ∇Φ(λ) and ``value`` Φ₀ = Φ(λ); directions uniform
    on the unit sphere of the n-dimensional subspace with ``projector`` P (sphere: P = I,
    n = m; tangent: P = I − 11ᵀ/m, n = m − 1). Every estimator is unbiased for Pa and, with
    q = (tr(PH)² + 2 tr((PHP)²)) / (n(n+2)) = E[(uᵀHu)²], has total variance

        single point:       (n/r)² [Φ₀² + r²|Pa|²/n + r² Φ₀ tr(PH)/n + r⁴ q/4] − |Pa|²
        forward difference: (n − 1)|Pa|² + n² r² q / 4
        two point:          (n − 1)|Pa|².
    """
    n = round(float(torch.trace(projector)))
    pa = projector @ grad
    pa2 = float(pa @ pa)
    ph = projector @ hessian
    php = ph @ projector
    tr_ph = float(torch.trace(ph))
    q = (tr_ph**2 + 2 * float(torch.trace(php @ php))) / (n * (n + 2))
    if kind is SinglePoint:
        second = value**2 + radius**2 * pa2 / n + radius**2 * value * tr_ph / n + radius**4 * q / 4
        return pa, (n / radius) ** 2 * second - pa2
    if kind is ForwardDifference:
        return pa, (n - 1) * pa2 + n**2 * radius**2 * q / 4
    return pa, (n - 1) * pa2
