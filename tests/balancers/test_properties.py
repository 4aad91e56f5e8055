"""One property suite over every balancer: outputs, simplex, permutations, scaling, checkpoints, bad input."""

from __future__ import annotations

import io

import pytest
import torch
from balancer_cases import (
    CASE_IDS,
    CASES,
    COMMON,
    DIRECTION,
    NONE,
    SCALINGS,
    UPDATE,
    WEIGHTS,
    Case,
    MultiTaskNet,
    balancer_state,
    differences,
    flat_grad,
    flat_params,
    make_closure,
    snapshot,
    task_data,
    trainer,
)

from bilevel_mtl import NonFiniteLossError
from bilevel_mtl.balancers import GradientBalancer, LossBalancer
from bilevel_mtl.context import StepContext

M = 3


def run(case: Case, steps: int, **closure_options: object) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Train ``steps`` steps; return the weights and the flat gradients of every step."""
    model, opt = trainer(case, M)
    closure = make_closure(model, task_data(M), case.batches, **closure_options)  # type: ignore[arg-type]
    weights, grads = [], []
    for _ in range(steps):
        record = opt.step(closure)
        weights.append(record.weights)
        grads.append(flat_grad(model))
    return weights, grads


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_outputs_are_finite_and_shaped(case: Case) -> None:
    model, opt = trainer(case, M)
    closure = make_closure(model, task_data(M), case.batches)
    start = closure().detach()
    for _ in range(4):
        record = opt.step(closure)
        assert record.weights.shape == (M,)
        assert bool(torch.isfinite(record.weights).all())
        assert record.losses.shape == (M,)
        grads = flat_grad(model)
        assert grads.numel() == sum(p.numel() for p in model.parameters())
        assert bool(torch.isfinite(grads).all())
        assert float(grads.norm()) > 0
        if case.simplex:
            assert float(record.weights.min()) >= 0
            torch.testing.assert_close(record.weights.sum(), torch.tensor(1.0), atol=1e-5, rtol=0)
    assert bool(torch.isfinite(closure()).all())
    assert not torch.equal(closure().detach(), start)


EQUIVARIANT = [c for c in CASES if c.deterministic and not c.order_dependent]


@pytest.mark.parametrize("case", EQUIVARIANT, ids=lambda c: c.name)
def test_permutation_equivariance(case: Case) -> None:
    perm = [2, 0, 1]
    weights, grads = run(case, 3)
    weights_p, grads_p = run(case, 3, perm=perm)
    for w, wp, g, gp in zip(weights, weights_p, grads, grads_p, strict=True):
        torch.testing.assert_close(wp, w[perm], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(gp, g, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("case", [c for c in CASES if not c.deterministic], ids=lambda c: c.name)
def test_randomized_balancers_are_reproducible_from_their_seed(case: Case) -> None:
    weights, grads = run(case, 3)
    weights_again, grads_again = run(case, 3)
    for w, wa, g, ga in zip(weights, weights_again, grads, grads_again, strict=True):
        assert torch.equal(w, wa)
        assert torch.equal(g, ga)


@pytest.mark.parametrize("case", [c for c in CASES if c.order_dependent], ids=lambda c: c.name)
def test_order_dependent_balancers_depend_on_the_order(case: Case) -> None:
    """STL picks a task by index; BiLB4MTL's penalty couples consecutive tasks."""
    weights, _ = run(case, 2)
    weights_p, _ = run(case, 2, perm=[2, 0, 1])
    assert not torch.allclose(weights_p[-1], weights[-1][[2, 0, 1]], atol=1e-6)


