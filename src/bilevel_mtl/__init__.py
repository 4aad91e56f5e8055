"""bilevel-mtl: multi-task loss balancing by bi-level optimization.

MARIGOLD (Chen et al. 2026) is the default configuration: the task weights are
the upper level of a bi-level problem whose lower level is one step of your own
optimizer, and their hypergradient is estimated without per-task gradients.
"""

from ._checks import NonFiniteGradientError, NonFiniteLossError
from .balancers import (
    DWA,
    FAMO,
    IMTLG,
    LS,
    MGDA,
    RLW,
    SI,
    STL,
    UW,
    Balancer,
    BalancerOutput,
    BiLB4MTL,
    CAGrad,
    GradDrop,
    GradientBalancer,
    Marigold,
    MoCo,
    MoDo,
    NashMTL,
    PCGrad,
    SDMGrad,
    UpperUpdate,
)
from .context import StepContext
from .criteria import Criterion, FunctionCriterion, MainTaskLoss, WorstCaseDecrement
from .estimators import (
    Estimator,
    Exact,
    ForwardDifference,
    Implicit,
    SinglePoint,
    TwoPoint,
    Unrolled,
    UpperObjective,
)
from .lookahead import LookAhead
from .parametrizations import Parametrization, PositiveWeights, ScaledSoftmax, Softmax
from .registry import build_balancer
from .training import BalancedOptimizer, StepRecord

__version__ = "0.1.0"

__all__ = [
    "DWA",
    "FAMO",
    "IMTLG",
    "LS",
    "MGDA",
    "RLW",
    "SI",
    "STL",
    "UW",
    "BalancedOptimizer",
    "Balancer",
    "BalancerOutput",
    "BiLB4MTL",
    "CAGrad",
    "Criterion",
    "Estimator",
    "Exact",
    "ForwardDifference",
    "FunctionCriterion",
    "GradDrop",
    "GradientBalancer",
    "Implicit",
    "LookAhead",
    "MainTaskLoss",
    "Marigold",
    "MoCo",
    "MoDo",
    "NashMTL",
    "NonFiniteGradientError",
    "NonFiniteLossError",
    "PCGrad",
    "Parametrization",
    "PositiveWeights",
    "SDMGrad",
    "ScaledSoftmax",
    "SinglePoint",
    "Softmax",
    "StepContext",
    "StepRecord",
    "TwoPoint",
    "Unrolled",
    "UpperObjective",
    "UpperUpdate",
    "WorstCaseDecrement",
    "__version__",
    "build_balancer",
]
