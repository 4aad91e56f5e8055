"""Writers for the per-step diagnostics: a CSV file (standard library) and TensorBoard (optional).

Both take a :class:`~bilevel_mtl.StepRecord` (flattened with
:meth:`~bilevel_mtl.StepRecord.as_dict`) or any ``{name: number}`` mapping, one call per step.
"""

from __future__ import annotations

import csv
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

from .training import StepRecord

__all__ = ["CSVLogger", "TensorBoardLogger"]

Scalars = Mapping[str, float]
_Logger = TypeVar("_Logger", bound="_StepLogger")


def _flatten(record: StepRecord | Scalars) -> dict[str, float]:
    if isinstance(record, StepRecord):
        return record.as_dict()
    if isinstance(record, Mapping):
        return {str(key): float(value) for key, value in record.items()}
    raise TypeError(f"expected a StepRecord or a mapping of name -> number, got {type(record).__name__}")


def _check_step(step: int) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    return step


class _StepLogger(ABC):
    """Shared step counting and context-manager behaviour."""

    def __init__(self) -> None:
        self.next_step = 0

    def _step(self, step: int | None) -> int:
        current = self.next_step if step is None else _check_step(step)
        self.next_step = current + 1
        return current

    @abstractmethod
    def log(self, record: StepRecord | Scalars, step: int | None = None) -> None:
        """Record one step (``step`` defaults to the previous one + 1, from 0)."""

    @abstractmethod
    def close(self) -> None:
        """Flush and release the file(s); the logger is not usable afterwards."""

    def __enter__(self: _Logger) -> _Logger:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


class CSVLogger(_StepLogger):
    """One CSV row per step: a ``step`` column, then the record's flat keys (``loss/0``, ``weight/0``, ...).

    The columns are the union of the keys logged so far. When a later step brings
    new keys (say ``hypergradient/0`` once a bi-level balancer starts reporting),
    the file is rewritten with the wider header and empty cells in the earlier rows.
    Every row is flushed at once, so the log of a run that crashes is complete up
    to its last step. ``append=True`` continues an existing file (resuming a run),
    with the step counter after its last row; otherwise the file is replaced.
    """

    def __init__(self, path: str | Path, *, append: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self.columns: list[str] = ["step"]
        rows: list[dict[str, str]] = []
        if append and self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as existing:
                reader = csv.DictReader(existing)
                self.columns = list(reader.fieldnames or ["step"])
                rows = list(reader)
            if self.columns[0] != "step":
                raise ValueError(f"{self.path} is not a CSVLogger file: its first column is not 'step'")
            if rows:
                self.next_step = int(rows[-1]["step"]) + 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = self._rewrite(rows)

    def _rewrite(self, rows: list[dict[str, str]]) -> IO[str]:
        file = self.path.open("w", newline="")
        writer = csv.DictWriter(file, fieldnames=self.columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        file.flush()
        return file

    def log(self, record: StepRecord | Scalars, step: int | None = None) -> None:
        """Append the row of one step (``step`` defaults to the previous one + 1, from 0)."""
        if self._file.closed:
            raise RuntimeError(f"CSVLogger for {self.path} is closed")
        values = _flatten(record)
        row: dict[str, Any] = {"step": self._step(step), **values}
        new = [key for key in values if key not in self.columns]
        if new:
            self._file.close()
            with self.path.open(newline="") as existing:
                rows = list(csv.DictReader(existing))
            self.columns += new
            self._file = self._rewrite(rows)
        csv.DictWriter(self._file, fieldnames=self.columns, restval="").writerow(row)
        self._file.flush()

    def close(self) -> None:
        """Close the file (every row is already on disk)."""
        self._file.close()


class TensorBoardLogger(_StepLogger):
    """Scalars of each step in a TensorBoard event file under ``log_dir`` (one tag per flat key).

    Needs the optional ``tensorboard`` package (``pip install tensorboard``); it is
    imported here, when the logger is made, so the rest of the library never needs it.
    """

    def __init__(self, log_dir: str | Path) -> None:
        super().__init__()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError(
                "TensorBoardLogger needs the optional 'tensorboard' package: pip install tensorboard "
                "(or use bilevel_mtl.logging.CSVLogger, which needs nothing)"
            ) from error
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def log(self, record: StepRecord | Scalars, step: int | None = None) -> None:
        """Write one scalar per key at ``step`` (default: the previous one + 1, from 0)."""
        current = self._step(step)
        for key, value in _flatten(record).items():
            self.writer.add_scalar(key, value, global_step=current)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
