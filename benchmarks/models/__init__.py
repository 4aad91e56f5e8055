"""Benchmark models: each ``forward`` returns a dict of per-task outputs."""

from .ads import AdsModel
from .mlp import ConstantModel, ManyTasksMLP, TabularMLP
from .scenes import MTANLite, SegNetLite

__all__ = ["AdsModel", "ConstantModel", "MTANLite", "ManyTasksMLP", "SegNetLite", "TabularMLP"]
