"""The benchmark suites and a factory: ``make_suite("scenes", "quick", num_train=100)``."""

from __future__ import annotations

from typing import Any

from .ads import AdsSuite, AdsSuiteConfig
from .base import SIZES, Suite, TrainingDefaults, apply_overrides
from .manytasks import ManyTasksSuite, ManyTasksSuiteConfig
from .scales import ScalesSuite, ScalesSuiteConfig
from .scenes import Scenes2Suite, ScenesSuite, ScenesSuiteConfig

SUITES: dict[str, type[Suite[Any]]] = {
    suite.name: suite for suite in (ScenesSuite, Scenes2Suite, ManyTasksSuite, ScalesSuite, AdsSuite)
}
"""Suite name → class."""


def make_suite(name: str, size: str = "default", **overrides: Any) -> Suite[Any]:
    """The suite ``name`` at a preset ``size`` with settings replaced (data, model or training fields)."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose one of {sorted(SUITES)}")
    return SUITES[name].from_preset(size, **overrides)


__all__ = [
    "SIZES",
    "SUITES",
    "AdsSuite",
    "AdsSuiteConfig",
    "ManyTasksSuite",
    "ManyTasksSuiteConfig",
    "ScalesSuite",
    "ScalesSuiteConfig",
    "Scenes2Suite",
    "ScenesSuite",
    "ScenesSuiteConfig",
    "Suite",
    "TrainingDefaults",
    "apply_overrides",
    "make_suite",
]
