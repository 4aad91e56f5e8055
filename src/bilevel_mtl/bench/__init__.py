"""Benchmark building blocks (data sets, models, metrics, runners) used by ``bilevel-mtl bench``."""
