"""Hypergradient estimators (``bilevel_mtl.estimators``: inside the package, never a top-level
``estimators`` module, which would collide in site-packages).

First-order: :class:`FirstOrder` (a criterion's closed-form gradient from one measured step).
Zeroth-order: :class:`SinglePoint` (the MARIGOLD paper's), :class:`TwoPoint`,
:class:`ForwardDifference`. Through the step: :class:`Unrolled` (``k`` steps of the
user's optimizer), :class:`Implicit` (IFT at the current parameters), :class:`Exact`
(dense reference). See ``docs/estimators.md``.
"""

from .base import Estimate, Estimator, UpperObjective, registered_estimators
from .exact import Exact
from .first_order import FirstOrder
from .forward_difference import ForwardDifference
from .implicit import Implicit
from .single_point import SinglePoint
from .solvers import SolveInfo
from .two_point import TwoPoint
from .unrolled import Unrolled
from .zeroth_order import ZerothOrder, project_tangent, sample_directions

__all__ = [
    "Estimate",
    "Estimator",
    "Exact",
    "FirstOrder",
    "ForwardDifference",
    "Implicit",
    "SinglePoint",
    "SolveInfo",
    "TwoPoint",
    "Unrolled",
    "UpperObjective",
    "ZerothOrder",
    "project_tangent",
    "registered_estimators",
    "sample_directions",
]
