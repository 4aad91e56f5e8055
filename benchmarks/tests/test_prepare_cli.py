"""``python -m benchmarks data`` generates the tiny data sets into a cache directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.cli import main


def test_bench_data_command_fills_the_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "data",
        "--size",
        "tiny",
        "--suites",
        "scales",
        "manytasks",
        "--cache-dir",
        str(tmp_path),
    ]
    assert main(argv) == 0
    output = capsys.readouterr().out
    assert "scales" in output and "manytasks" in output and "train       64" in output and "cpu" in output
    assert {path.name.split("-")[0] for path in tmp_path.glob("*.npz")} == {"scales", "manytasks"}


def test_help_lists_every_sub_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    output = capsys.readouterr().out
    assert output.startswith("usage: python -m benchmarks")
    for name in ("data", "quality", "aux", "cost", "estimators"):
        assert f"    {name} " in output
