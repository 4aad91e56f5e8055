"""A committed result reproduces exactly from today's code: ``benchmarks/results/rerun``.

The record is a short run made for this purpose (the tiny Scales preset, 60 epochs, LS and
the default MARIGOLD, seed 0; its command is in the file). This test makes it again with
the recorded command. On the CPU model the record was made on, every metric, Δm%, weight
and step count must match to the last bit. Another CPU model runs other float kernels
(vector widths, summation orders), so there the step counts must match exactly and every
number to a relative 1e-3: between the Intel Xeon of the record and an AMD EPYC, Δm%
differs by 3e-5 relative after 1,440 steps, while a change to the method or the data moves
it by far more. When a change moves these numbers on purpose, re-record the run (the
command in ``provenance``, from a clean tree) and say so in the change.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.runs import device_string

RECORD = Path(__file__).resolve().parents[1] / "results" / "rerun" / "quality.json"
IDENTITY = ("method", "seed", "steps")
ACROSS_CPUS = 1e-3


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
    same_cpu = _cpu(committed["provenance"]["device"]) == _cpu(device_string())
    assert len(committed["records"]) == len(again["records"]) == 3  # STL, LS, MARIGOLD
    for old, new in zip(committed["records"], again["records"], strict=True):
        for key in IDENTITY:
            assert new[key] == old[key], (old["method"], key, old[key], new[key])
        assert len(new["weights"]) == len(old["weights"]), old["method"]
        numbers = [(key, old[key], new[key]) for key in ("delta_m", *metrics)]
        numbers += [
            (f"weights@{a['step']}", a["weights"], b["weights"])
            for a, b in zip(old["weights"], new["weights"], strict=True)
        ]
        for key, recorded, now in numbers:
            if same_cpu:
                assert now == recorded, (old["method"], key, recorded, now)
            else:
                assert now == pytest.approx(recorded, rel=ACROSS_CPUS, abs=1e-9), (
                    old["method"],
                    key,
                    recorded,
                    now,
                )


def _cpu(device: str) -> str:
    """The CPU model of a device string (``CPU <model>, <n> cores, torch threads <t>``)."""
    return device.split(",")[0]
