"""Checkpoints: save mid-run, resume in a new process, continue bit-identically (float64, CPU).

For every case, a run of ``STEPS`` steps saves model, optimizer and balancer state (and
the global random state) before step ``SAVE_AT``; a fresh Python process loads it and
trains the remaining steps. Weights, losses, post-step losses, hypergradients, final
parameters and balancer state must equal the uninterrupted run's bit for bit. Control:
the same resume with a *fresh* balancer differs exactly for the stateful cases, so the
comparison does exercise the saved state.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from reliability_cases import CASE_NAMES, STATEFUL, identical, max_abs_difference, train

import bilevel_mtl as bm

STEPS = 6
SAVE_AT = 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    folder = tmp_path_factory.mktemp("checkpoints")
    full = {name: train(name, STEPS, save_at=SAVE_AT) for name in CASE_NAMES}
    torch.save({name: run.pop("checkpoint") for name, run in full.items()}, folder / "in.pt")
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(bm.__file__).parents[1]), str(here)])}
    subprocess.run(
        [
            sys.executable,
            str(here / "reliability_resume.py"),
            str(folder / "in.pt"),
            str(folder / "out.pt"),
            str(STEPS),
        ],
        check=True,
        env=env,
        timeout=300,
    )
    return full, torch.load(folder / "out.pt", weights_only=False)


def _tail(run: dict[str, Any]) -> dict[str, Any]:
    return {**run, "records": run["records"][SAVE_AT:]}


@pytest.mark.parametrize("name", CASE_NAMES)
def test_a_resumed_run_continues_bit_identically(
    runs: tuple[dict[str, Any], dict[str, Any]], name: str
) -> None:
    full, resumed = runs
    assert len(resumed[name]["resumed"]["records"]) == STEPS - SAVE_AT
    assert identical(resumed[name]["resumed"], _tail(full[name])), (
        f"differs by {max_abs_difference(resumed[name]['resumed'], _tail(full[name])):.3g}"
    )


@pytest.mark.parametrize("name", CASE_NAMES)
def test_the_balancer_state_matters_exactly_for_the_stateful_cases(
    runs: tuple[dict[str, Any], dict[str, Any]], name: str
) -> None:
    full, resumed = runs
    same = identical(resumed[name]["fresh_balancer"]["records"], _tail(full[name])["records"])
    assert same == (name not in STATEFUL)
