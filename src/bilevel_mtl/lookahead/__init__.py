"""Look-ahead A(w, θ): one functional step of the user's own ``torch.optim`` optimizer."""

from .core import LookAhead, LookAheadResult
from .rules import RULES

__all__ = ["RULES", "LookAhead", "LookAheadResult"]
