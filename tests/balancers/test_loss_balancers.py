"""Update rules of the loss-only balancers: STL, SI, RLW, DWA, UW, FAMO, BiLB4MTL."""

from __future__ import annotations

import pytest
import torch
from balancer_cases import MultiTaskNet, flat_grad, make_closure, task_data
from torch import Tensor

from bilevel_mtl import BalancedOptimizer
from bilevel_mtl.balancers import DWA, FAMO, RLW, SI, STL, UW, BiLB4MTL
from bilevel_mtl.functional import discrepancy_objective, famo_logit_gradient, famo_weights


def sgd(lr: float):  # type: ignore[no-untyped-def]
    return lambda params: torch.optim.SGD(params, lr=lr)


def test_stl_trains_only_its_task() -> None:
    losses = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(STL(3, task=2).weights(losses), torch.tensor([0.0, 0.0, 1.0]))
    model = MultiTaskNet(3)
    closure = make_closure(model, task_data(3))
    BalancedOptimizer(model, torch.optim.SGD(model.parameters(), lr=0.0), STL(3, task=1)).step(closure)
    for i, head in enumerate(model.heads):
        assert (head.weight.grad is not None and float(head.weight.grad.abs().max()) > 0) == (i == 1)
    for bad in (3, -1, 1.0, True):
        with pytest.raises(ValueError, match="task"):
            STL(3, task=bad)  # type: ignore[arg-type]


def test_si_is_the_gradient_of_the_mean_log_loss() -> None:
    losses = torch.tensor([0.5, 2.0, 4.0], requires_grad=True)
    (expected,) = torch.autograd.grad(losses.log().mean(), losses)
    torch.testing.assert_close(SI(3).weights(losses.detach()), expected)
    with pytest.raises(ValueError, match=r"tasks \[1\]"):
        SI(3).weights(torch.tensor([1.0, 0.0, 2.0]))


def weights_and_update(balancer, losses: Tensor, losses_after: Tensor | None = None) -> Tensor:  # type: ignore[no-untyped-def]
    """One step of a loop you own: the weights, then the balancer's update after the model's step."""
    weights = balancer.weights(losses)
    torch.testing.assert_close(balancer.weights(losses), weights, rtol=0, atol=0)  # pure
    balancer.update(losses, losses_after)
    return weights


def test_rlw_draws_softmax_gaussians_with_mean_one_over_m() -> None:
    balancer = RLW(4, seed=0)
    draws = torch.stack([weights_and_update(balancer, torch.ones(4)) for _ in range(3000)])
    assert float(draws.min()) > 0
    torch.testing.assert_close(draws.sum(1), torch.ones(3000))
    torch.testing.assert_close(draws.mean(0), torch.full((4,), 0.25), atol=0.01, rtol=0)
    generator = torch.Generator().manual_seed(0)
    first = torch.softmax(torch.randn(4, generator=generator, dtype=torch.float64), 0).float()
    torch.testing.assert_close(RLW(4, seed=0).weights(torch.ones(4)), first)
    # A fresh draw each step: the weights change at update(), not at weights().
    assert not torch.equal(draws[0], draws[1])


def test_dwa_uses_ratios_of_period_means() -> None:
    balancer = DWA(2, temperature=2.0, window=2)
    stream = [[4.0, 1.0], [2.0, 1.0], [1.0, 1.0], [1.0, 3.0], [5.0, 5.0]]
    weights = [weights_and_update(balancer, torch.tensor(v)) for v in stream]
    for w in weights[:4]:  # two complete periods are needed
        torch.testing.assert_close(w, torch.tensor([0.5, 0.5]))
    ratios = torch.tensor([(1.0 + 1.0) / (4.0 + 2.0), (1.0 + 3.0) / (1.0 + 1.0)])
    torch.testing.assert_close(weights[4], torch.softmax(ratios / 2.0, 0))
    with pytest.raises(ValueError, match="window"):
        DWA(2, window=0)
    with pytest.raises(ValueError, match="> 0"):
        DWA(2).weights(torch.tensor([1.0, -1.0]))


