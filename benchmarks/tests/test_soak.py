"""A short soak of every stateful balancer: deterministic counts only (no clock, no RSS).

Counts at step N (after warm-up) and 2N must be equal: live tensors, gc-tracked objects,
hooks, and every container length and tensor size held by the trainer, the balancer and
the last record. The runs happen in one spawned process, where no other thread (such as
pytest-xdist's) creates objects while they are counted.
"""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from torch import Tensor

from benchmarks import soak
from benchmarks.cli import main
from bilevel_mtl.balancers import PCGrad
from bilevel_mtl.balancers.base import Decision
from bilevel_mtl.registry import balancer_classes

N = 150
"""Steps of warm-up before the first count; the second is at step 2N."""
WINDOW = 75


def test_the_soak_covers_every_stateful_class() -> None:
    stateful = {name for name, cls in balancer_classes().items() if cls.stateful}
    assert {"marigold", "marigold_faithful"} <= stateful
    assert set(soak.stateful_configs()) == stateful | {"graddrop_representation"}


def test_nothing_grows_from_step_n_to_2n() -> None:
    names = list(soak.stateful_configs())
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        records = pool.starmap(soak.soak_one, [(name, 2 * N, WINDOW, N, False) for name in names])
    grown = {r["method"]: r["growth"] for r in records if r["growth"]}
    assert not grown, grown
    for record in records:
        assert record["counts_end"] == record["counts_warm"]
        assert record["footprint_paths"] > 50  # the walk reached the trainer's and balancer's insides


class Hoarder(PCGrad):
    """A PCGrad that keeps every step's losses and adds a hook to its module at every commit."""

    def __init__(self, num_tasks: int, **options: Any) -> None:
        super().__init__(num_tasks, **options)
        self.kept: list[Tensor] = []

    def commit(self, decision: Decision, losses_after: Tensor | None = None) -> None:
        self.kept.append(decision.losses.clone())
        self._shared[0].register_forward_hook(lambda *args: None)
        super().commit(decision, losses_after)


def test_the_counts_see_a_growing_history_and_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        soak, "stateful_configs", lambda: {"hoarder": lambda net: Hoarder(3, shared=net.trunk)}
    )
    record = soak.soak_one("hoarder", 2 * N, WINDOW, N, progress=False)
    grown = {entry.rsplit(" ", 3)[0] for entry in record["growth"]}  # "<key> <before> -> <after>"
    assert {"tensors", "hooks", "footprint trainer.balancer.kept"} <= grown
    assert record["counts_end"]["hooks"] == record["counts_warm"]["hooks"] + N


def test_the_script_writes_its_series_and_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["soak", "--methods", "dwa", "--steps", "200", "--window", "50", "--warmup", "100"]
    assert main([*argv, "--out", str(tmp_path), "--no-progress"]) == 0
    (record,) = json.loads((tmp_path / "soak.json").read_text())["records"]
    assert record["method"] == "dwa" and [w["step"] for w in record["windows"]] == [0, 50, 100, 150, 200]
    assert record["grows"] is False and record["counts_end"] == record["counts_warm"]
    assert all(w["median_step_ms"] > 0 for w in record["windows"][1:])
    assert (tmp_path / "soak.png").stat().st_size > 0
    with pytest.raises(SystemExit) as exit_:
        main([*argv[:-2], "--warmup", "75", "--out", str(tmp_path / "other")])
    assert exit_.value.code == 2
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith("error: argument --window: --steps and --warmup must be multiples of it")
    )
