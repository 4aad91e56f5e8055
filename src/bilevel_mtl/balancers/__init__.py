"""Balancers: MARIGOLD and the classic multi-task weighting methods, one interface."""

from .base import Balancer, BalancerOutput, UpperUpdate
from .ls import LS
from .marigold import Marigold

__all__ = ["LS", "Balancer", "BalancerOutput", "Marigold", "UpperUpdate"]
