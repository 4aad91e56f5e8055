"""Copies of tensors and of an optimizer's state into buffers allocated once, put back in place."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


class StateCopy:
    """Copies of some tensors and of an optimizer's state, kept from step to step so that undoing
    a step costs one copy into buffers allocated once (the trainer's model and optimizer, an
    upper level's variables and upper optimizer). The tensors must be updated in place."""

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
