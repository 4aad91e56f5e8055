"""The cost runner's timing logic with a fake clock (no timing assertions), and its plain step."""

from __future__ import annotations

import torch

from benchmarks import make_suite
from benchmarks.cost import Timings, interleave, plain_step, time_block
from bilevel_mtl.balancers import LS
from bilevel_mtl.training import BalancedOptimizer


class FakeClock:
    """(measured, wall) seconds that only the fake steps advance; a log of the steps taken."""

    def __init__(self) -> None:
        self.measured = self.wall = 0.0
        self.log: list[str] = []

    def __call__(self) -> tuple[float, float]:
        return self.measured, self.wall

    def step(self, name: str, costs: list[float]) -> object:
        """A step that takes ``costs[i]`` measured seconds (twice as long on the wall) on its i-th call."""
        calls = iter(costs)

        def step() -> None:
            cost = next(calls)
            self.log.append(name)
            self.measured += cost
            self.wall += 2 * cost

        return step


def test_time_block_gives_seconds_per_step() -> None:
    clock = FakeClock()
    assert time_block(clock.step("a", [1.0, 2.0, 3.0, 6.0]), 4, clock) == (3.0, 6.0)


def test_interleave_runs_rounds_in_order_and_gives_ratios_within_a_round() -> None:
    clock = FakeClock()
    method = [3.0, 6.0, 3.0, 9.0, 3.0]  # one step a block: seconds per step of each round
    runners = {
        "plain": clock.step("plain", [1.0] * 20),
        "ls": clock.step("ls", [1.5] * 10),
        "famo": clock.step("famo", method),
    }
    timings = interleave(runners, {"plain": 4, "ls": 2, "famo": 1}, clock, rounds=5)
    assert clock.log == (["plain"] * 4 + ["ls"] * 2 + ["famo"]) * 5
    assert timings.measured == {"plain": [1.0] * 5, "ls": [1.5] * 5, "famo": method}
    assert timings.wall["famo"] == [6.0, 12.0, 6.0, 18.0, 6.0]
    # ratios 3, 6, 3, 9, 3: median 3, quartiles 3 and 6 (linear interpolation)
    assert timings.ratios("famo", "plain") == {"median": 3.0, "q25": 3.0, "q75": 6.0}
    assert timings.ratios("famo", "ls") == {"median": 2.0, "q25": 2.0, "q75": 4.0}
    assert timings.ratios("ls", "plain", wall=True) == {"median": 1.5, "q25": 1.5, "q75": 1.5}


def test_interleave_stops_at_the_budget_after_three_rounds() -> None:
    def rounds(budget: float, most: int) -> int:
        clock = FakeClock()
        runners = {"plain": clock.step("plain", [1.0] * 100), "m": clock.step("m", [4.0] * 100)}
        timings = interleave(runners, {"plain": 1, "m": 1}, clock, most, budget)  # 10 wall s a round
        return len(timings.measured["plain"])

    assert rounds(budget=1.0, most=20) == 3  # never fewer than 3 ...
    assert rounds(budget=1.0, most=1) == 1  # ... unless fewer are asked for
    assert rounds(budget=35.0, most=20) == 4  # 30 s spent after 3 rounds < 35 s: one more
    assert rounds(budget=1e9, most=6) == 6


def test_timings_ratios_of_one_round() -> None:
    timings = Timings({"a": [2.0], "b": [4.0]}, {"a": [1.0], "b": [1.0]})
    assert timings.ratios("b", "a") == {"median": 2.0, "q25": 2.0, "q75": 2.0}


def test_plain_step_makes_the_update_of_ls() -> None:
    # the plain loop's mean loss is LS's gradient: one step of each from the same start agrees
    suite = make_suite("manytasks", "tiny")
    inputs, targets = next(iter(suite.datasets(seed=0, progress=False).train))
    inputs, targets = inputs[None], {name: value[None] for name, value in targets.items()}
    plain, ls = suite.model(0), suite.model(0)
    plain_optimizer = torch.optim.Adam(plain.parameters(), lr=1e-2)
    trainer = BalancedOptimizer(ls, torch.optim.Adam(ls.parameters(), lr=1e-2), LS(suite.num_tasks))
    for _ in range(3):
        plain_step(plain_optimizer, lambda: suite.task_losses(plain(inputs), targets))
        trainer.step(lambda: suite.task_losses(ls(inputs), targets))
    for a, b in zip(plain.parameters(), ls.parameters(), strict=True):
        torch.testing.assert_close(a, b)