def test_uw_log_variance_step_and_fixed_point() -> None:
    balancer = UW(2, optimizer=sgd(0.1))
    losses = torch.tensor([0.5, 4.0])
    torch.testing.assert_close(balancer.weights(losses), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(balancer.log_variances.detach(), torch.zeros(2))  # weights() does not step s
    torch.testing.assert_close(weights_and_update(balancer, losses), torch.tensor([0.5, 0.5]))
    # s <- s - lr * (1/2 - e^{-s} f / 2) from s = 0.
    torch.testing.assert_close(balancer.log_variances.detach(), -0.1 * (0.5 - 0.5 * losses))
    for _ in range(400):
        weights = weights_and_update(balancer, losses)
    torch.testing.assert_close(weights, 1 / (2 * losses), rtol=1e-3, atol=0)


def test_famo_weights_are_the_surrogates_gradient() -> None:
    logits = torch.tensor([0.3, -0.2, 0.5])
    losses = torch.tensor([0.7, 2.0, 0.1], requires_grad=True)
    z = torch.softmax(logits, 0)
    c = 1 / (z / losses).sum().detach()
    (expected,) = torch.autograd.grad(c * (z * losses.log()).sum(), losses)
    torch.testing.assert_close(famo_weights(logits, losses.detach()), expected)
    torch.testing.assert_close(expected.sum(), torch.tensor(1.0))


def test_famo_logit_step_is_the_closed_form() -> None:
    before, after = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 1.9, 3.3])
    balancer = FAMO(3, optimizer=sgd(1.0))
    with torch.no_grad():
        balancer.logits.copy_(torch.tensor([0.1, 0.0, -0.4]))
    z = torch.softmax(balancer.logits.detach(), 0)
    delta = (before + 1e-8).log() - (after + 1e-8).log()
    weights_and_update(balancer, before, after)
    torch.testing.assert_close(
        balancer.logits.detach(), torch.tensor([0.1, 0.0, -0.4]) - z * (delta - z @ delta)
    )
    # It is the softmax Jacobian applied to the log decrease.
    logits = torch.tensor([0.1, 0.0, -0.4], requires_grad=True)
    (vjp,) = torch.autograd.grad(torch.softmax(logits, 0), logits, grad_outputs=delta)
    torch.testing.assert_close(famo_logit_gradient(logits.detach(), before + 1e-8, after + 1e-8), vjp)


def test_famo_default_first_step_is_adams_sign_step() -> None:
    before, after = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 1.9, 3.3])
    balancer = FAMO(3)
    weights_and_update(balancer, before, after)
    logits = balancer.logits.detach()
    gradient = famo_logit_gradient(torch.zeros(3), before + 1e-8, after + 1e-8)
    torch.testing.assert_close(logits, -0.025 * torch.sign(gradient), atol=1e-6, rtol=0)
    assert float(logits[0]) < 0 < float(logits[2])  # the task that improved most loses weight


def test_famo_in_the_one_call_step() -> None:
    model = MultiTaskNet(3)
    closure = make_closure(model, task_data(3))
    balancer = FAMO(3)
    optimizer = BalancedOptimizer(model, torch.optim.SGD(model.parameters(), lr=0.01), balancer)
    losses = closure().detach()
    expected_grad = flat_grad_of(model, closure, famo_weights(torch.zeros(3), losses + 1e-8))
    record = optimizer.step(closure)
    assert record.losses_after is not None
    torch.testing.assert_close(record.losses_after, closure().detach())
    torch.testing.assert_close(flat_grad(model), expected_grad)
    assert float(balancer.logits.detach().abs().max()) > 0
    # The logit step needs the losses after the model's step: update() without them is refused.
    famo = FAMO(3)
    with pytest.raises(ValueError, match="losses_after"):
        famo.update(torch.ones(3))
    assert float(famo.logits.detach().abs().max()) == 0
    with pytest.raises(ValueError, match="min_losses"):
        FAMO(2, min_losses=[1.0, 0.0]).weights(torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="min_losses"):
        FAMO(2, min_losses=[1.0])


