"""Robustness fuzzing of every case: per-task loss scales from 1e-12 to 1e12, full-rank,
rank-one, partly zero and all-zero task gradients, float64 and float32.

Through the one-call step (Adam), three steps per example. Required: no exception at all
(the documented ones concern non-finite input, and the input here is finite), no skipped
step, finite weights, on the simplex where the method claims it, finite parameters.
"""

from __future__ import annotations

import math
import os

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reliability_cases import CASE_NAMES, case, num_batches
from torch import Tensor, nn

import bilevel_mtl as bm

EXAMPLES = int(os.environ.get("BILEVEL_MTL_FUZZ_EXAMPLES", "12"))
"""Examples per case (12 in CI; the figures in docs/reliability.md used 150)."""

STRUCTURES = ["full", "rank_one", "one_zero", "all_zero"]
"""Task gradients: independent heads; one shared head (parallel gradients); one task's
loss constant in θ (a zero gradient); every loss constant in θ (all gradients zero)."""


class FuzzNet(nn.Module):
    def __init__(self, num_tasks: int, structure: str) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.heads = nn.Linear(6, 1 if structure == "rank_one" else num_tasks)
        self.num_tasks = num_tasks
        self.structure = structure

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.heads(self.trunk(x))
        return out.expand(-1, self.num_tasks) if self.structure == "rank_one" else out


def _losses(net: FuzzNet, x: Tensor, y: Tensor, scales: Tensor) -> Tensor:
    out = net(x)
    mse = ((out - y) ** 2).mean(0) + 0.1
    constant = 1.0 + 0.0 * out.sum()  # value 1, gradient exactly zero
    if net.structure == "one_zero":
        mse = torch.cat([constant.reshape(1), mse[1:]])
    elif net.structure == "all_zero":
        mse = constant.expand(net.num_tasks) * torch.linspace(1.0, 2.0, net.num_tasks, dtype=out.dtype)
    return scales * mse


def _check(name: str, num_tasks: int, log_scales: list[float], structure: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    net = FuzzNet(num_tasks, structure).to(dtype)
    balancer = case(name).build(net, num_tasks)
    trainer = bm.BalancedOptimizer(net, torch.optim.Adam(net.parameters(), lr=1e-2), balancer)
    scales = torch.tensor([10.0**e for e in log_scales], dtype=dtype)
    g = torch.Generator().manual_seed(1)
    batches = num_batches(balancer)
    for _ in range(3):
        x = torch.randn(batches, 8, 4, generator=g, dtype=dtype)
        y = torch.randn(batches, 8, num_tasks, generator=g, dtype=dtype)

        def closure(x: Tensor = x, y: Tensor = y) -> Tensor:
            rows = [_losses(net, x[b], y[b], scales) for b in range(batches)]
            return rows[0] if batches == 1 else torch.stack(rows)

        record = trainer.step(closure)
        assert record.skipped is None, record.skipped
        weights = record.weights
        assert weights.shape == (num_tasks,) and bool(torch.isfinite(weights).all()), weights
        if case(name).simplex:
            tolerance = 1e-6  # some balancers keep their weights in float32 state (MoCo, SDMGrad)
            assert math.isclose(float(weights.double().sum()), 1.0, abs_tol=tolerance), weights
            assert float(weights.min()) >= -tolerance, weights
    assert all(bool(torch.isfinite(p).all()) for p in net.parameters())


def _fuzz(name: str) -> None:
    @settings(max_examples=EXAMPLES)
    @given(
        num_tasks=st.integers(2, 4),
        data=st.data(),
        structure=st.sampled_from(STRUCTURES),
        dtype=st.sampled_from([torch.float64, torch.float32]),
    )
    def run(num_tasks: int, data: st.DataObject, structure: str, dtype: torch.dtype) -> None:
        log_scales = data.draw(st.lists(st.floats(-12, 12), min_size=num_tasks, max_size=num_tasks))
        _check(name, num_tasks, log_scales, structure, dtype)

    run()


def _make(name: str):  # type: ignore[no-untyped-def]
    def test() -> None:
        _fuzz(name)

    test.__name__ = f"test_fuzz_{name}"
    return test


for _name in CASE_NAMES:
    globals()[f"test_fuzz_{_name}"] = _make(_name)
