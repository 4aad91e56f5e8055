"""A bad value of a ``bilevel-mtl`` option is a one-line usage error (exit code 2), before any training."""

from __future__ import annotations

import pytest

import bilevel_mtl.demo
from bilevel_mtl.cli import main

CASES = [
    (["demo", "--steps", "0"], "argument --steps: must be an integer >= 1, got '0'"),
    (["demo", "--steps", "ten"], "argument --steps: must be an integer >= 1, got 'ten'"),
    (["demo", "--batch-size", "-4"], "argument --batch-size: must be an integer >= 1, got '-4'"),
    (["demo", "--upper-lr", "0"], "argument --upper-lr: must be a finite number > 0, got '0'"),
    (["demo", "--upper-lr", "nan"], "argument --upper-lr: must be a finite number > 0, got 'nan'"),
    (["demo", "--upper-lr", "abc"], "argument --upper-lr: must be a finite number > 0, got 'abc'"),
    (["demo", "--seed", "-1"], "argument --seed: must be an integer >= 0, got '-1'"),
]


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(argv) for argv, _ in CASES])
def test_a_bad_demo_option_is_a_usage_error_before_training(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained despite a bad option")

    monkeypatch.setattr(bilevel_mtl.demo, "train", no_training)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[-1] == f"bilevel-mtl demo: error: {message}"
