"""Data parallelism: 2 processes (gloo, CPU) against each other and against one process.

One spawn runs every case of ``reliability_cases`` under DDP and FSDP2 (``fully_shard``)
for ``STEPS`` steps in float64, each rank on its half of every global batch. The ranks
must agree bit for bit (weights, losses, post-step losses, hypergradients, parameters,
balancer state); rank 0 must match one process trained on the whole global batch within
``TOLERANCE`` (the reduction order differs: measured ≤ 1.5e-12, the largest from
MARIGOLD's hypergradient, whose 1/r = 1e3 factor multiplies 1e-15 rounding differences).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from reliability_cases import CASE_NAMES, identical, max_abs_difference, train
from reliability_workers import UNSYNCED_CONTROLS, data_parallel_rank

STEPS = 3
WORLD = 2
TOLERANCE = 1e-9

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch built without the gloo backend",
)

try:
    from bilevel_mtl.registry import BALANCERS

    LOSS_ONLY = {name for name, info in BALANCERS.items() if info.cost == "loss-only O(1)"}
except ImportError:
    LOSS_ONLY = {"ls"}
FSDP_SUPPORTED = LOSS_ONLY | {"marigold"}
"""Balancers that need only losses (no per-task gradient, no virtual look-ahead): FSDP works."""


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("data_parallel")
    mp.spawn(data_parallel_rank, args=(WORLD, str(folder / "init"), str(folder), STEPS), nprocs=WORLD)
    return [torch.load(Path(folder) / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    return {name: train(name, STEPS) for name in CASE_NAMES}


def _both(ranks: list[dict[str, Any]], kind: str, name: str) -> tuple[Any, Any]:
    first, second = ranks[0][kind][name], ranks[1][kind][name]
    for result in (first, second):
        assert not isinstance(result, str), f"{kind} {name} failed on a rank: {result}"
    return first, second


@pytest.mark.parametrize("name", CASE_NAMES)
def test_ddp_ranks_agree_bitwise_and_match_one_process(
    ranks: list[dict[str, Any]], single: dict[str, Any], name: str
) -> None:
    first, second = _both(ranks, "ddp", name)
    assert identical(first, second), f"ranks differ by {max_abs_difference(first, second):.3g}"
    assert max_abs_difference(first, single[name]) <= TOLERANCE


@pytest.mark.parametrize("name", CASE_NAMES)
def test_fsdp_works_for_loss_only_balancers_and_refuses_the_others_by_name(
    ranks: list[dict[str, Any]], single: dict[str, Any], name: str
) -> None:
    if name not in FSDP_SUPPORTED:
        for rank in ranks:
            assert isinstance(rank["fsdp"][name], str)
            assert rank["fsdp"][name].startswith("NotImplementedError")
            assert "FSDP-sharded" in rank["fsdp"][name]
        return
    first, second = _both(ranks, "fsdp", name)
    assert identical(first, second)
    assert max_abs_difference(first, single[name]) <= TOLERANCE


@pytest.mark.parametrize("name", UNSYNCED_CONTROLS)
def test_without_agreement_the_ranks_diverge(ranks: list[dict[str, Any]], name: str) -> None:
    """Control: with ``process_group=None`` each rank balances its own shard: the test above has teeth."""
    first, second = _both(ranks, "unsynced", name)
    assert max_abs_difference(first["records"], second["records"]) > 1e-3


def test_extra_forwards_leave_ddp_batchnorm_buffers_as_plain_ddp(ranks: list[dict[str, Any]]) -> None:
    """Faithful MARIGOLD's look-ahead forwards neither broadcast nor update the buffers."""
    for rank in ranks:
        for step in rank["batchnorm"]["buffers"]:
            assert torch.equal(step["model"], step["twin"])
    # the shards differ, so the buffers differ between ranks (plain DDP syncs them at the next forward)
    assert not torch.equal(
        ranks[0]["batchnorm"]["buffers"][0]["model"], ranks[1]["batchnorm"]["buffers"][0]["model"]
    )
