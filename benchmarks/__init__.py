"""The benchmark harness of bilevel-mtl: data sets, models, metrics, suites and their runners.

It lives next to the library in the repository and is not installed with it: run it from the
repository root as ``python -m benchmarks data|quality|aux|cost|estimators ...``
(``pip install -e ".[bench]"`` brings its dependencies).

A runner needs only :func:`make_suite` and :func:`iterate_batches`::

    suite = make_suite("scenes", "quick")             # or SUITES["scenes"].from_preset(...)
    data = suite.datasets(seed=0)                      # cached under $BILEVEL_MTL_CACHE
    model = suite.model(seed=1)
    for inputs, targets in iterate_batches(data.train, suite.training.batch_size, shuffle=True, seed=1):
        closure = lambda: suite.task_losses(model(inputs), targets)   # Tensor[m], order suite.tasks
        ...
    scores = suite.evaluate(model, data.test)           # {"depth/abs_err": ..., ...}
    delta_m(scores, stl_scores, suite.higher_is_better)
"""

from .cache import CACHE_ENV, cache_root, cached_arrays, config_hash
from .datasets import Splits, TensorDictDataset, iterate_batches, to_device
from .metrics import MetricSpec, delta_m, mean_rank, ne_gain, normalized_entropy
from .suites import SIZES, SUITES, Suite, TrainingDefaults, make_suite

__all__ = [
    "CACHE_ENV",
    "SIZES",
    "SUITES",
    "MetricSpec",
    "Splits",
    "Suite",
    "TensorDictDataset",
    "TrainingDefaults",
    "cache_root",
    "cached_arrays",
    "config_hash",
    "delta_m",
    "iterate_batches",
    "make_suite",
    "mean_rank",
    "ne_gain",
    "normalized_entropy",
    "to_device",
]