@pytest.mark.parametrize("spread", ["moderate", "extreme"])
@pytest.mark.parametrize("case", [c for c in CASES if c.scaling != NONE], ids=lambda c: c.name)
def test_scale_behaviour(case: Case, spread: str) -> None:
    """Per-task scales for UPDATE/DIRECTION/WEIGHTS, a common scale for COMMON (see each
    docstring); moderate (0.2..7) and extreme (1e-3..1e3) factors."""
    per_task = [3.0, 0.2, 7.0] if spread == "moderate" else [1e3, 1e-3, 1.0]
    common = 5.0 if spread == "moderate" else 1e3
    scales = torch.tensor(per_task) if case.scaling != COMMON else torch.full((M,), common)
    weights, grads = run(case, 1)
    weights_s, grads_s = run(case, 1, scales=scales)
    if case.scaling == UPDATE:
        torch.testing.assert_close(grads_s[0], grads[0], atol=1e-5, rtol=1e-4)
    elif case.scaling == DIRECTION:
        unit, unit_s = grads[0] / grads[0].norm(), grads_s[0] / grads_s[0].norm()
        torch.testing.assert_close(unit_s, unit, atol=1e-5, rtol=1e-4)
    else:
        assert case.scaling in (WEIGHTS, COMMON)
        torch.testing.assert_close(weights_s[0], weights[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_state_dict_round_trip_continues_identically(case: Case) -> None:
    model, opt = trainer(case, M)
    closure = make_closure(model, task_data(M), case.batches)
    for _ in range(3):
        opt.step(closure)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    snapshot = flat_params(model)
    reference = []
    for _ in range(3):
        record = opt.step(closure)
        reference.append((record.weights, flat_params(model)))

    resumed_model, resumed = trainer(case, M, seed=7)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed_model.load_state_dict(state["model"])
    resumed.load_state_dict(state["opt"])
    assert torch.equal(flat_params(resumed_model), snapshot)
    resumed_closure = make_closure(resumed_model, task_data(M), case.batches)
    for weights, params in reference:
        record = resumed.step(resumed_closure)
        assert torch.equal(record.weights, weights)
        assert torch.equal(flat_params(resumed_model), params)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_bad_losses_are_rejected_before_anything_changes(case: Case) -> None:
    model, opt = trainer(case, M)
    closure = make_closure(model, task_data(M), case.batches)
    opt.step(closure)
    params = flat_params(model)
    state = balancer_state(opt.balancer)

    def bad(values: torch.Tensor):  # type: ignore[no-untyped-def]
        return lambda: values

    good = closure()
    wrong_count = good[..., :2]
    nan = good.detach().clone()
    nan[..., 1] = float("nan")
    nan = nan + 0 * good
    wrong_rank = good.reshape(-1) if case.batches > 1 else good.reshape(1, M)
    for values, error in (
        (wrong_count, ValueError),
        (nan, NonFiniteLossError),
        (wrong_rank, ValueError),
    ):
        with pytest.raises(error) as info:
            opt.step(bad(values))
        if case.batches > 1 and values is wrong_rank:
            assert f"[{case.batches}, {M}]" in str(info.value)
    assert torch.equal(flat_params(model), params)
    assert differences(state, balancer_state(opt.balancer)) == []


GRADIENT_CASES = [c for c in CASES if issubclass(c.cls, GradientBalancer)]


class LossesOnly:
    """A lower level that has the losses but not the step's autograd graph (not a StepContext)."""

    def __init__(self, losses: torch.Tensor) -> None:
        self.losses = losses
        self.params: list[torch.Tensor] = []


@pytest.mark.parametrize("case", GRADIENT_CASES, ids=lambda c: c.name)
def test_gradient_balancers_explain_the_missing_graph(case: Case) -> None:
    model, _ = trainer(case, M)
    balancer = case.build(M, model)
    assert isinstance(balancer, GradientBalancer)
    assert not hasattr(balancer, "weights")  # the weights come from the per-task gradients of a step
    losses = torch.ones(case.batches, M) if case.batches > 1 else torch.ones(M)
    with pytest.raises(TypeError, match="BalancedOptimizer"):
        balancer.decide(LossesOnly(losses))  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_decide_is_pure_and_a_step_changes_only_stateful_balancers(case: Case) -> None:
    """``decide`` changes nothing (balancer state, generators, model, optimizer, ``.grad``) and
    gives the same decision twice; the state changes at commit, and only for ``stateful`` classes."""
    model, opt = trainer(case, M)
    closure = make_closure(model, task_data(M), case.batches)
    balancer = opt.balancer
    initial = balancer_state(balancer)
    opt.step(closure)  # warm: the optimizer's moments, MoCo's tracked gradients, DWA's history, ...
    before = balancer_state(balancer)
    params, optimizer_state = flat_params(model), snapshot(opt.optimizer.state_dict())
    context = StepContext.evaluate(model, opt.optimizer, closure)
    first = balancer.decide(context)
    second = balancer.decide(context)
    assert differences(before, balancer_state(balancer)) == []
    assert differences(optimizer_state, snapshot(opt.optimizer.state_dict())) == []
    assert torch.equal(flat_params(model), params)
    assert all(p.grad is None for p in model.parameters()), "decide() wrote .grad"
    assert differences(snapshot(first.weights), snapshot(second.weights)) == []
    assert differences(snapshot(first.gradients), snapshot(second.gradients)) == []
    if first.report is not None:
        assert second.report is not None
        assert torch.equal(first.report.hypergradient, second.report.hypergradient)
        assert torch.equal(first.report.criterion_value, second.report.criterion_value)

    opt.step(closure)  # decides, steps, then commits
    final = balancer_state(balancer)
    # (SDMGrad's w may reach a vertex in the first step and stay there: compare with the initial state.)
    changed = differences(before, final) + differences(initial, final)
    if case.stateful:
        assert changed, f"{case.cls.__name__} declares stateful = True but two steps left its state unchanged"
    else:
        assert changed == [], f"{case.cls.__name__} declares stateful = False but a step changed {changed}"


LOSS_CASES = [c for c in CASES if issubclass(c.cls, LossBalancer)]


@pytest.mark.parametrize("case", LOSS_CASES, ids=lambda c: c.name)
def test_loss_balancer_weights_are_pure_and_update_applies_the_state(case: Case) -> None:
    """In a loop you own: ``weights`` twice gives the same weights (random ones included) and
    changes nothing; ``update`` applies the state, needing ``losses_after`` where declared."""
    model = MultiTaskNet(M)
    balancer = case.build(M, model)
    assert isinstance(balancer, LossBalancer)
    losses = make_closure(model, task_data(M))().detach()
    after = 0.9 * losses
    before = balancer_state(balancer)
    first, second = balancer.weights(losses), balancer.weights(losses)
    assert torch.equal(first, second)
    assert differences(before, balancer_state(balancer)) == []
    assert balancer.needs_losses_after == ("losses_after" in case.cls.needs)
    if balancer.needs_losses_after:
        with pytest.raises(ValueError, match="losses_after"):
            balancer.update(losses)
        assert differences(before, balancer_state(balancer)) == []
        balancer.update(losses, after)
    else:
        balancer.update(losses)
    changed = differences(before, balancer_state(balancer))
    assert bool(changed) == case.stateful, changed


def test_declarations_are_consistent() -> None:
    """What the suite reads from each class's declaration is well-formed."""
    for case in CASES:
        cls = case.cls
        assert case.scaling in SCALINGS, cls
        assert cls.num_batches >= 1, cls
        assert not cls.randomized or cls.stateful, f"{cls.__name__}: a generator is state"
        assert cls.needs <= {"gradients", "lookahead", "losses_after"}, cls
        assert issubclass(cls, GradientBalancer) == ("gradients" in cls.needs), cls


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_task_counts(case: Case) -> None:
    """No tasks is an error; a single task works wherever the method is defined for it."""
    model, _ = trainer(case, M)
    with pytest.raises(ValueError, match=r"num_tasks|task|at least 2"):
        case.build(0, model)
    if case.name.startswith("marigold") or case.name == "stl":  # >= 2 tasks; STL(task=1) needs 2
        with pytest.raises(ValueError):
            case.build(1, model)
        return
    single, opt = trainer(case, 1)
    record = opt.step(make_closure(single, task_data(1), case.batches))
    assert record.weights.shape == (1,) and bool(torch.isfinite(flat_grad(single)).all())