def flat_grad_of(model: MultiTaskNet, closure, weights: Tensor) -> Tensor:  # type: ignore[no-untyped-def]
    model.zero_grad()
    (weights @ closure()).backward()
    grad = flat_grad(model)
    model.zero_grad()
    return grad


def ldc_total_loss(losses: Tensor, initial: Tensor, router: Tensor, penalty: float) -> Tensor:
    """The LDC-MTL scripts' objective, written out (NYUv2 form, normalised by the first losses)."""
    weights = torch.softmax(router, 0)
    normalised = losses / initial
    weighted_loss = weights @ normalised / weights.sum()
    wl = weights * normalised
    return weighted_loss + penalty * torch.abs(wl[:-1] - wl[1:]).sum()


def test_bilb4mtl_is_one_joint_step_of_the_ldc_objective() -> None:
    balancer = BiLB4MTL(3, penalty=0.1, optimizer=sgd(0.5))
    initial = torch.tensor([2.0, 0.5, 1.0])
    # The first step's losses normalise, already in its weights; its update fixes them.
    at_initial = initial.clone().requires_grad_(True)
    (first_weights,) = torch.autograd.grad(
        ldc_total_loss(at_initial, initial, torch.zeros(3), 0.1), at_initial
    )
    torch.testing.assert_close(weights_and_update(balancer, initial), first_weights)
    torch.testing.assert_close(balancer.initial_losses, initial)
    router = balancer.router.detach().clone().requires_grad_(True)
    losses = torch.tensor([1.0, 0.4, 0.9], requires_grad=True)
    total = ldc_total_loss(losses, initial, router, 0.1)
    loss_grad, router_grad = torch.autograd.grad(total, [losses, router])
    weights = balancer.weights(losses.detach())
    torch.testing.assert_close(weights, loss_grad)
    torch.testing.assert_close(balancer.router.detach(), router.detach())  # weights() does not step it
    balancer.update(losses.detach())
    torch.testing.assert_close(balancer.router.detach(), router.detach() - 0.5 * router_grad)
    value = discrepancy_objective(losses.detach() / initial, torch.softmax(router.detach(), 0), 0.1)
    torch.testing.assert_close(value, total.detach())


def bilb4mtl(router: Tensor, lr: float, **options: object) -> BiLB4MTL:
    """BiLB4MTL in float64 with an SGD router optimizer, started at ``router``."""
    balancer = BiLB4MTL(3, penalty=0.1, optimizer=sgd(lr), **options).double()  # type: ignore[arg-type]
    with torch.no_grad():
        balancer.router.copy_(router)
    return balancer


