"""Data-parallel training: what the ranks of one step must agree on, and how they agree.

Under ``torch.nn.parallel.DistributedDataParallel`` (DDP) every rank holds the same
parameters and a different shard of the global batch. A balancer's decision must be
the one a single process would make on the global batch, identically on every rank:

* **losses**: each rank's closure returns the losses of its own shard. The balancer
  sees their mean over the ranks (the global-batch losses, for equal shard sizes),
  while the autograd graph stays the local one, so that DDP's backward all-reduce
  still produces the gradient of the global loss (:func:`global_losses`);
* **gradients** a balancer asks for (:meth:`~bilevel_mtl.context.StepContext.gradients`:
  per-task gradients, the look-ahead's gradient) come from ``torch.autograd.grad``,
  which does not fire DDP's all-reduce hooks: they are averaged over the ranks here
  (:func:`all_reduce_mean`), exactly as DDP averages ``.grad``;
* **losses at other parameters** (look-ahead and post-step losses) are averaged too;
* **randomness** of a balancer (MARIGOLD's directions) comes from its own generator,
  seeded identically on every rank and advanced identically, so it needs no traffic.

FSDP (``fully_shard`` and the older ``FullyShardedDataParallel``) shards the
parameters: losses are averaged the same way, but per-task gradients and the virtual
look-ahead are refused (see :data:`SHARDED_REFUSAL`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["DataParallel", "all_gather_batch", "all_reduce_gradients", "all_reduce_mean", "global_losses"]

ProcessGroup = Any
"""``torch.distributed.ProcessGroup`` (kept loose: torch may be built without distributed)."""

SHARDED_REFUSAL = (
    "is not available for FSDP-sharded models: torch.autograd.grad bypasses FSDP's "
    "reduce-scatter and FSDP all-gathers its own shards, not look-ahead parameters. "
    "Use a balancer that needs only the losses (LS, Marigold, loss-based "
    "methods), or DDP; see docs/tutorials/ddp.md"
)


def _distributed_ready() -> bool:
    return bool(torch.distributed.is_available() and torch.distributed.is_initialized())


def _sharded_classes() -> tuple[type[Any], ...]:
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    return (FSDPModule, FullyShardedDataParallel)


@dataclass
class DataParallel:
    """How a model is trained across processes (resolved once per :class:`~bilevel_mtl.BalancedOptimizer`)."""

    group: ProcessGroup | None = None
    """The ranks whose batches form the global batch; ``None``: a single process."""
    wrappers: list[DistributedDataParallel] = field(default_factory=list)
    """The model's DDP wrappers (their forward is kept silent during extra evaluations)."""
    sharded: bool = False
    """Whether the parameters are sharded (FSDP)."""

    @classmethod
    def of(
        cls, model: nn.Module, process_group: ProcessGroup | Literal["auto"] | None = "auto"
    ) -> DataParallel:
        """Inspect ``model``: ``"auto"`` takes DDP's group or, for FSDP, the default group."""
        if not _distributed_ready():
            if process_group not in (None, "auto"):
                raise ValueError("a process_group was given but torch.distributed is not initialized")
            return cls()
        wrappers = [m for m in model.modules() if isinstance(m, DistributedDataParallel)]
        sharded_types = _sharded_classes()
        sharded = any(isinstance(m, sharded_types) for m in model.modules())
        if process_group != "auto":
            group = process_group
        elif wrappers:
            group = wrappers[0].process_group
        elif sharded:
            fsdp1 = [m for m in model.modules() if isinstance(m, sharded_types[1])]
            group = fsdp1[0].process_group if fsdp1 else torch.distributed.group.WORLD
        else:
            group = None
        return cls(group=group, wrappers=wrappers, sharded=sharded)

    @property
    def world_size(self) -> int:
        """The number of ranks in :attr:`group` (1 on a single process)."""
        return 1 if self.group is None else int(torch.distributed.get_world_size(self.group))

    def refuse_sharded(self, what: str) -> None:
        """Raise ``NotImplementedError`` naming ``what`` when the parameters are sharded."""
        if self.sharded:
            raise NotImplementedError(f"{what} {SHARDED_REFUSAL}")

    @contextmanager
    def silent_forward(self) -> Iterator[None]:
        """Run extra forward passes (look-ahead, post-step) without DDP noticing them.

        A DDP forward with autograd on prepares its reducer for a backward pass, and
        the first forward after a training forward broadcasts the buffers (BatchNorm
        statistics) from rank 0. Neither belongs to an evaluation at other parameters:
        the flags DDP's own ``no_sync`` uses are cleared for the duration and restored.
        """
        saved = [(m.require_backward_grad_sync, m.require_forward_param_sync) for m in self.wrappers]
        for module in self.wrappers:
            module.require_backward_grad_sync = False
            module.require_forward_param_sync = False
        try:
            yield
        finally:
            for module, (backward_sync, forward_sync) in zip(self.wrappers, saved, strict=True):
                module.require_backward_grad_sync = backward_sync
                module.require_forward_param_sync = forward_sync


