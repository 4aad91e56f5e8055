"""All-or-nothing steps: what a training step may change, captured before it, put back on failure."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .balancers.base import Balancer
from .context import RngSnapshot


class UpdateCopy:
    """Copies of the parameters and of the optimizer's state, kept by a trainer from step to step
    so that undoing an optimizer step costs one copy into buffers allocated once."""

    def __init__(self) -> None:
        self._layout: list[tuple[int, Any, torch.Size, torch.dtype, torch.device]] = []
        self._saved: list[Tensor] = []
        self._live: list[Tensor] = []
        self._values: dict[tuple[int, Any], Any] = {}
        self._keys: dict[int, set[Any]] = {}

    def capture(self, params: Sequence[Tensor], optimizer: torch.optim.Optimizer) -> None:
        """Copy ``params`` and every tensor of ``optimizer.state`` (others by value)."""
        live: list[tuple[tuple[int, Any], Tensor]] = [((id(p), None), p.detach()) for p in params]
        self._values, self._keys = {}, {}
        for p, entries in optimizer.state.items():
            self._keys[id(p)] = set(entries)
            for key, value in entries.items():
                if isinstance(value, Tensor):
                    live.append(((id(p), key), value))
                else:
                    self._values[(id(p), key)] = copy.deepcopy(value)
        layout = [(*name, t.shape, t.dtype, t.device) for name, t in live]
        if layout != self._layout:
            self._layout, self._saved = layout, [torch.empty_like(t) for _, t in live]
        self._live = [t for _, t in live]
        with torch.no_grad():
            for saved, tensor in zip(self._saved, self._live, strict=True):
                saved.copy_(tensor)

    def restore(self, optimizer: torch.optim.Optimizer) -> None:
        """Put back what :meth:`capture` copied; drop optimizer state the step created."""
        with torch.no_grad():
            for saved, tensor in zip(self._saved, self._live, strict=True):
                tensor.copy_(saved)
        for p in list(optimizer.state):
            keys = self._keys.get(id(p))
            if keys is None:
                del optimizer.state[p]
                continue
            entries = optimizer.state[p]
            for key in [k for k in entries if k not in keys]:
                del entries[key]
            for key in keys:
                if (id(p), key) in self._values:
                    entries[key] = copy.deepcopy(self._values[(id(p), key)])


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
        update_copy: UpdateCopy,
    ) -> None:
        self._params = params
        self._optimizer = optimizer
        self._balancer = balancer
        self._scaler = scaler
        self._buffers = [(b, b.detach().clone()) for b in buffers]
        self.rng = RngSnapshot(devices)
        carries_state = balancer.stateful or balancer.randomized
        self._balancer_state = copy.deepcopy(balancer.state_dict()) if carries_state else None
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
        if self._balancer_state is not None:
            self._balancer.load_state_dict(self._balancer_state)
        if self._scaler is not None:
            self._scaler._per_optimizer_states.clear()  # forget a half-done unscale_/step
            if self._scale is not None:
                assert self._scaler._scale is not None and self._scaler._growth_tracker is not None
                self._scaler._scale.copy_(self._scale[0])
                self._scaler._growth_tracker.copy_(self._scale[1])
        self.rng.restore()
