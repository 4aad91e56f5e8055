"""How gradient balancers gather G and write .grad: shared parameters, representations, batches."""

from __future__ import annotations

import gc

import pytest
import torch
from balancer_cases import MultiTaskNet, flat_grad, make_closure, task_data
from torch import Tensor, nn

from bilevel_mtl import BalancedOptimizer
from bilevel_mtl.balancers import (
    MGDA,
    CAGrad,
    Combination,
    GradDrop,
    GradientBalancer,
    MoCo,
    MoDo,
    SDMGrad,
)
from bilevel_mtl.functional import mgda_weights

M = 3


def jacobian_of(model: MultiTaskNet, losses: Tensor, params: list[nn.Parameter]) -> Tensor:
    rows = [
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(f, params, retain_graph=True)]) for f in losses
    ]
    return torch.stack(rows)


def grads_of(model: MultiTaskNet, weights: Tensor, closure) -> Tensor:  # type: ignore[no-untyped-def]
    model.zero_grad()
    (weights @ closure()).backward()
    grad = flat_grad(model)
    model.zero_grad()
    return grad


def step(model: MultiTaskNet, balancer, closure):  # type: ignore[no-untyped-def]
    return BalancedOptimizer(model, torch.optim.SGD(model.parameters(), lr=0.0), balancer).step(closure)


def test_default_rule_sees_every_parameter_and_sets_w_dot_grad() -> None:
    model = MultiTaskNet(M)
    closure = make_closure(model, task_data(M))
    weights = mgda_weights(jacobian_of(model, closure(), list(model.parameters())))
    record = step(model, MGDA(M), closure)
    torch.testing.assert_close(record.weights, weights)
    torch.testing.assert_close(flat_grad(model), grads_of(model, weights, closure))


def test_shared_module_restricts_the_rule_and_heads_get_the_weighted_gradient() -> None:
    model = MultiTaskNet(M)
    closure = make_closure(model, task_data(M))
    encoder = list(model.encoder.parameters())
    weights = mgda_weights(jacobian_of(model, closure(), encoder))
    record = step(model, MGDA(M, shared=model.encoder), closure)
    torch.testing.assert_close(record.weights, weights)
    # Every parameter, encoder and heads, gets exactly the gradient of w'f.
    torch.testing.assert_close(flat_grad(model), grads_of(model, weights, closure))


def test_mgda_ub_runs_on_the_representation_and_backpropagates_w_dot_f() -> None:
    model = MultiTaskNet(M)
    closure = make_closure(model, task_data(M))
    x, _ = task_data(M)
    z = model.encoder(x)
    y_hat = torch.cat([head(z) for head in model.heads], dim=1)
    losses = ((y_hat - task_data(M)[1]) ** 2).mean(0) + 0.05
    rows = [torch.autograd.grad(f, z, retain_graph=True)[0].reshape(-1) for f in losses]
    weights = mgda_weights(torch.stack(rows))
    balancer = MGDA(M, shared=model.encoder, representation=True)
    record = step(model, balancer, closure)
    torch.testing.assert_close(record.weights, weights)
    torch.testing.assert_close(flat_grad(model), grads_of(model, weights, closure))
    # An evaluation between steps (grad enabled, not feeding the losses) is ignored.
    model.encoder(x).sum()
    record = step(model, balancer, closure)
    torch.testing.assert_close(record.weights, weights)


def test_graddrop_on_the_representation_masks_only_the_encoder() -> None:
    model = MultiTaskNet(M)
    closure = make_closure(model, task_data(M))
    record = step(model, GradDrop(M, seed=0, shared=model.encoder, representation=True), closure)
    torch.testing.assert_close(record.weights, torch.full((M,), 1 / M))
    dropped = flat_grad(model)
    expected = grads_of(model, record.weights, closure)
    encoder = sum(p.numel() for p in model.encoder.parameters())
    torch.testing.assert_close(dropped[encoder:], expected[encoder:])
    assert not torch.allclose(dropped[:encoder], expected[:encoder])


