"""Hypergradient estimators (``bilevel_mtl.estimators``: inside the package, never a top-level
``estimators`` module, which would collide in site-packages)."""

from .base import Estimator, UpperObjective
from .zeroth_order import SinglePoint, sample_directions

__all__ = ["Estimator", "SinglePoint", "UpperObjective", "sample_directions"]