def all_reduce_mean(tensors: Sequence[Tensor], group: ProcessGroup | None) -> list[Tensor]:
    """Mean over the ranks of ``group`` of each tensor (new tensors; inputs untouched).

    Tensors are packed into one buffer per dtype and device, divided by the world size
    and summed, as DDP averages gradients. ``group=None`` returns copies.
    """
    out = [t.detach().clone() for t in tensors]
    if group is None:
        return out
    world = torch.distributed.get_world_size(group)
    packs: dict[tuple[torch.dtype, torch.device], list[int]] = {}
    for index, tensor in enumerate(out):
        packs.setdefault((tensor.dtype, tensor.device), []).append(index)
    for indices in packs.values():
        flat = torch.cat([out[i].reshape(-1) for i in indices])
        flat.div_(world)
        torch.distributed.all_reduce(flat, group=group)
        offset = 0
        for i in indices:
            n = out[i].numel()
            out[i] = flat[offset : offset + n].view_as(out[i])
            offset += n
    return out


def all_reduce_gradients(
    grads: Sequence[Tensor | None], params: Sequence[Tensor], group: ProcessGroup | None, batch: Sequence[int]
) -> list[Tensor | None]:
    """Average per-parameter gradients over the ranks, as DDP averages ``.grad``.

    A parameter unused on some ranks (``None`` there) counts as a zero gradient on
    them, like DDP with ``find_unused_parameters``; it stays ``None`` only if no rank
    used it. ``batch`` is the leading shape of batched gradients (``[k]`` or ``[]``).
    """
    if group is None:
        return list(grads)
    filled = [
        g if g is not None else p.new_zeros((*batch, *p.shape)) for g, p in zip(grads, params, strict=True)
    ]
    used = torch.tensor([g is not None for g in grads], dtype=torch.float64)
    *averaged, used_anywhere = all_reduce_mean([*filled, used], group)
    return [g if u > 0 else None for g, u in zip(averaged, used_anywhere.tolist(), strict=True)]


def all_gather_batch(tensor: Tensor, group: ProcessGroup | None, dim: int = 0) -> Tensor:
    """Every rank's ``tensor`` concatenated along ``dim`` in rank order (the global batch's rows).

    Needs equal shapes on every rank (equal per-rank batch sizes); ``group=None`` returns
    ``tensor`` itself.
    """
    if group is None:
        return tensor
    world = torch.distributed.get_world_size(group)
    shape = torch.tensor(tensor.shape, dtype=torch.int64)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    torch.distributed.all_gather(shapes, shape, group=group)
    if any(not torch.equal(s, shape) for s in shapes):
        raise ValueError(
            "gathering the global batch needs the same batch size on every rank, got shapes "
            f"{[tuple(s.tolist()) for s in shapes]}; use equal per-rank batches (e.g. drop_last=True)"
        )
    parts = [torch.empty_like(tensor) for _ in range(world)]
    torch.distributed.all_gather(parts, tensor.detach().contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def global_losses(losses: Tensor, group: ProcessGroup | None = None) -> Tensor:
    """The losses' mean over the ranks, differentiable through *this* rank's graph.

    For a training loop you own under DDP: the balancer must decide from the
    global-batch losses (identical on every rank), while ``backward`` must run through
    the local graph (DDP averages the resulting gradients, giving the gradient of the
    global mean loss)::

        losses = global_losses(local_losses)            # values: the mean over ranks
        w = balancer.weights(losses.detach())           # identical on every rank
        (w @ losses).backward(); optimizer.step()
        balancer.update(losses.detach(), global_losses(local_losses_after))  # after the step

    ``group=None`` uses the default group when torch.distributed is initialized, and
    returns ``losses`` unchanged otherwise.
    """
    if group is None:
        if not _distributed_ready():
            return losses
        group = torch.distributed.group.WORLD
    (values,) = all_reduce_mean([losses], group)
    result: Tensor = _GlobalLosses.apply(losses, values.to(losses))  # type: ignore[no-untyped-call]
    return result


class _GlobalLosses(torch.autograd.Function):
    """Forward: the global ``values`` (copied, exact); backward: the gradient to the local losses."""

    @staticmethod
    def forward(ctx: Any, local: Tensor, values: Tensor) -> Tensor:
        del ctx, local
        return values.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        del ctx
        return grad, None
