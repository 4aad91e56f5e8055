"""Checks of the harness's command-line values beyond a plain range.

``python -m benchmarks <sub-command>`` runs the sub-command's ``check(args)`` after parsing
and before any work; a :class:`UsageError` there is reported like argparse's own errors
(``prog: error: argument --flag: ...``, exit code 2). Ranges are checked while parsing
(``bilevel_mtl._argtypes``), the device too (:func:`device_name`).

Output folders (:func:`add_output_arguments`, :func:`output_folder`): without ``--out`` a
run writes to a new ``runs/<name>-<UTC time>`` under the current directory; an existing
folder that is not empty needs ``--overwrite`` (write into it: files of the same name are
replaced, others kept) or, where the sub-command has it, ``--resume`` (continue the run
whose results file is in it, made with the same settings).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .runs import build_method, parse_overrides, split_method
from .suites import Suite, make_suite

RUNS = Path("runs")
"""Where runs write without ``--out``, relative to the current directory."""


class UsageError(Exception):
    """A bad command-line value, found before any work: ``argument <flag>: <message>``."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"argument {flag}: {message}")


def device_name(text: str) -> str:
    """The type of ``--device``: ``cpu``, ``auto``, or a CUDA device this machine has."""
    if text == "auto":
        return text
    try:
        kind = torch.device(text)
    except RuntimeError:
        kind = None
    if kind is not None and kind.type == "cpu":
        return text
    if kind is None or kind.type != "cuda":
        raise argparse.ArgumentTypeError(f"choose cpu, cuda, cuda:<index> or auto, got {text!r}")
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device"
        raise argparse.ArgumentTypeError(f"{text} is not available: {why}")
    if kind.index is not None and kind.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    return text


def add_output_arguments(parser: argparse.ArgumentParser, name: str, resume: bool = False) -> None:
    """``--out``, ``--overwrite`` and, with ``resume``, ``--resume`` (exclusive with ``--overwrite``)."""
    parser.add_argument(
        "--out", type=Path, default=None, help=f"output folder (default: a new {RUNS}/{name}-<UTC time>)"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--overwrite", action="store_true", help="write into --out even if it is not empty")
    if resume:
        group.add_argument(
            "--resume",
            action="store_true",
            help="continue the run in --out: keep its records and skip them (same settings only)",
        )


def output_folder(args: argparse.Namespace, name: str, results: str) -> Path:
    """The folder a run writes to, created and tested for writing.

    ``results`` is the run's main results file (what ``--resume`` continues).
    """
    if args.out is None:
        if getattr(args, "resume", False):
            raise UsageError("--resume", "needs --out, the folder of the run to continue")
        return _new_run_folder(name)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError("--out", f"{out} is not a folder")
    if not args.overwrite and _has_entries(out):
        if not hasattr(args, "resume"):
            raise UsageError("--out", f"{out} is not empty; pass --overwrite to write into it")
        if not args.resume:
            raise UsageError(
                "--out",
                f"{out} is not empty; pass --resume to continue its run or --overwrite to write into it",
            )
        if not (out / results).is_file():
            raise UsageError("--resume", f"{out} holds no {results} to continue; pass --overwrite instead")
    return writable_folder(out, "--out")


def earlier_results(args: argparse.Namespace, results: str) -> dict[str, Any] | None:
    """With ``--resume``, the results file of the run in ``--out`` (``None`` when there is none yet)."""
    if not args.resume or args.out is None or not (args.out / results).is_file():
        return None
    return read_json(args.out / results, "--resume", ("records", "provenance"))


def check_same_settings(
    earlier: dict[str, Any], args: argparse.Namespace, flags: dict[str, str], results: Path
) -> None:
    """``--resume`` continues a run only with the settings its records were made with.

    ``flags``: argument name → its flag, e.g. ``{"batch_size": "--batch-size"}``.
    """
    recorded = earlier["provenance"]["arguments"]
    for key, flag in flags.items():
        now = json.loads(json.dumps(getattr(args, key), default=str))
        if key in recorded and recorded[key] != now:
            raise UsageError("--resume", f"{results} was made with {flag} {recorded[key]!r}, not {now!r}")


def writable_folder(path: Path, flag: str) -> Path:
    """``path``, created if needed, once a file could be written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UsageError(flag, f"cannot write to {path}: {error.strerror or error}") from None
    return path


def read_json(path: Path, flag: str, keys: Sequence[str]) -> dict[str, Any]:
    """The JSON object of a results file, which must have ``keys``."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(flag, f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    missing = [key for key in keys if not isinstance(data, dict) or key not in data]
    if missing:
        raise UsageError(flag, f"{path} is not a results file of this benchmark (no {missing[0]!r})")
    return data


def suite_of(name: str, size: str, overrides: Sequence[str], **fixed: Any) -> Suite[Any]:
    """The suite at ``size`` with the ``--set`` settings (over ``fixed`` ones)."""
    try:
        return make_suite(name, size, **{**fixed, **parse_overrides(overrides)})
    except ValueError as error:
        raise UsageError("--set", str(error)) from None


def check_methods(specs: Sequence[str], suite: Suite[Any], seed: int) -> None:
    """Build every method of ``--methods`` once for ``suite``: a bad name or option is a usage error."""
    model = suite.model(seed)
    for spec in specs:
        try:
            split_method(spec)
        except ValueError as error:
            raise UsageError("--methods", str(error)) from None
        try:
            build_method(spec, suite.num_tasks, model, seed=seed)
        except (TypeError, ValueError) as error:
            raise UsageError("--methods", f"{spec}: {error}") from None


def _has_entries(folder: Path) -> bool:
    try:
        return folder.is_dir() and any(folder.iterdir())
    except OSError as error:
        raise UsageError("--out", f"cannot read {folder}: {error.strerror or error}") from None


def _new_run_folder(name: str) -> Path:
    base = RUNS / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    out, number = base, 1
    while True:
        try:
            out.mkdir(parents=True)
            return writable_folder(out, "--out")
        except FileExistsError:
            number += 1
            out = base.with_name(f"{base.name}-{number}")
        except OSError as error:
            raise UsageError("--out", f"cannot create {out}: {error.strerror or error}") from None