def test_representation_hooks_leave_with_their_balancer() -> None:
    model = MultiTaskNet(M)
    for _ in range(5):  # e.g. a sweep that builds a balancer per run on one model
        balancer = GradDrop(M, seed=0, shared=model.encoder, representation=True)
        assert len(model.encoder._forward_hooks) == 1
    balancer.remove_hook()
    assert len(model.encoder._forward_hooks) == 0
    MGDA(M, shared=model.encoder, representation=True)
    gc.collect()
    assert len(model.encoder._forward_hooks) == 0


def test_representation_errors_name_the_problem() -> None:
    model = MultiTaskNet(M)
    closure = make_closure(model, task_data(M))
    with pytest.raises(ValueError, match="shared="):
        MGDA(M, representation=True)

    class ParametersOnly(GradientBalancer):
        supports_representation = False

        def combine(self, jacobian: Tensor, losses: Tensor, representation: Tensor | None) -> Combination:
            return Combination(torch.full((M,), 1 / M))

    with pytest.raises(ValueError, match="parameter gradients only"):
        ParametersOnly(M, shared=model.encoder, representation=True)
    assert not MoCo.supports_representation and not MoDo.supports_representation
    with pytest.raises(TypeError, match=r"nn\.Module"):
        MGDA(M, shared=model.encoder[0].weight)  # type: ignore[arg-type]
    other = nn.Linear(4, 6)
    with pytest.raises(RuntimeError, match="saw no output"):
        step(model, MGDA(M, shared=other, representation=True), closure)

    def twice() -> Tensor:
        x, y = task_data(M)
        z = model.encoder(x) + model.encoder(-x)
        return ((torch.cat([h(z) for h in model.heads], 1) - y) ** 2).mean(0)

    with pytest.raises(RuntimeError, match="2 times"):
        step(model, MGDA(M, shared=model.encoder, representation=True), twice)

    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 6)

        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            return self.layer(x), self.layer(x)

    pair = Pair()
    with pytest.raises(TypeError, match="one tensor"):
        step(model, MGDA(M, shared=pair, representation=True), lambda: pair(task_data(M)[0])[0].mean(0)[:M])


def test_shared_module_outside_the_optimizer_is_an_error() -> None:
    model = MultiTaskNet(M)
    with pytest.raises(ValueError, match="shared module"):
        step(model, CAGrad(M, shared=nn.Linear(2, 2)), make_closure(model, task_data(M)))


@pytest.mark.parametrize("cls", [MoDo, SDMGrad])
def test_multi_batch_rules_use_their_rows_as_documented(cls: type) -> None:
    model = MultiTaskNet(M)
    closure = make_closure(model, task_data(M), batches=3)
    balancer = cls(M, shared=model.encoder)
    record = step(model, balancer, closure)
    balanced = flat_grad(model)
    losses = closure()
    update_row = 2 if cls is MoDo else 0
    g = jacobian_of(model, losses[update_row], list(model.encoder.parameters()))
    size = g.shape[1]
    torch.testing.assert_close(balanced[:size], record.weights @ g)
    # Heads: the gradient of w' (mean of the three rows).
    heads = jacobian_of(model, losses.mean(0), list(model.heads.parameters()))
    torch.testing.assert_close(balanced[size:], record.weights @ heads)


def test_multi_batch_rules_explain_what_the_closure_must_return() -> None:
    model = MultiTaskNet(M)
    with pytest.raises(ValueError, match=r"\[3, 3\] tensor of task losses, one row per batch"):
        step(model, SDMGrad(M), make_closure(model, task_data(M)))
    with pytest.raises(ValueError, match="got 2 rows"):
        step(model, MoDo(M), lambda: [make_closure(model, task_data(M))()] * 2)
    record = step(model, MoDo(M), lambda: [make_closure(model, task_data(M))()] * 3)
    assert record.losses.shape == (M,)


def test_deciding_writes_no_gradient_and_heads_get_the_weighted_gradient() -> None:
    """A gradient balancer decides without touching ``.grad``; with ``shared=encoder`` the heads'
    decided gradient is exactly that of ``w @ losses`` (float64, to round-off)."""
    from bilevel_mtl.context import StepContext

    model = MultiTaskNet(M).double()
    x, y = task_data(M)
    closure = make_closure(model, (x.double(), y.double()))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    context = StepContext.evaluate(model, optimizer, closure)
    decision = MGDA(M, shared=model.encoder).decide(context)
    assert all(p.grad is None for p in model.parameters())
    assert decision.gradients is not None
    reference = torch.autograd.grad(
        decision.weights.to(context.graph) @ context.graph, list(model.parameters())
    )
    for param, got, want in zip(model.parameters(), decision.gradients, reference, strict=True):
        assert got is not None
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14, msg=f"shape {tuple(param.shape)}")


