"""The pure rules behind the balancers: functions of task gradients, losses and weights.

Each lives in its method's module (:mod:`bilevel_mtl.balancers`); this is the one place
that lists them, for use outside a balancer (e.g. on a Jacobian computed elsewhere).
"""

from .balancers.bilb4mtl import discrepancy_objective
from .balancers.cagrad import cagrad_dual, cagrad_weights
from .balancers.famo import famo_logit_gradient, famo_weights
from .balancers.graddrop import graddrop_direction
from .balancers.imtlg import imtlg_weights
from .balancers.mgda import gradient_normalizers, mgda_weights
from .balancers.moco import moco_update
from .balancers.modo import modo_update
from .balancers.nash_mtl import nash_bargaining, nash_mtl_weights
from .balancers.pcgrad import pcgrad_weights
from .balancers.sdmgrad import sdmgrad_update

__all__ = [
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