def bilb4mtl_step_by_hand(
    router: Tensor,
    losses: Tensor,
    scale: Tensor,
    *,
    activation: str,
    clamp: tuple[float, float] | None,
    penalty: float,
    lr: float,
) -> tuple[Tensor, Tensor]:
    r"""(w = ∂L/∂f, the router after one SGD step on ∂L/∂W), differentiated by hand.

    L = S/T + λ Σ_k |σ_k f̃_k − σ_{k+1} f̃_{k+1}| with f̃ = f/scale, S = Σσ_k f̃_k, T = Σσ_k. With
    d_k = sign(w_k − w_{k+1}) − sign(w_{k−1} − w_k) (the missing ends 0) for w = σ ⊙ f̃:
    ∂L/∂f̃_k = σ_k/T + λσ_k d_k, ∂L/∂σ_k = (f̃_k − S/T)/T + λ f̃_k d_k; a clamp passes the
    gradient where low ≤ σ_k ≤ high; softmax' = diag σ − σσᵀ, sigmoid' = σ(1 − σ).
    """
    raw = torch.softmax(router, 0) if activation == "softmax" else torch.sigmoid(router)
    sigma, passes = raw, torch.ones_like(raw)
    if clamp is not None:
        sigma = raw.clamp(*clamp)
        passes = ((raw >= clamp[0]) & (raw <= clamp[1])).to(raw)
    normalised = losses / scale
    weighted = sigma * normalised
    total, weight_sum = weighted.sum(), sigma.sum()
    signs = torch.sign(weighted[:-1] - weighted[1:])
    d = torch.zeros_like(raw)
    d[:-1] += signs
    d[1:] -= signs
    by_normalised = sigma / weight_sum + penalty * sigma * d
    by_sigma = ((normalised - total / weight_sum) / weight_sum + penalty * normalised * d) * passes
    jacobian_t = (
        torch.diag(raw) - torch.outer(raw, raw) if activation == "softmax" else torch.diag(raw * (1 - raw))
    )
    by_router = jacobian_t @ by_sigma
    return by_normalised / scale, router - lr * by_router


BILB4MTL_LOSSES = torch.tensor([[2.0, 0.5, 1.0], [1.0, 0.4, 0.9], [1.3, 0.2, 0.7]], dtype=torch.float64)
ROUTERS = {  # non-uniform, so that a clamp to (0.2, 0.8) holds some weights and passes others
    "softmax": torch.tensor([1.2, 0.3, -0.4], dtype=torch.float64),  # σ ≈ (0.62, 0.25, 0.13)
    "sigmoid": torch.tensor([1.6, -0.2, -1.8], dtype=torch.float64),  # σ ≈ (0.83, 0.45, 0.14)
}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"activation": "sigmoid"},
        {"clamp": (0.2, 0.8)},
        {"activation": "sigmoid", "clamp": (0.2, 0.8)},
        {"normalize": False},
        {"activation": "sigmoid", "normalize": False},
    ],
    ids=["softmax", "sigmoid", "softmax-clamp", "sigmoid-clamp", "no-normalisation", "sigmoid-raw"],
)
def test_bilb4mtl_variants_match_the_hand_computed_steps(options: dict[str, object]) -> None:
    """Three steps: the model weights and the router update of each variant, by hand (float64)."""
    activation = str(options.get("activation", "softmax"))
    clamp = options.get("clamp")
    lr = 0.5
    router = ROUTERS[activation]
    balancer = bilb4mtl(router, lr, **options)
    scale = BILB4MTL_LOSSES[0] if options.get("normalize", True) else torch.ones(3, dtype=torch.float64)
    clamped = []
    for losses in BILB4MTL_LOSSES:
        raw = torch.softmax(router, 0) if activation == "softmax" else torch.sigmoid(router)
        clamped.append(clamp is not None and bool(((raw < 0.2) | (raw > 0.8)).any()))
        weights, router = bilb4mtl_step_by_hand(
            router,
            losses,
            scale,
            activation=activation,
            clamp=clamp,
            penalty=0.1,
            lr=lr,  # type: ignore[arg-type]
        )
        # weights() with the router before the step (pure), update() takes the router's step.
        torch.testing.assert_close(weights_and_update(balancer, losses), weights, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(balancer.router.detach(), router, rtol=1e-12, atol=1e-15)
    assert clamped == [clamp is not None] * 3  # the clamp is active (somewhere) at every step
    assert float((router - ROUTERS[activation]).abs().max()) > 1e-3  # the router moved


def test_bilb4mtl_bad_arguments() -> None:
    with pytest.raises(ValueError, match="> 0"):
        BiLB4MTL(2).weights(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="activation"):
        BiLB4MTL(2, activation="relu")
    with pytest.raises(ValueError, match="clamp"):
        BiLB4MTL(2, clamp=(0.8, 0.2))
    with pytest.raises(ValueError, match="penalty"):
        BiLB4MTL(2, penalty=-1.0)
