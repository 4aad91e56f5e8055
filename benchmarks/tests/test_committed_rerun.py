"""A committed result reproduces exactly from today's code: ``benchmarks/results/rerun``.

The record is a short run made for this purpose (the tiny Scales preset, 60 epochs, LS and
the default MARIGOLD, seed 0; its command is in the file). This test makes it again with
the recorded command and requires every metric, Δm% and step count to match to the last
bit. When a change moves these numbers on purpose, re-record the run (the command in
``provenance``, from a clean tree) and say so in the change.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from benchmarks.cli import main

RECORD = Path(__file__).resolve().parents[1] / "results" / "rerun" / "quality.json"
MEASURED = ("method", "seed", "steps", "delta_m")


def test_the_committed_short_run_reproduces_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    committed = json.loads(RECORD.read_text())
    command = shlex.split(committed["provenance"]["command"])
    assert command[:3] == ["python", "-m", "benchmarks"], command
    arguments = command[3:]
    out = arguments.index("--out")
    arguments[out + 1] = str(tmp_path / "rerun")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    assert main(arguments) == 0
    again = json.loads((tmp_path / "rerun" / "quality.json").read_text())
    metrics = list(committed["suite"]["metrics"])
    assert len(committed["records"]) == len(again["records"]) == 3  # STL, LS, MARIGOLD
    for old, new in zip(committed["records"], again["records"], strict=True):
        for key in (*MEASURED, *metrics):
            assert new[key] == old[key], (old["method"], key, old[key], new[key])
        assert new["weights"] == old["weights"], old["method"]
