"""Balancers: MARIGOLD and the classic multi-task weighting methods, one interface.

Loss-only balancers (weights from the loss values): :class:`LS`, :class:`STL`, :class:`SI`,
:class:`RLW`, :class:`DWA`, :class:`UW`, :class:`FAMO`, :class:`BiLB4MTL`, and the bi-level
:class:`Marigold`. Gradient balancers (:class:`GradientBalancer`, rules on the task-gradient
matrix, each also a pure function): :class:`MGDA` (MGDA-UB with ``representation=True``),
:class:`PCGrad`, :class:`GradDrop`, :class:`CAGrad`, :class:`IMTLG`, :class:`NashMTL`,
:class:`MoCo`, :class:`MoDo`, :class:`SDMGrad`.
"""

from .base import Balancer, BalancerOutput, UpperUpdate
from .bilb4mtl import BiLB4MTL, discrepancy_objective
from .cagrad import CAGrad, cagrad_dual, cagrad_weights
from .dwa import DWA
from .famo import FAMO, famo_logit_gradient, famo_weights
from .graddrop import GradDrop, graddrop_direction
from .gradient import Combination, GradientBalancer
from .imtlg import IMTLG, imtlg_weights
from .ls import LS
from .marigold import Marigold
from .mgda import MGDA, gradient_normalizers, mgda_weights
from .moco import MoCo, moco_update
from .modo import MoDo, modo_update
from .nash_mtl import NashMTL, nash_bargaining, nash_mtl_weights
from .pcgrad import PCGrad, pcgrad_weights
from .rlw import RLW
from .sdmgrad import SDMGrad, sdmgrad_update
from .si import SI
from .stl import STL
from .uw import UW

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
    "Balancer",
    "BalancerOutput",
    "BiLB4MTL",
    "CAGrad",
    "Combination",
    "GradDrop",
    "GradientBalancer",
    "Marigold",
    "MoCo",
    "MoDo",
    "NashMTL",
    "PCGrad",
    "SDMGrad",
    "UpperUpdate",
    "cagrad_dual",
    "cagrad_weights",
    "discrepancy_objective",
    "famo_logit_gradient",
    "famo_weights",
    "graddrop_direction",
    "gradient_normalizers",
    "imtlg_weights",
    "mgda_weights",
    "moco_update",
    "modo_update",
    "nash_bargaining",
    "nash_mtl_weights",
    "pcgrad_weights",
    "sdmgrad_update",
]
