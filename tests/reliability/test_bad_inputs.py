"""Every row of the bad-input table raises its documented error, modifies nothing, and
appears in ``docs/bad-input.md`` with the message the library raises now."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from bad_inputs import ROWS, Row, documented, make_setup, render, render_command_lines


def test_the_table_has_at_least_twenty_distinct_rows() -> None:
    assert len(ROWS) >= 20
    assert len({row.id for row in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_each_bad_input_raises_its_clear_error(row: Row) -> None:
    setup = make_setup()
    saved = copy.deepcopy(
        (setup.model.state_dict(), setup.optimizer.state_dict(), setup.trainer.balancer.state_dict())
    )
    with pytest.raises(row.error) as raised:
        row.trigger(setup)
    assert re.search(row.match, str(raised.value)), str(raised.value)
    if row.through_step:  # nothing was modified
        for a, b in zip(setup.model.state_dict().values(), saved[0].values(), strict=True):
            assert torch.equal(a, b)
        assert str(setup.optimizer.state_dict()) == str(saved[1])
        for key, value in saved[2].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(setup.trainer.balancer.state_dict()[key], value), key


def test_the_documented_tables_are_the_tested_ones() -> None:
    assert documented() == (render(), render_command_lines()), (
        "docs/bad-input.md is out of date: PYTHONPATH=src:. python tests/reliability/bad_inputs.py --write"
    )
