"""Benchmark models: each ``forward`` returns a dict of per-task outputs."""

from .ads import AdsModel
from .digits import DigitsCNN
from .mlp import ManyTasksMLP
from .scenes import MTANLite, SegNetLite

__all__ = ["AdsModel", "DigitsCNN", "MTANLite", "ManyTasksMLP", "SegNetLite"]
