"""Paired-seed statistics against closed forms, hand-computed cases and simulated coverage."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from benchmarks.metrics.stats import (
    PairedDifference,
    bootstrap_interval,
    compare_methods,
    t_interval,
    tied_ranks,
)


def test_t_interval_by_hand() -> None:
    # mean 2, s = 1; with 2 degrees of freedom the t quantile is (2p - 1) / sqrt(2p(1 - p))
    low, high = t_interval([1.0, 2.0, 3.0])
    half = 0.95 / math.sqrt(2 * 0.975 * 0.025) / math.sqrt(3)
    assert (low, high) == pytest.approx((2 - half, 2 + half), rel=1e-12)


def test_bootstrap_of_two_or_three_values_is_their_range() -> None:
    # all n draws hit the smallest value with probability n^-n >= 1/27 > 2.5%
    assert bootstrap_interval([1.0, 6.0, 2.0]) == (1.0, 6.0)
    assert bootstrap_interval([4.0, 0.0]) == (0.0, 4.0)


def test_bootstrap_matches_the_exact_bootstrap_distribution() -> None:
    values = [0.3, -1.2, 2.5, 0.9, 4.0]
    # the mean of every one of the 5^5 equally likely resamples: the exact bootstrap distribution
    means = np.array([np.mean(draw) for draw in itertools.product(values, repeat=len(values))])
    low, high = bootstrap_interval(values)
    # each end is a 2.5% / 97.5% quantile of that distribution, up to the Monte Carlo error of
    # 10,000 resamples (standard error of a 2.5% tail 0.16%)
    for end, q in ((low, 0.025), (high, 0.975)):
        assert np.mean(means < end - 1e-9) <= q + 0.005
        assert np.mean(means <= end + 1e-9) >= q - 0.005


def test_bootstrap_is_deterministic() -> None:
    values = list(np.random.default_rng(3).normal(size=7))
    assert bootstrap_interval(values) == bootstrap_interval(values)
    assert bootstrap_interval(values) != bootstrap_interval(values, seed=1)


def _coverage(n: int, interval: str, experiments: int = 1000) -> float:
    """How often the interval of n paired differences contains the true mean difference 0.5.

    Each experiment draws n seeds: a seed effect shared by both methods (which pairing removes)
    plus each method's own noise; method B is 0.5 worse on average.
    """
    rng = np.random.default_rng(12345)
    hits = 0
    for experiment in range(experiments):
        seed_effect = rng.normal(0.0, 5.0, size=n)
        a = seed_effect + rng.normal(0.0, 1.0, size=n)
        b = seed_effect + 0.5 + rng.normal(0.0, 1.0, size=n)
        differences = list(b - a)
        if interval == "t":
            low, high = t_interval(differences)
        else:
            low, high = bootstrap_interval(differences, resamples=2000, seed=experiment)
        hits += low <= 0.5 <= high
    return hits / experiments


def test_intervals_cover_the_true_mean_difference() -> None:
    assert _coverage(5, "t") >= 0.93  # exact for normal differences at any n
    assert _coverage(50, "bootstrap") >= 0.93  # the bootstrap needs many seeds


def test_bootstrap_is_coarse_with_few_seeds() -> None:
    # n = 3: the interval is [min, max], which misses the centre of a symmetric distribution
    # when all three fall on one side: coverage 1 - 2 / 2^3 = 0.75
    assert _coverage(3, "bootstrap") == pytest.approx(0.75, abs=0.04)
    # n = 5: about P(|t_4| < 1.96 sqrt(4/5)) = 0.85 (the bootstrap's standard error lacks n/(n-1))
    assert _coverage(5, "bootstrap") < 0.9 < _coverage(5, "t")


def test_degenerate_samples() -> None:
    assert all(math.isnan(x) for x in (*bootstrap_interval([1.0]), *t_interval([1.0])))
    assert all(math.isnan(x) for x in (*bootstrap_interval([]), *t_interval([])))
    assert bootstrap_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert t_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_paired_difference_uses_the_shared_seeds() -> None:
    difference = PairedDifference.of({2: 5.0, 0: 1.0, 1: 4.0}, {1: 1.0, 2: 2.0, 7: 0.0})
    assert difference.seeds == (1, 2) and difference.differences == (3.0, 3.0)
    assert difference.mean == 3.0 and difference.bootstrap_ci == (3.0, 3.0) and not difference.within_noise
    assert difference.as_dict()["t_ci"] == [3.0, 3.0]
    identical = PairedDifference.of({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
    assert identical.within_noise and identical.bootstrap_ci == (0.0, 0.0)
    # one seed: no interval; only an exact tie is inside the noise
    assert PairedDifference.of({0: 1.0}, {0: 1.0}).within_noise
    assert not PairedDifference.of({0: 1.0}, {0: 1.5}).within_noise
    nothing = PairedDifference.of({0: 1.0}, {1: 1.0})
    assert math.isnan(nothing.mean) and not nothing.within_noise


def test_ranks_without_ties() -> None:
    scores = {"b": {0: 2.0, 1: 2.1, 2: 2.2}, "a": {0: 1.0, 1: 1.1, 2: 1.2}, "c": {0: 3.0, 1: 3.1, 2: 3.2}}
    assert tied_ranks(scores) == {"b": 2.0, "a": 1.0, "c": 3.0}
    assert tied_ranks(scores, lower_is_better=False) == {"b": 2.0, "a": 3.0, "c": 1.0}


def test_ranks_tie_inside_the_noise_and_only_there() -> None:
    base = {0: 1.0, 1: 5.0, 2: 9.0}
    # differences to a: (+0.1, -0.1, +0.3): the interval contains 0, a tie
    near = {0: 1.1, 1: 4.9, 2: 9.3}
    # differences to a: (+0.1, +0.2, +0.3), all positive: not a tie, although the shift is far
    # inside the seed-to-seed spread (std 4) -- what pairing buys
    shifted = {0: 1.1, 1: 5.2, 2: 9.3}
    assert tied_ranks({"a": base, "near": near}) == {"a": 1.5, "near": 1.5}
    assert tied_ranks({"a": base, "shifted": shifted}) == {"a": 1.0, "shifted": 2.0}
    far = {0: 11.0, 1: 15.0, 2: 19.0}
    assert tied_ranks({"far": far, "near": near, "a": base}) == {"far": 3.0, "near": 1.5, "a": 1.5}


def test_ties_do_not_chain() -> None:
    # b - a = (1, -0.5) and c - b = (-0.4, 1) are inside the noise, c - a = (0.6, 0.5) is not:
    # b joins a's group, c leads the next one
    a, b, c = {0: 0.0, 1: 0.0}, {0: 1.0, 1: -0.5}, {0: 0.6, 1: 0.5}
    assert PairedDifference.of(b, a).within_noise and PairedDifference.of(c, b).within_noise
    assert not PairedDifference.of(c, a).within_noise
    d = {0: 0.9, 1: 0.4}  # d - c = (0.3, -0.1): with c
    ranks = tied_ranks({"c": c, "a": a, "e": {0: 9.0, 1: 9.0}, "d": d, "b": b})
    assert ranks == {"c": 3.5, "a": 1.5, "e": 5.0, "d": 3.5, "b": 1.5}


def test_identical_methods_tie_and_one_seed_ties_only_equal_scores() -> None:
    same = {0: 3.0, 1: 4.0, 2: 1.0}
    assert tied_ranks({"x": same, "y": dict(same), "z": {0: 9.0, 1: 9.5, 2: 9.9}}) == {
        "x": 1.5,
        "y": 1.5,
        "z": 3.0,
    }
    one_seed = {"x": {0: 1.0}, "y": {0: 1.0}, "z": {0: 1.0001}}
    assert tied_ranks(one_seed) == {"x": 1.5, "y": 1.5, "z": 3.0}
    with pytest.raises(ValueError, match="no scores"):
        tied_ranks({"x": {}, "y": {0: 1.0}})


def test_compare_methods_against_a_reference() -> None:
    scores = {"ls": {0: 1.0, 1: 2.0, 2: 3.0}, "m": {0: 0.5, 1: 1.0, 2: 3.5}}
    result = compare_methods(scores, "ls")
    assert result["ls"]["vs_ls"]["mean"] == 0.0 and result["ls"]["vs_ls"]["bootstrap_ci"] == [0.0, 0.0]
    assert result["m"]["vs_ls"]["differences"] == [-0.5, -1.0, 0.5]
    assert result["m"]["vs_ls"]["mean"] == pytest.approx(-1 / 3)
    assert result["m"]["vs_ls"]["bootstrap_ci"] == [-1.0, 0.5]
    assert result["m"]["rank"] == result["ls"]["rank"] == 1.5
    assert "vs_ls" not in compare_methods(scores, None)["m"]
    assert "vs_ls" not in compare_methods({"m": scores["m"]}, "ls")["m"]
