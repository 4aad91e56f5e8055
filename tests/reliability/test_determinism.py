"""Determinism on CPU: the same seed gives the same run, bit for bit, for every case."""

from __future__ import annotations

import pytest
import torch
from reliability_cases import CASE_NAMES, identical, train

STEPS = 4


@pytest.mark.parametrize("name", CASE_NAMES)
def test_same_seed_same_run(name: str) -> None:
    """Twice, with other random draws in between, the second time with
    ``torch.use_deterministic_algorithms(True)`` (no step relies on a non-deterministic kernel)."""
    first = train(name, STEPS)
    torch.manual_seed(12345)  # the run seeds itself: what ran before must not matter
    torch.rand(7)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        second = train(name, STEPS)
    finally:
        torch.use_deterministic_algorithms(previous)
    assert identical(first, second)
