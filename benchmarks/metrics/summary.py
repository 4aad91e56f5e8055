r"""Summaries across methods: Δm% against a baseline and the mean rank.

.. math:: \Delta m\% = \frac{100}{M} \sum_{k=1}^{M} (-1)^{\delta_k} \frac{M_{m,k} - M_{b,k}}{M_{b,k}}

with :math:`\delta_k = 1` when higher is better for metric :math:`k` (Maninis et
al. 2019; as in the Nash-MTL, FAMO and MARIGOLD tables). Lower is better; the
baseline is single-task learning.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy.stats import rankdata


def delta_m(
    method: Mapping[str, float], baseline: Mapping[str, float], higher_is_better: Mapping[str, bool]
) -> float:
    """Δm% of ``method`` against ``baseline`` over every metric named in ``higher_is_better``."""
    if not higher_is_better:
        raise ValueError("higher_is_better must name at least one metric")
    total = 0.0
    for name, higher in higher_is_better.items():
        if name not in method or name not in baseline:
            raise ValueError(f"metric {name!r} is missing from the method or the baseline")
        if baseline[name] == 0:
            raise ValueError(f"the baseline's {name!r} is 0: Δm% is undefined")
        sign = -1.0 if higher else 1.0
        total += sign * (method[name] - baseline[name]) / abs(baseline[name])
    return 100.0 * total / len(higher_is_better)


def mean_rank(
    results: Mapping[str, Mapping[str, float]], higher_is_better: Mapping[str, bool]
) -> dict[str, float]:
    """Each method's rank (1 = best, ties share their average rank) averaged over the metrics."""
    methods = list(results)
    if not methods or not higher_is_better:
        raise ValueError("need at least one method and one metric")
    ranks = np.zeros(len(methods))
    for name, higher in higher_is_better.items():
        missing = [method for method in methods if name not in results[method]]
        if missing:
            raise ValueError(f"metric {name!r} is missing for {missing}")
        values = np.array([results[method][name] for method in methods], dtype=float)
        ranks += rankdata(-values if higher else values, method="average")
    return {method: float(rank) / len(higher_is_better) for method, rank in zip(methods, ranks, strict=True)}
