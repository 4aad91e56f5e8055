"""bilevel-mtl: multi-task loss balancing by bi-level optimization.

MARIGOLD (Chen et al. 2026) is the default configuration: the task weights are
the upper level of a bi-level problem whose lower level is one step of your own
optimizer, and their hypergradient is estimated without per-task gradients.
"""

from ._checks import NonFiniteGradientError, NonFiniteLossError
from .balancers import LS, Balancer, BalancerOutput, Marigold, UpperUpdate
from .context import StepContext
from .criteria import Criterion, FunctionCriterion, MainTaskLoss, WorstCaseDecrement
from .estimators import Estimator, SinglePoint, UpperObjective
from .lookahead import LookAhead
from .parametrizations import Parametrization, PositiveWeights, ScaledSoftmax, Softmax
from .training import BalancedOptimizer, StepRecord

__version__ = "0.1.0"

__all__ = [
    "LS",
    "BalancedOptimizer",
    "Balancer",
    "BalancerOutput",
    "Criterion",
    "Estimator",
    "FunctionCriterion",
    "LookAhead",
    "MainTaskLoss",
    "Marigold",
    "NonFiniteGradientError",
    "NonFiniteLossError",
    "Parametrization",
    "PositiveWeights",
    "ScaledSoftmax",
    "SinglePoint",
    "Softmax",
    "StepContext",
    "StepRecord",
    "UpperObjective",
    "UpperUpdate",
    "WorstCaseDecrement",
    "__version__",
]
