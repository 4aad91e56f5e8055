"""Parametrizations of the task weights: λ = P(u; losses)."""

from .base import Parametrization
from .positive import PositiveWeights
from .softmax import ScaledSoftmax, Softmax

__all__ = ["Parametrization", "PositiveWeights", "ScaledSoftmax", "Softmax"]
