"""Every bad value of ``python -m benchmarks`` is a one-line usage error (exit code 2) before any work;
runs write to a fresh ``runs/`` folder unless told otherwise; ``--quick`` respects explicit options."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
from pathlib import Path

import pytest
import torch

from benchmarks import CACHE_ENV
from benchmarks.checks import RUNS, output_folder
from benchmarks.cli import SUITES, build_parser, main
from benchmarks.profiling import peak_extra_bytes

RESULTS = Path(__file__).resolve().parents[1] / "results"
QUICK_ESTIMATORS = ["estimators", "--quick", "--problems", "quadratic", "--tasks", "2"]
QUICK_ESTIMATORS += ["--estimators", "exact", "--repeats", "1", "--no-plots"]


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory, with the data cache beside it."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path / "cwd"


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any sub-command that gets past its checks fails the test."""

    def run(args: argparse.Namespace) -> int:
        raise AssertionError(f"{args.suite} started despite a bad option")

    for module, _ in SUITES.values():
        monkeypatch.setattr(importlib.import_module(module), "run", run)


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The error line of ``main(argv)``, which must exit with code 2 and print nothing else."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0].startswith("usage: python -m benchmarks ")
    prefix = f"python -m benchmarks {argv[0]}: error: "
    assert lines[-1].startswith(prefix) and not any(line.startswith(prefix) for line in lines[:-1])
    return lines[-1].removeprefix(prefix)


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: size and modification time."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
    }


