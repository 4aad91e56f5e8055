"""All-or-nothing steps: what a training step may change, captured before it, put back on failure."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._state_copy import StateCopy
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
        update_copy: StateCopy,
    ) -> None:
        self._params = params
        self._optimizer = optimizer
        self._scaler = scaler
        self._buffers = [(b, b.detach().clone()) for b in buffers]
        self.rng = RngSnapshot(devices)
        carries_state = balancer.stateful or balancer.randomized
        self._restore_balancer = balancer.capture_state() if carries_state else None
        self._update_copy = update_copy
        self._update_captured = False
        self._scale: tuple[Tensor, Tensor] | None = None

    def capture_update(self) -> None:
        """Copy the parameters, the optimizer's state and the scaler's scale (before ``step()``)."""
        self._update_copy.capture(self._params, self._optimizer)
        self._update_captured = True
        scaler = self._scaler
        if scaler is not None and scaler._scale is not None and scaler._growth_tracker is not None:
            self._scale = (scaler._scale.clone(), scaler._growth_tracker.clone())

    def restore(self) -> None:
        """Put back everything captured: after this, the step never happened."""
        if self._update_captured:
            self._update_copy.restore(self._optimizer)
        with torch.no_grad():
            for buffer, saved in self._buffers:
                buffer.copy_(saved)
        for p in self._params:
            p.grad = None
        if self._restore_balancer is not None:
            self._restore_balancer()
        if self._scaler is not None:
            self._scaler._per_optimizer_states.clear()  # forget a half-done unscale_/step
            if self._scale is not None:
                assert self._scaler._scale is not None and self._scaler._growth_tracker is not None
                self._scaler._scale.copy_(self._scale[0])
                self._scaler._growth_tracker.copy_(self._scale[1])
        self.rng.restore()
