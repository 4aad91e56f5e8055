"""The look-ahead A(w, θ): one functional step of the user's own optimizer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .rules import RULES, Rule, State


class LookAheadResult(NamedTuple):
    """Parameters and optimizer states after a look-ahead step (flat, in optimizer order)."""

    params: list[Tensor]
    states: list[State]


def _supported_names() -> str:
    return ", ".join(sorted(cls.__name__ for cls in RULES))


class LookAhead:
    r"""Functional replica of ``optimizer.step()`` starting from the optimizer's warm state.

    ``step(grads)`` returns :math:`A(\theta)` as new tensors: the hyper-parameters of
    each param group (the *current* learning rate, so schedulers are honoured) and
    the optimizer's state are read, never written. The result is differentiable
    with respect to ``grads``; ``eps_root > 0`` adds a constant under the square
    roots of adaptive methods, which keeps that derivative finite where a
    coordinate's second moment is zero (use 1e-16 when differentiating; keep 0 to
    match ``torch.optim`` exactly).

    Supported: Adam, AdamW (AMSGrad too), SGD (momentum, dampening, Nesterov, weight
    decay), Adagrad and RMSprop (centered, momentum), all with ``maximize``.
    Parameters whose gradient is ``None`` are left unchanged, as ``torch.optim`` does.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, eps_root: float = 0.0) -> None:
        rule = RULES.get(type(optimizer))
        if rule is None:
            raise TypeError(
                f"look-ahead does not support {type(optimizer).__name__}; supported optimizers: "
                f"{_supported_names()}. Use a balancer that measures the real step "
                "(e.g. Marigold) for other optimizers."
            )
        if eps_root < 0:
            raise ValueError(f"eps_root must be >= 0, got {eps_root}")
        self.optimizer = optimizer
        self.eps_root = float(eps_root)
        self._rule: Rule = rule
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.is_complex():
                    raise TypeError("look-ahead does not support complex parameters")

    @property
    def params(self) -> list[Tensor]:
        """The optimizer's parameters, flat, in ``param_groups`` order."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = []
        for group in self.optimizer.param_groups:
            options = {k: v for k, v in group.items() if k != "params"}
            if type(self.optimizer) is torch.optim.AdamW:
                options.setdefault("decoupled_weight_decay", True)
            groups.extend(options for _ in group["params"])
        return groups

    def step(
        self,
        grads: Sequence[Tensor | None],
        params: Sequence[Tensor] | None = None,
        states: Sequence[State] | None = None,
    ) -> LookAheadResult:
        """One step from ``params``/``states`` (default: the optimizer's own) with ``grads``."""
        own = self.params
        params = own if params is None else list(params)
        if states is None:
            states = [dict(self.optimizer.state.get(p, {})) for p in own]
        if not (len(grads) == len(params) == len(states) == len(own)):
            raise ValueError(
                f"look-ahead expects {len(own)} gradients/params/states (one per optimizer "
                f"parameter), got {len(grads)}/{len(params)}/{len(states)}"
            )
        new_params: list[Tensor] = []
        new_states: list[State] = []
        for param, grad, state, group in zip(params, grads, states, self._groups(), strict=True):
            if grad is None:
                new_params.append(param)
                new_states.append(dict(state))
                continue
            if grad.is_sparse:
                raise TypeError("look-ahead does not support sparse gradients")
            new_param, new_state = self._rule(param, grad, state, group, self.eps_root)
            new_params.append(new_param)
            new_states.append(new_state)
        return LookAheadResult(new_params, new_states)
