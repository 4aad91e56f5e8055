"""bilevel-mtl: multi-task loss balancing by bi-level optimization.

MARIGOLD (Chen et al. 2026) is the default configuration: the task weights are
the upper level of a bi-level problem whose lower level is one step of your own
optimizer, and their hypergradient is estimated without per-task gradients.

The top level holds what the one-call step needs; the building blocks live in their
subpackages: :mod:`bilevel_mtl.balancers` (every method), :mod:`bilevel_mtl.criteria`,
:mod:`bilevel_mtl.estimators`, :mod:`bilevel_mtl.parametrizations`,
:mod:`bilevel_mtl.lookahead`, :mod:`bilevel_mtl.functional` (the pure gradient rules).
"""

from ._checks import NonFiniteGradientError, NonFiniteLossError
from .balancers import Balancer, Marigold, MarigoldFaithful
from .registry import build_balancer
from .training import BalancedOptimizer, StepRecord

__version__ = "0.1.0"

__all__ = [
    "BalancedOptimizer",
    "Balancer",
    "Marigold",
    "MarigoldFaithful",
    "NonFiniteGradientError",
    "NonFiniteLossError",
    "StepRecord",
    "__version__",
    "build_balancer",
]
