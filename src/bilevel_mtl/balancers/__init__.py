"""Balancers: MARIGOLD and the classic multi-task weighting methods, one interface.

Loss-only balancers (:class:`LossBalancer`, weights from the loss values): :class:`LS`,
:class:`STL`, :class:`SI`, :class:`RLW`, :class:`DWA`, :class:`UW`, :class:`FAMO`,
:class:`BiLB4MTL`, and the bi-level :class:`Marigold` (:class:`MarigoldFaithful` is the
paper's Algorithm 2). Gradient balancers (:class:`GradientBalancer`, rules on the
task-gradient matrix, each also a pure function): :class:`MGDA` (:class:`MGDAUB`),
:class:`PCGrad`, :class:`GradDrop`, :class:`CAGrad`, :class:`IMTLG`, :class:`NashMTL`,
:class:`MoCo`, :class:`MoDo`, :class:`SDMGrad`.
"""

from .base import (
    COST_CLASSES,
    Balancer,
    Decision,
    LossBalancer,
    UpperReport,
    registered_balancers,
)
from .bilb4mtl import BiLB4MTL
from .cagrad import CAGrad
from .dwa import DWA
from .famo import FAMO
from .graddrop import GradDrop
from .gradient import Combination, GradientBalancer
from .imtlg import IMTLG
from .ls import LS
from .marigold import Marigold, MarigoldFaithful, UpperLevel
from .mgda import MGDA, MGDAUB
from .moco import MoCo
from .modo import MoDo
from .nash_mtl import NashMTL
from .pcgrad import PCGrad
from .rlw import RLW
from .sdmgrad import SDMGrad
from .si import SI
from .stl import STL
from .uw import UW

__all__ = [
    "COST_CLASSES",
    "DWA",
    "FAMO",
    "IMTLG",
    "LS",
    "MGDA",
    "MGDAUB",
    "RLW",
    "SI",
    "STL",
    "UW",
    "Balancer",
    "BiLB4MTL",
    "CAGrad",
    "Combination",
    "Decision",
    "GradDrop",
    "GradientBalancer",
    "LossBalancer",
    "Marigold",
    "MarigoldFaithful",
    "MoCo",
    "MoDo",
    "NashMTL",
    "PCGrad",
    "SDMGrad",
    "UpperLevel",
    "UpperReport",
    "registered_balancers",
]