# (argv, the expected message after "error: "); "{file}" is an existing file in the current directory
CASES = [
    (["data", "--threads", "0"], "argument --threads: must be an integer >= 1, got '0'"),
    (["data", "--seed", "-1"], "argument --seed: must be an integer >= 0, got '-1'"),
    (["data", "--size", "huge"], "argument --size: invalid choice: 'huge'"),
    (
        ["data", "--cache-dir", "{file}/cache"],
        "argument --cache-dir: cannot write to {file}/cache: Not a directory",
    ),
    (
        ["quality", "--suite", "scales", "--threads", "0"],
        "argument --threads: must be an integer >= 1, got '0'",
    ),
    (
        ["quality", "--suite", "scales", "--epochs", "0"],
        "argument --epochs: must be an integer >= 1, got '0'",
    ),
    (
        ["quality", "--suite", "scales", "--seeds", "0", "x"],
        "argument --seeds: must be an integer >= 0, got 'x'",
    ),
    (
        ["quality", "--suite", "scales", "--data-seed", "-2"],
        "argument --data-seed: must be an integer >= 0, got '-2'",
    ),
    (
        ["quality", "--suite", "scales", "--average-last", "0"],
        "argument --average-last: must be an integer >= 1",
    ),
    (
        ["quality", "--suite", "scales", "--weight-every", "0"],
        "argument --weight-every: must be an integer >= 1",
    ),
    (
        ["quality", "--suite", "scales", "--device", "gpu"],
        "argument --device: choose cpu, cuda, cuda:<index> or auto, got 'gpu'",
    ),
    (
        ["quality", "--suite", "scales", "--methods", "ls", "marigold:lr=abc"],
        "argument --methods: marigold:lr=abc: lr must be a finite number > 0, got 'abc'",
    ),
    (
        ["quality", "--suite", "scales", "--methods", "nonsense"],
        "argument --methods: unknown method 'nonsense'; choose from [",
    ),
    (
        ["quality", "--suite", "scales", "--methods", "marigold:lr"],
        "argument --methods: a setting must look like name:key=value,key=value, got 'lr'",
    ),
    (
        ["quality", "--suite", "scales", "--methods", "famo:colour=1"],
        "argument --methods: famo:colour=1: FAMO.__init__() got an unexpected keyword argument 'colour'",
    ),
    (
        ["quality", "--suite", "scales", "--set", "num_train=abc"],
        "argument --set: setting 'num_train' must be of type int, got 'abc'",
    ),
    (
        ["quality", "--suite", "scales", "--set", "colour=red"],
        "argument --set: unknown setting 'colour'; valid settings: [",
    ),
    (
        ["quality", "--suite", "scales", "--set", "epochs"],
        "argument --set: a setting must look like KEY=VALUE, got 'epochs'",
    ),
    (["quality", "--suite", "scales", "--out", "{file}"], "argument --out: {file} is not a folder"),
    (
        ["quality", "--suite", "scales", "--out", "{file}/out"],
        "argument --out: cannot write to {file}/out: Not a directory",
    ),
    (
        ["quality", "--suite", "scales", "--resume"],
        "argument --resume: needs --out, the folder of the run to continue",
    ),
    (
        ["quality", "--suite", "scales", "--resume", "--overwrite", "--out", "x"],
        "argument --overwrite: not allowed with argument --resume",
    ),
    (
        ["aux", "--methods", "stl", "marigold"],
        "argument --methods: the NE gain is measured against LS: keep 'ls' in --methods",
    ),
    (["aux", "--upper-lrs", "0.1", "0"], "argument --upper-lrs: must be a finite number > 0, got '0'"),
    (
        ["aux", "--fixed-distill-weights", "3", "-1"],
        "argument --fixed-distill-weights: must be a finite number >= 0, got '-1'",
    ),
    (["cost", "--quick", "--tasks", "0"], "argument --tasks: must be an integer >= 1, got '0'"),
    (["cost", "--hidden", "0"], "argument --hidden: must be an integer >= 1, got '0'"),
    (["cost", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got '0'"),
    (["cost", "--warmup", "0"], "argument --warmup: must be an integer >= 1, got '0'"),
    (["cost", "--repeats", "0"], "argument --repeats: must be an integer >= 1, got '0'"),
    (["cost", "--block-ms", "-1"], "argument --block-ms: must be a finite number > 0, got '-1'"),
    (["cost", "--budget", "inf"], "argument --budget: must be a finite number > 0, got 'inf'"),
    (["cost", "--slow", "0"], "argument --slow: must be a finite number > 0, got '0'"),
    (["cost", "--give-up", "x"], "argument --give-up: must be a finite number > 0, got 'x'"),
    (
        ["cost", "--quick", "--methods", "stl"],
        "argument --methods: stl: STL.__init__() missing 1 required positional argument: 'task'",
    ),
    (["estimators", "--tasks", "2", "1"], "argument --tasks: must be an integer >= 2, got '1'"),
    (["estimators", "--samples", "1"], "argument --samples: must be an integer >= 2, got '1'"),
    (["estimators", "--repeats", "0"], "argument --repeats: must be an integer >= 1, got '0'"),
    (["estimators", "--threads", "0"], "argument --threads: must be an integer >= 1, got '0'"),
    (
        ["estimators", "--from-json", "missing.json"],
        "argument --from-json: cannot read missing.json: No such file or directory",
    ),
    (
        ["estimators", "--from-json", "{file}"],
        "argument --from-json: cannot read {file}: Expecting value: line 1 column 1 (char 0)",
    ),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(argv) for argv, _ in CASES])
def test_a_bad_option_is_a_usage_error_before_any_work(
    argv: list[str], message: str, workdir: Path, no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "file").write_text("not a folder\n")
    error = usage_error([arg.format(file="file") for arg in argv], capsys)
    assert error.startswith(message.format(file="file"))
    assert [path.name for path in workdir.iterdir()] == ["file"]  # no run folder, no cache
    assert not (workdir.parent / "cache").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_usage_error(no_work: None, capsys: pytest.CaptureFixture[str]) -> None:
    error = usage_error(["cost", "--device", "cuda"], capsys)
    assert re.fullmatch(r"argument --device: cuda is not available: .+", error)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA here")
def test_a_cuda_device_this_machine_lacks_is_a_usage_error(
    no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    count = torch.cuda.device_count()
    error = usage_error(["cost", "--device", f"cuda:{count}"], capsys)
    assert error == f"argument --device: cuda:{count} does not exist: {count} CUDA device(s)"


@pytest.mark.parametrize("suite", ["manytasks", "scales", "scenes", "scenes2"])
def test_the_committed_results_are_not_overwritten_without_a_flag(
    suite: str, no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree(RESULTS)
    error = usage_error(["quality", "--suite", suite, "--quick", "--out", str(RESULTS / suite)], capsys)
    assert error == (
        f"argument --out: {RESULTS / suite} is not empty; pass --resume to continue its run "
        "or --overwrite to write into it"
    )
    assert tree(RESULTS) == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["aux", "--out", str(RESULTS / "ads")], f"{RESULTS / 'ads'} is not empty; pass --overwrite"),
        (["cost", "--out", str(RESULTS / "cost")], f"{RESULTS / 'cost'} is not empty; pass --resume"),
        (["estimators", "--out", str(RESULTS / "estimators")], f"{RESULTS / 'estimators'} is not empty"),
    ],
)
def test_no_runner_writes_into_a_folder_that_is_not_empty(
    argv: list[str], message: str, no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree(RESULTS)
    assert usage_error(argv, capsys).startswith(f"argument --out: {message}")
    assert tree(RESULTS) == before


def test_resume_needs_the_results_file_and_the_same_settings(
    workdir: Path, no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    other = workdir / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    error = usage_error(["quality", "--suite", "scales", "--resume", "--out", "other"], capsys)
    assert error == "argument --resume: other holds no quality.json to continue; pass --overwrite instead"
    earlier = {"records": [], "provenance": {"arguments": {"batch_size": 64}}, "suite": {"config": {}}}
    for name in ("quality", "cost"):
        (workdir / name).mkdir()
        (workdir / name / f"{name}.json").write_text(json.dumps(earlier))
    error = usage_error(["quality", "--suite", "scales", "--resume", "--out", "quality"], capsys)
    assert error == "argument --resume: quality/quality.json was made with another suite configuration"
    error = usage_error(["cost", "--quick", "--resume", "--out", "cost"], capsys)
    assert error == "argument --resume: cost/cost.json was made with --batch-size 64, not 128"
    (workdir / "cost" / "cost.json").write_text("{}")
    error = usage_error(["cost", "--quick", "--resume", "--out", "cost"], capsys)
    assert error == "argument --resume: cost/cost.json is not a results file of this benchmark (no 'records')"


def test_a_run_without_out_writes_to_a_fresh_run_folder(workdir: Path) -> None:
    assert main(QUICK_ESTIMATORS) == 0
    assert main(QUICK_ESTIMATORS) == 0
    folders = sorted(path.name for path in (workdir / RUNS).iterdir())
    assert len(folders) == 2 and all(re.fullmatch(r"estimators-\d{8}T\d{6}Z(-\d+)?", n) for n in folders)
    for name in folders:
        assert json.loads((workdir / RUNS / name / "results.json").read_text())["records"]
    assert [path.name for path in workdir.iterdir()] == [str(RUNS)]


def test_fresh_run_folders_never_collide(workdir: Path) -> None:
    args = argparse.Namespace(out=None, overwrite=False)
    first, second = (output_folder(args, "quality-scales", "quality.json") for _ in range(2))
    assert first != second and first.is_dir() and second.is_dir()
    assert first.parent == second.parent == RUNS


def test_overwrite_writes_into_a_folder_that_is_not_empty(workdir: Path) -> None:
    (workdir / "out").mkdir()
    (workdir / "out" / "notes.txt").write_text("mine\n")
    assert main([*QUICK_ESTIMATORS, "--out", "out", "--overwrite"]) == 0
    assert {path.name for path in (workdir / "out").iterdir()} == {
        "notes.txt",
        "results.json",
        "results.csv",
        "summary.md",
    }
    assert (workdir / "out" / "notes.txt").read_text() == "mine\n"


def test_an_empty_folder_needs_no_flag(workdir: Path) -> None:
    (workdir / "out").mkdir()
    assert main([*QUICK_ESTIMATORS, "--out", "out"]) == 0
    assert (workdir / "out" / "results.json").is_file()


def checked(argv: list[str]) -> argparse.Namespace:
    """The arguments after the sub-command's check (defaults filled in)."""
    parser, _ = build_parser()
    args = parser.parse_args(argv)
    importlib.import_module(SUITES[args.suite][0]).check(args)
    return args


def test_quick_fills_in_only_the_options_not_given() -> None:
    cost = checked(["cost", "--quick", "--methods", "famo"])
    assert (cost.tasks, cost.repeats) == ([2, 8], 3)
    cost = checked(["cost", "--quick", "--tasks", "3", "--repeats", "5", "--methods", "famo"])
    assert (cost.tasks, cost.repeats) == ([3], 5)
    assert checked(["cost", "--methods", "famo"]).tasks == [2, 3, 8, 32, 128, 256]
    quality = checked(["quality", "--suite", "scales", "--quick", "--methods", "ls"])
    assert (quality.size, quality.seeds) == ("quick", [0])
    quality = checked(
        ["quality", "--suite", "scales", "--quick", "--size", "tiny", "--seeds", "1", "--methods", "ls"]
    )
    assert (quality.size, quality.seeds) == ("tiny", [1])
    assert checked(["data", "--quick"]).size == "quick"
    assert checked(["data", "--quick", "--size", "tiny"]).size == "tiny"
    assert checked(["data"]).size == "default"


def test_data_quick_generates_the_quick_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.suites import make_suite

    data = make_suite("manytasks", "quick").config.data
    assert main(["data", "--quick", "--suites", "manytasks", "--no-cache"]) == 0
    output = capsys.readouterr().out
    sizes = f"train {data.num_train:8d}   test {data.num_test:8d}"
    assert "size quick, not cached" in output and sizes in output


def test_the_memory_probe_drops_the_profiler_markers_only(capfd: pytest.CaptureFixture[str]) -> None:
    def prepare() -> object:
        def call() -> None:
            torch.ones(1000).sum()
            os.write(2, b"real output\n")

        return call

    assert peak_extra_bytes([prepare], torch.device("cpu"))[0] > 0
    err = capfd.readouterr().err
    assert "real output\n" in err and "profiler_start" not in err and "profiler_stop" not in err