TRAINER_WRITES = {
    "mgda": lambda model: MGDA(M),
    "mgda-shared": lambda model: MGDA(M, shared=model.encoder),
    "graddrop": lambda model: GradDrop(M, seed=0),  # an explicit direction, not w @ G
    "mgda-representation": lambda model: MGDA(M, shared=model.encoder, representation=True),
    "graddrop-representation": lambda model: GradDrop(M, seed=0, shared=model.encoder, representation=True),
}


@pytest.mark.parametrize("name", list(TRAINER_WRITES))
def test_the_trainer_writes_exactly_the_decided_gradients(name: str) -> None:
    """What BalancedOptimizer leaves in ``.grad`` after one step (SGD, lr=0: nothing moves) is the
    decision's gradients (``Decision.gradients``, or ∇(w·f) when it is None), decided on the same
    batch from the same state, exactly (float64): a trainer that writes a gradient twice (e.g.
    backpropagates w·f on top of an explicit direction), drops one or accumulates onto an
    earlier one fails this."""
    from bilevel_mtl.context import StepContext

    model = MultiTaskNet(M).double()
    x, y = task_data(M)
    closure = make_closure(model, (x.double(), y.double()))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    balancer = TRAINER_WRITES[name](model)
    params = list(model.parameters())

    context = StepContext.evaluate(model, optimizer, closure)
    decision = balancer.decide(context)
    assert all(p.grad is None for p in params)  # deciding writes nothing
    weighted = torch.autograd.grad(
        decision.weights.to(context.graph) @ context.graph, params, retain_graph=True, allow_unused=True
    )
    expected = weighted if decision.gradients is None else decision.gradients
    assert len(expected) == len(params)
    if name.startswith("graddrop"):  # the explicit path: not the gradient of w·f
        assert decision.gradients is not None
        assert any(
            g is not None and w is not None and not torch.allclose(g, w)
            for g, w in zip(decision.gradients, weighted, strict=True)
        )

    before = [p.detach().clone() for p in params]
    record = BalancedOptimizer(model, optimizer, balancer).step(closure)
    torch.testing.assert_close(record.weights, decision.weights, rtol=0, atol=0)
    for param, want, start in zip(params, expected, before, strict=True):
        assert torch.equal(param.detach(), start)  # lr = 0: the same state for both
        if want is None:
            assert param.grad is None
        else:
            assert param.grad is not None
            torch.testing.assert_close(
                param.grad, want, rtol=1e-12, atol=1e-12, msg=f"shape {tuple(param.shape)}"
            )


def test_a_rules_new_state_is_applied_at_commit_only() -> None:
    """MoCo's tracked gradients, λ and step count come back in ``Decision.pending`` and change the
    balancer when the step commits (a decision that is never committed leaves no trace)."""
    from bilevel_mtl.context import StepContext

    model = MultiTaskNet(M)
    closure = make_closure(model, task_data(M))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    balancer = MoCo(M)
    decision = balancer.decide(StepContext.evaluate(model, optimizer, closure))
    assert set(decision.pending) == {"tracked", "lam", "step_count"}
    assert balancer.tracked is None and int(balancer.step_count) == 0
    torch.testing.assert_close(balancer.lam, torch.full((M,), 1 / M))
    balancer.decide(StepContext.evaluate(model, optimizer, closure))  # discarded: never committed
    balancer.commit(decision)
    assert balancer.tracked is not None
    torch.testing.assert_close(balancer.tracked, decision.pending["tracked"], rtol=0, atol=0)
    torch.testing.assert_close(balancer.lam, decision.pending["lam"], rtol=0, atol=0)
    assert int(balancer.step_count) == 1
    assert decision.gradients is not None and decision.weights.shape == (M,)
