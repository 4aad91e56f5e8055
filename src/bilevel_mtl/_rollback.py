"""All-or-nothing steps: what a training step may change, captured before it, put back on failure."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .balancers.base import Balancer
from .context import RngSnapshot


class Rollback:
    """The state one :meth:`~bilevel_mtl.BalancedOptimizer.step` may change, captured cheaply.

    At the start of a step: copies of the model's buffers (BatchNorm statistics a forward
    pass updates; those the model had when the trainer was built), the CPU/CUDA random
    states, and the balancer's state when it has any.
    Gradients are not kept (holding the previous step's ``.grad`` alive would cost an
    allocation per step): a failed step leaves ``.grad = None``, as ``zero_grad()`` does,
    which is what every step starts from.
    Right before the optimizer steps, and only when something can still fail after it
    (a balancer that evaluates the closure again after the step): copies of the
    parameters, of the optimizer's state and of the ``GradScaler``'s scale.
    :meth:`restore` puts all of it back.
    """

    def __init__(
        self,
        buffers: Sequence[Tensor],
        params: Sequence[Tensor],
        optimizer: torch.optim.Optimizer,
        balancer: Balancer,
        scaler: torch.amp.GradScaler | None,
        devices: Sequence[torch.device],
    ) -> None:
        self._params = params
        self._optimizer = optimizer
        self._balancer = balancer
        self._scaler = scaler
        self._buffers = [(b, b.detach().clone()) for b in buffers]
        self.rng = RngSnapshot(devices)
        carries_state = balancer.stateful or balancer.randomized
        self._balancer_state = copy.deepcopy(balancer.state_dict()) if carries_state else None
        self._weights: list[Tensor] | None = None
        self._optimizer_state: dict[Any, Any] | None = None
        self._scale: tuple[Tensor, Tensor] | None = None

    def capture_update(self) -> None:
        """Copy the parameters, the optimizer's state and the scaler's scale (before ``step()``)."""
        with torch.no_grad():
            self._weights = [p.detach().clone() for p in self._params]
        self._optimizer_state = {p: copy.deepcopy(s) for p, s in self._optimizer.state.items()}
        scaler = self._scaler
        if scaler is not None and scaler._scale is not None and scaler._growth_tracker is not None:
            self._scale = (scaler._scale.clone(), scaler._growth_tracker.clone())

    def restore(self) -> None:
        """Put back everything captured: after this, the step never happened."""
        with torch.no_grad():
            if self._weights is not None:
                for p, saved in zip(self._params, self._weights, strict=True):
                    p.copy_(saved)
            for buffer, saved in self._buffers:
                buffer.copy_(saved)
        if self._optimizer_state is not None:
            self._optimizer.state.clear()
            self._optimizer.state.update(self._optimizer_state)
        for p in self._params:
            p.grad = None
        if self._balancer_state is not None:
            self._balancer.load_state_dict(self._balancer_state)
        if self._scaler is not None:
            self._scaler._per_optimizer_states.clear()  # forget a half-done unscale_/step
            if self._scale is not None:
                assert self._scaler._scale is not None and self._scaler._growth_tracker is not None
                self._scaler._scale.copy_(self._scale[0])
                self._scaler._growth_tracker.copy_(self._scale[1])
        self.rng.restore()
