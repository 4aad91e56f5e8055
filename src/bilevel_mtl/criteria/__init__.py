"""Upper-level criteria R(losses before, losses after the look-ahead step)."""

from .base import Criterion
from .function import FunctionCriterion
from .log_decrement import LogDecrement, log_decrements
from .main_task import MainTaskLoss
from .worst_case import WorstCaseDecrement

__all__ = [
    "Criterion",
    "FunctionCriterion",
    "LogDecrement",
    "MainTaskLoss",
    "WorstCaseDecrement",
    "log_decrements",
]
