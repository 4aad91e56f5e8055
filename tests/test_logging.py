"""CSV and TensorBoard writers of the per-step diagnostics."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import bilevel_mtl as bm
from bilevel_mtl.logging import CSVLogger, TensorBoardLogger


def _records(steps: int) -> list[bm.StepRecord]:
    torch.manual_seed(0)
    x = torch.randn(32, 3)
    y = torch.stack([x[:, 0], x[:, 1] - x[:, 2]], dim=1)
    model = nn.Linear(3, 2)
    trainer = bm.BalancedOptimizer(model, torch.optim.Adam(model.parameters(), lr=1e-2), bm.Marigold(2))
    return [trainer.step(lambda: ((model(x) - y) ** 2).mean(0)) for _ in range(steps)]


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


def test_csv_rows_hold_the_records_values_exactly(tmp_path: Path) -> None:
    records = _records(3)
    path = tmp_path / "run" / "log.csv"
    with CSVLogger(path) as log:
        for record in records:
            log.log(record)
    header, rows = _read(path)
    assert header == ["step", *records[0].as_dict()]
    assert [row["step"] for row in rows] == ["0", "1", "2"]
    assert records[0].hypergradient is not None and records[1].hypergradient is None  # measured, not
    for row, record in zip(rows, records, strict=True):
        values = {key: value for key, value in row.items() if key != "step"}
        assert {key: float(value) for key, value in values.items() if value != ""} == record.as_dict()
        assert {key for key, value in values.items() if value == ""} == set(header[1:]) - set(
            record.as_dict()
        )


def test_the_criterion_value_is_a_0_dim_tensor_and_logs_as_a_float(tmp_path: Path) -> None:
    """The step keeps it on the device (no host sync); ``as_dict`` and the loggers read it."""
    (record,) = _records(1)
    assert isinstance(record.criterion_value, torch.Tensor) and record.criterion_value.dim() == 0
    flat = record.as_dict()
    assert isinstance(flat["criterion"], float) and flat["criterion"] == float(record.criterion_value)
    with CSVLogger(tmp_path / "log.csv") as log:
        log.log(record)
    _, rows = _read(tmp_path / "log.csv")
    assert float(rows[0]["criterion"]) == flat["criterion"]


def test_csv_widens_the_header_when_new_keys_appear(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    log = CSVLogger(path)
    log.log({"loss/0": 1.5})
    log.log({"loss/0": 1.25, "criterion": -0.5}, step=10)
    log.log({"loss/0": 1.0})
    log.close()
    header, rows = _read(path)
    assert header == ["step", "loss/0", "criterion"]
    assert rows == [
        {"step": "0", "loss/0": "1.5", "criterion": ""},
        {"step": "10", "loss/0": "1.25", "criterion": "-0.5"},
        {"step": "11", "loss/0": "1.0", "criterion": ""},
    ]


def test_csv_append_continues_after_the_last_step(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    with CSVLogger(path) as log:
        log.log({"a": 1.0})
        log.log({"a": 2.0})
    with CSVLogger(path, append=True) as log:
        assert log.next_step == 2
        log.log({"a": 3.0, "b": 4.0})
    header, rows = _read(path)
    assert header == ["step", "a", "b"]
    assert [(row["step"], row["a"], row["b"]) for row in rows] == [
        ("0", "1.0", ""),
        ("1", "2.0", ""),
        ("2", "3.0", "4.0"),
    ]
    with CSVLogger(path) as log:  # without append the file is replaced
        log.log({"c": 5.0})
    assert _read(path) == (["step", "c"], [{"step": "0", "c": "5.0"}])


def test_csv_bad_input_is_named(tmp_path: Path) -> None:
    log = CSVLogger(tmp_path / "log.csv")
    with pytest.raises(TypeError, match="StepRecord or a mapping"):
        log.log([1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        log.log({"a": 1.0}, step=-1)
    log.close()
    with pytest.raises(RuntimeError, match="closed"):
        log.log({"a": 1.0})
    other = tmp_path / "other.csv"
    other.write_text("epoch,loss\n0,1.0\n")
    with pytest.raises(ValueError, match="first column is not 'step'"):
        CSVLogger(other, append=True)


def test_tensorboard_missing_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        TensorBoardLogger(tmp_path)


def test_tensorboard_writes_every_key_at_its_step(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    records = _records(3)
    with TensorBoardLogger(tmp_path) as log:
        for record in records:
            log.log(record)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(records[0].as_dict())
    for key, value in records[2].as_dict().items():
        steps = [(event.step, event.value) for event in events.Scalars(key)]
        assert [step for step, _ in steps] == [0, 1, 2]
        assert steps[2][1] == pytest.approx(value, rel=1e-6)
