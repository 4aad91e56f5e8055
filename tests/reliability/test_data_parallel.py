"""Data parallelism: 2 processes (gloo, CPU) against each other and against one process.

One spawn runs every case of ``reliability_cases`` under DDP and FSDP2 (``fully_shard``)
for ``STEPS`` steps in float64, each rank on its half of every global batch. The ranks
must agree bit for bit (weights, losses, post-step losses, hypergradients, parameters,
balancer state); rank 0 must match one process trained on the whole global batch within
``TOLERANCE`` (the reduction order differs: measured ≤ 1.5e-12, the largest from
MARIGOLD's hypergradient, whose 1/r = 1e3 factor multiplies 1e-15 rounding differences).
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from reliability_cases import CASE_NAMES, CASES, identical, max_abs_difference, train
from reliability_workers import UNSYNCED_CONTROLS, data_parallel_rank

STEPS = 3
WORLD = 2
TOLERANCE = 1e-9

pytestmark = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch built without the gloo backend",
)

FSDP_SUPPORTED = {case.name for case in CASES if not {"gradients", "lookahead"} & case.needs}
"""Balancers whose declared ``needs`` hold no per-task gradient and no virtual look-ahead
(they need only losses, those after the step included): FSDP works."""


SPAWN_TIMEOUT_S = 600
"""A bound on the ranks' run, so that a hang fails the test instead of stalling CI."""

TUTORIAL = Path(__file__).parents[2] / "docs" / "tutorials" / "ddp.md"


def _tutorial_script(folder: Path) -> Path:
    """The script of the DDP tutorial, as a file."""
    match = re.search(r"```python\n(# train_ddp\.py.*?)```", TUTORIAL.read_text(), re.DOTALL)
    assert match, "the tutorial's script block was not found"
    path = folder / "train_ddp.py"
    path.write_text(match.group(1))
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _run(folder: Path) -> list[dict[str, Any]]:
    script = _tutorial_script(folder)
    args = (WORLD, str(folder / "init"), str(folder), STEPS, str(script), _free_port())
    context = mp.spawn(data_parallel_rank, args=args, nprocs=WORLD, join=False)
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {WORLD} ranks did not finish within {SPAWN_TIMEOUT_S} s (a hang)")
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _agreement(ranks: list[dict[str, Any]], kind: str, name: str, single: dict[str, Any]) -> str | None:
    """``None`` if both ranks ran, agree bitwise and match one process; else what went wrong."""
    first, second = ranks[0][kind][name], ranks[1][kind][name]
    for result in (first, second):
        if isinstance(result, str):
            return f"{kind} {name}: failed on a rank: {result}"
    if not identical(first, second):
        return f"{kind} {name}: ranks differ by {max_abs_difference(first, second):.3g}"
    if max_abs_difference(first, single) > TOLERANCE:
        return f"{kind} {name}: differs from one process by {max_abs_difference(first, single):.3g}"
    return None


def test_two_ranks_agree_with_each_other_and_with_one_process(tmp_path: Path) -> None:
    """One test (one spawn, also under pytest-xdist) for every case; failures are listed together.

    * DDP, every case: ranks bitwise equal, rank 0 within ``TOLERANCE`` of one process;
    * FSDP2: the same for the balancers that need only losses; the others refuse by name;
    * control: with ``process_group=None`` (no agreement) MARIGOLD's ranks diverge, so the
      comparison has teeth;
    * faithful MARIGOLD's extra forwards leave DDP's BatchNorm buffers as plain DDP does
      (no broadcast, no update);
    * representation rules refuse uneven shards on every rank (no rank left waiting);
    * the script of ``docs/tutorials/ddp.md`` runs as ``torchrun`` starts it.
    """
    ranks = _run(tmp_path)
    single = {name: train(name, STEPS) for name in CASE_NAMES}
    problems = [_agreement(ranks, "ddp", name, single[name]) for name in CASE_NAMES]
    for name in CASE_NAMES:
        if name in FSDP_SUPPORTED:
            problems.append(_agreement(ranks, "fsdp", name, single[name]))
        elif not all(
            isinstance(r["fsdp"][name], str)
            and r["fsdp"][name].startswith("NotImplementedError")
            and "FSDP-sharded" in r["fsdp"][name]
            for r in ranks
        ):
            problems.append(
                f"fsdp {name}: expected a NotImplementedError naming FSDP, got {ranks[0]['fsdp'][name]}"
            )
    for name in UNSYNCED_CONTROLS:
        first, second = ranks[0]["unsynced"][name], ranks[1]["unsynced"][name]
        if isinstance(first, str) or max_abs_difference(first["records"], second["records"]) < 1e-3:
            problems.append(f"control {name}: unsynchronized ranks did not diverge")
    for rank, result in enumerate(ranks):
        for step, buffers in enumerate(result["batchnorm"]["buffers"]):
            if not torch.equal(buffers["model"], buffers["twin"]):
                problems.append(f"batchnorm: rank {rank} step {step}: buffers differ from plain DDP")
    if torch.equal(
        ranks[0]["batchnorm"]["buffers"][0]["model"], ranks[1]["batchnorm"]["buffers"][0]["model"]
    ):
        problems.append("batchnorm: the shards should give different local buffers")
    for rank, result in enumerate(ranks):
        if "same batch size on every rank" not in result["uneven"]["mgda_ub"]:
            problems.append(f"uneven shards, rank {rank}: {result['uneven']['mgda_ub']}")
    printed = (tmp_path / "tutorial0.txt").read_text()
    if "epoch 1: losses" not in printed:
        problems.append(f"tutorial: rank 0 printed {printed!r}")
    assert not [p for p in problems if p], "\n".join(p for p in problems if p)
