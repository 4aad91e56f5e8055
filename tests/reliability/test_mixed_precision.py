"""Mixed precision: bf16 autocast on CPU, ``torch.amp.GradScaler`` (CPU; CUDA when present)."""

from __future__ import annotations

import copy

import pytest
import torch
from reliability_cases import CASE_NAMES, identical, max_abs_difference, train
from torch import nn

import bilevel_mtl as bm
from bilevel_mtl.balancers import LS
from bilevel_mtl.estimators import Estimate, SinglePoint, UpperObjective

STEPS = 4


@pytest.mark.parametrize("name", CASE_NAMES)
def test_a_scaler_without_overflow_changes_nothing(name: str) -> None:
    """Scaling by a power of two is exact: with unscaled look-ahead and real gradients, the
    trajectory (weights, losses, hypergradients, parameters, balancer state) is bit-identical."""
    plain = train(name, STEPS, dtype=torch.float32)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaled = train(name, STEPS, dtype=torch.float32, trainer_kwargs={"scaler": scaler})
    assert identical(plain, scaled), f"differs by {max_abs_difference(plain, scaled):.3g}"
    assert scaler.get_scale() == 2.0**10


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bf16_autocast_trains_with_float32_weights(name: str) -> None:
    result = train(name, STEPS, dtype=torch.float32, autocast=torch.bfloat16)
    reference = train(name, STEPS, dtype=torch.float32)
    for record in result["records"]:
        assert record["skipped"] is None
        assert record["weights"].dtype == torch.float32
        assert bool(torch.isfinite(record["weights"]).all())
    assert all(bool(torch.isfinite(p).all()) for p in result["params"])
    first, exact = result["records"][0]["losses"], reference["records"][0]["losses"]
    torch.testing.assert_close(first, exact, rtol=2e-2, atol=0)  # bf16 forward, same parameters


MARIGOLDS = {"perturbed": bm.Marigold.paper, "faithful": bm.MarigoldFaithful}
"""MARIGOLD's two algorithms: the real step perturbed (Algorithm 1), a virtual look-ahead (Algorithm 2)."""


@pytest.mark.parametrize("mode", MARIGOLDS)
def test_bf16_losses_keep_marigolds_perturbation(mode: str) -> None:
    """λ + r·u with r = 1e-3 must not be rounded to bf16 (spacing 2⁻⁹ near 1/2): the balancer
    computes in float32. At the first step λ is uniform, so ‖λ + r·u − 1/m‖ = r exactly."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    x, y = torch.randn(8, 4), torch.randn(8, 2)

    def closure() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return (model(x) - y.bfloat16()).pow(2).mean(0)

    assert closure().dtype == torch.bfloat16
    estimator = _RecordingSinglePoint()
    balancer = MARIGOLDS[mode](2, estimator=estimator)
    trainer = bm.BalancedOptimizer(model, torch.optim.Adam(model.parameters()), balancer)
    record = trainer.step(closure)
    perturbed = record.weights if mode == "perturbed" else estimator.seen[0]
    assert perturbed.dtype == torch.float32
    assert abs(float((perturbed - 0.5).norm()) - 1e-3) < 1e-6


class _RecordingSinglePoint(SinglePoint):
    """The paper's estimator, recording the perturbed weights its look-aheads evaluate."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def estimate(
        self, objective: UpperObjective, weights: torch.Tensor, generator: torch.Generator
    ) -> Estimate:
        inner = objective.losses_after

        def losses_after(w: torch.Tensor) -> torch.Tensor:
            self.seen.append(w.detach().clone())
            return inner(w)

        objective.losses_after = losses_after
        return super().estimate(objective, weights, generator)


def _overflow_setup(mode: str) -> tuple[nn.Module, torch.optim.Optimizer, bm.BalancedOptimizer]:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # gradients ~1e3: overflow
    balancer: bm.Balancer = LS(2) if mode == "ls" else MARIGOLDS[mode](2, lr=0.05)
    return model, optimizer, bm.BalancedOptimizer(model, optimizer, balancer, scaler=scaler)


X = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("mode", ["faithful", "perturbed", "ls"])
def test_overflow_skips_the_step_and_lowers_the_scale_like_the_real_step(mode: str) -> None:
    """Overflow in the look-ahead (faithful) or the real backward: nothing moves, the scale halves."""
    model, optimizer, trainer = _overflow_setup(mode)
    assert trainer.scaler is not None
    closure = lambda: 1e3 * (model(X) - 1.0).pow(2).mean(0)  # noqa: E731
    skipped = 0
    for _ in range(30):
        before = copy.deepcopy((model.state_dict(), optimizer.state_dict(), trainer.balancer.state_dict()))
        scale = trainer.scaler.get_scale()
        record = trainer.step(closure)
        if record.skipped is None:
            break
        skipped += 1
        assert "gradient overflow" in record.skipped
        assert trainer.scaler.get_scale() == scale / 2
        assert identical(model.state_dict(), before[0])
        assert str(optimizer.state_dict()) == str(before[1])
        after = trainer.balancer.state_dict()
        for key, value in before[2].items():  # upper variables and their Adam state: untouched
            if isinstance(value, torch.Tensor):
                assert torch.equal(after[key], value), key
    assert skipped >= 3, "the set-up should overflow for a few steps"
    assert record.skipped is None and bool(torch.isfinite(record.weights).all())
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["faithful", "perturbed", "ls"])
def test_cuda_autocast_with_a_scaler(dtype: torch.dtype, mode: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2)).cuda()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    balancer: bm.Balancer = LS(2) if mode == "ls" else MARIGOLDS[mode](2)
    trainer = bm.BalancedOptimizer(model, optimizer, balancer, scaler=torch.amp.GradScaler("cuda"))
    x = torch.randn(32, 4, device="cuda")

    def closure() -> torch.Tensor:
        with torch.autocast("cuda", dtype=dtype):
            return (model(x) - 1.0).pow(2).mean(0)

    records = [trainer.step(closure) for _ in range(20)]
    done = [r for r in records if r.skipped is None]
    assert done, "every step overflowed"
    assert all(r.weights.dtype == torch.float32 and bool(torch.isfinite(r.weights).all()) for r in done)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
