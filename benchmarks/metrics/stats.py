r"""Statistics over paired seeds: intervals of a mean paired difference and a rank with noise ties.

Every method of a seed starts from the same initial parameters and sees the same batches
(:func:`benchmarks.runs.train_run`), so two methods are compared through their per-seed
differences :math:`d_s = x_s - y_s` over the seeds :math:`s = 1..n` both have:

* percentile bootstrap interval (:func:`bootstrap_interval`): draw :math:`B` resamples of
  :math:`n` differences with replacement (a fixed RNG seed), take the mean of each, and
  report the :math:`(1-c)/2` and :math:`(1+c)/2` quantiles of the :math:`B` means;
* paired t-interval (:func:`t_interval`), the cross-check:
  :math:`\bar d \pm t_{n-1,(1+c)/2}\, s_d/\sqrt n`.

With few seeds the bootstrap is coarse: it only resamples the :math:`n` values seen, so it
never reaches beyond :math:`[\min_s d_s, \max_s d_s]`, and with :math:`n \le 3` at
:math:`c = 0.95` it *is* that range (all :math:`n` draws hit the smallest value with
probability :math:`n^{-n} \ge 1/27 > 2.5\%`). It under-covers at :math:`n = 5` (about
85% for normal data, ``test_stats.py``); the t-interval is exact for normal differences.

Rank (:func:`tied_ranks`, :data:`RANK_DEFINITION`): methods ordered by mean score share a
rank when their paired difference to the best method of their group lies inside the noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import t as student_t

LEVEL = 0.95
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0

RANK_DEFINITION = (
    "Methods are sorted by mean score over their seeds, best first (equal means keep the "
    "order of the table), and cut into groups from the top: the first method leads a group; "
    "each next method joins the current group when its paired difference to the group's "
    "leader (per seed, this method minus the leader, over the seeds both have) lies inside "
    "the noise: every difference is 0, or there are at least 2 and their bootstrap 95% "
    "interval contains 0; otherwise it leads a new group. Each member of a group gets the "
    "mean of the 1-based positions the group covers: a tie of the first two gives 1.5, 1.5, "
    "then 3. Comparing with the leader, not with the method just above, keeps ties from "
    "chaining (A ~ B and B ~ C do not put C with A unless C ~ A)."
)

Interval = tuple[float, float]
_UNDEFINED: Interval = (math.nan, math.nan)


def bootstrap_interval(
    values: Sequence[float], level: float = LEVEL, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> Interval:
    """Percentile bootstrap interval of the mean of ``values`` (NaN for fewer than 2 values)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size < 2:
        return _UNDEFINED
    draws = np.random.default_rng(seed).integers(0, data.size, size=(resamples, data.size))
    low, high = np.quantile(data[draws].mean(axis=1), [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    r""":math:`\bar x \pm t_{n-1,(1+c)/2}\, s/\sqrt n` (NaN for fewer than 2 values)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size < 2:
        return _UNDEFINED
    mean = float(data.mean())
    half = (
        float(student_t.ppf((1 + level) / 2, data.size - 1)) * float(data.std(ddof=1)) / math.sqrt(data.size)
    )
    return mean - half, mean + half


@dataclass(frozen=True)
class PairedDifference:
    """A method minus a reference, seed by seed: the differences, their mean and 95% intervals."""

    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    bootstrap_ci: Interval
    t_ci: Interval

    @classmethod
    def of(cls, scores: Mapping[int, float], reference: Mapping[int, float]) -> PairedDifference:
        """``scores[s] - reference[s]`` over the seeds ``s`` both have (NaN mean when none)."""
        seeds = tuple(sorted(set(scores) & set(reference)))
        differences = tuple(scores[s] - reference[s] for s in seeds)
        mean = float(np.mean(differences)) if differences else math.nan
        return cls(seeds, differences, mean, bootstrap_interval(differences), t_interval(differences))

    @property
    def within_noise(self) -> bool:
        """Some differences, and all 0 or with a bootstrap interval that contains 0."""
        low, high = self.bootstrap_ci
        return bool(self.differences) and (all(d == 0 for d in self.differences) or low <= 0 <= high)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (intervals as ``[low, high]`` lists)."""
        return {
            "mean": self.mean,
            "bootstrap_ci": list(self.bootstrap_ci),
            "t_ci": list(self.t_ci),
            "seeds": list(self.seeds),
            "differences": list(self.differences),
        }


def tied_ranks(scores: Mapping[str, Mapping[int, float]], lower_is_better: bool = True) -> dict[str, float]:
    """Each method's rank by mean score, methods inside the noise tied (:data:`RANK_DEFINITION`).

    ``scores[method][seed]`` is the method's score on that seed; every method needs one at least.
    """
    empty = [method for method, mine in scores.items() if not mine]
    if empty:
        raise ValueError(f"no scores for {empty}")
    sign = 1.0 if lower_is_better else -1.0
    order = sorted(scores, key=lambda method: sign * float(np.mean(list(scores[method].values()))))
    groups: list[list[str]] = []
    for method in order:
        if groups and PairedDifference.of(scores[method], scores[groups[-1][0]]).within_noise:
            groups[-1].append(method)
        else:
            groups.append([method])
    ranks: dict[str, float] = {}
    position = 0
    for group in groups:
        ranks.update(dict.fromkeys(group, position + (len(group) + 1) / 2))
        position += len(group)
    return {method: ranks[method] for method in scores}


def compare_methods(
    scores: Mapping[str, Mapping[int, float]], reference: str | None, lower_is_better: bool = True
) -> dict[str, dict[str, Any]]:
    """Per method: ``rank`` (:func:`tied_ranks`) and, when ``reference`` is one of the methods,
    ``vs_<reference>``, the paired difference to it (:meth:`PairedDifference.as_dict`)."""
    ranks = tied_ranks(scores, lower_is_better)
    result: dict[str, dict[str, Any]] = {}
    for method, mine in scores.items():
        entry: dict[str, Any] = {"rank": ranks[method]}
        if reference is not None and reference in scores:
            difference = PairedDifference.of(mine, scores[reference])
            entry[f"vs_{reference}"] = difference.as_dict()
        result[method] = entry
    return result


def settings(score: str, reference: str | None, lower_is_better: bool = True) -> dict[str, Any]:
    """How :func:`compare_methods` was called, for a results file."""
    return {
        "score": score,
        "lower_is_better": lower_is_better,
        "reference": reference,
        "level": LEVEL,
        "interval": "percentile bootstrap of the mean paired difference over seeds "
        "(paired t-interval as a cross-check)",
        "resamples": RESAMPLES,
        "bootstrap_seed": BOOTSTRAP_SEED,
        "rank": RANK_DEFINITION,
    }


def format_interval(interval: Sequence[float], decimals: int = 2) -> str:
    """``[-0.50, +0.20]``; ``[–]`` when undefined (fewer than 2 seeds)."""
    low, high = interval
    if math.isnan(low) or math.isnan(high):
        return "[–]"
    return f"[{low:+.{decimals}f}, {high:+.{decimals}f}]"


def format_difference(difference: Mapping[str, Any], decimals: int = 2) -> str:
    """A paired difference (:meth:`PairedDifference.as_dict`) as ``+0.13 [-0.50, +0.20]`` (bootstrap)."""
    return f"{difference['mean']:+.{decimals}f} {format_interval(difference['bootstrap_ci'], decimals)}"
