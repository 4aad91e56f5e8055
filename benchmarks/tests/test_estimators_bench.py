"""The estimator benchmark's code on tiny sizes (the figures themselves are not asserted)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from benchmarks.cli import main
from benchmarks.estimator_problems import PROBLEMS
from benchmarks.profiling import peak_extra_bytes

FIELDS = {
    "estimator",
    "problem",
    "m",
    "d",
    "rel_bias",
    "rel_std",
    "cosine_to_exact",
    "time_ratio_ls",
    "peak_mem_bytes",
    "device",
}


def test_quick_run_writes_records_and_plots(tmp_path: Path) -> None:
    args = [
        "estimators",
        "--quick",
        "--out",
        str(tmp_path),
        "--problems",
        "quadratic",
        "--tasks",
        "2",
    ]
    args += ["--estimators", "two-point-tangent", "single-point", "exact", "--repeats", "1"]
    assert main(args) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    records = {r["estimator"]: r for r in data["records"]}
    assert set(records) == {"two-point-tangent", "single-point", "exact"}
    for record in records.values():
        assert set(record) >= FIELDS
        assert record["device"].startswith("cpu") and record["peak_mem_bytes"] > 0
    assert data["meta"]["commit"] and data["meta"]["seeds"] == [0]
    # Exact is its own reference; with m = 2 the tangent space is a line, so the
    # two-point estimate along ±(1, −1)/√2 is the exact directional derivative.
    assert records["exact"]["rel_bias"] == 0.0
    assert records["two-point-tangent"]["rel_std"] < 1e-6 < records["single-point"]["rel_std"]
    assert records["two-point-tangent"]["cosine_to_exact"] == pytest.approx(1.0)
    with (tmp_path / "results.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 3
    assert "| two-point-tangent | one-step |" in (tmp_path / "summary.md").read_text()
    for name in ("bias_variance_vs_m.png", "cost_vs_m.png", "cosine_vs_cost.png"):
        assert (tmp_path / name).stat().st_size > 1000


def test_peak_extra_bytes_counts_allocations_inside_the_window_only() -> None:
    kept: list[torch.Tensor] = []

    def burst() -> None:
        first = torch.empty(1_000_000, dtype=torch.uint8)
        second = torch.empty(500_000, dtype=torch.uint8)
        del first, second
        kept.append(torch.empty(200_000, dtype=torch.uint8))

    def prepare_outside() -> object:
        kept.append(torch.empty(3_000_000, dtype=torch.uint8))  # set-up: not counted
        return lambda: torch.empty(100_000, dtype=torch.uint8)

    assert peak_extra_bytes([lambda: burst, prepare_outside], torch.device("cpu")) == [1_500_000, 100_000]


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_problems_give_m_positive_losses_with_a_warm_optimizer(name: str) -> None:
    problem = PROBLEMS[name](3, 0)
    losses = problem.closure()
    assert losses.shape == (3,) and bool((losses > 0).all()) and losses.requires_grad
    assert problem.num_params > 0
    if isinstance(problem.optimizer, torch.optim.Adam):
        assert all(problem.optimizer.state[p] for p in problem.model.parameters())
