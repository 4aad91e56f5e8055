"""Data-parallel multi-task training with a balancer: torch.distributed on CPU (gloo).

    python examples/ddp_gloo.py --world-size 2 --steps 30

Every process holds a DistributedDataParallel replica and computes the task losses
on its shard of each batch. The balancer is given the task losses *averaged over
the processes*, so every process computes the same weights and the same upper-level
update, while DDP averages the gradients of ``weights @ losses``. With equal shards
and mean losses this is the same training as one process on the whole batch
(``--world-size 1``), up to rounding.

It uses the low-level path with ``Marigold()`` (``weights`` → ``backward`` → ``step`` →
``update``, with the losses on the same batch after the step on the steps the default
re-measures, every 16th); see the DDP tutorial
in the documentation for what is and is not verified.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

import bilevel_mtl as bm

NUM_TASKS = 2
BATCH = 32


def make_data(dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The same two-task regression data on every process (drawn from a fixed seed)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=generator, dtype=dtype)
    y = torch.stack([x[:, 0] - x[:, 1], 5 * torch.sin(x[:, 2])], dim=1)
    return x, y


def task_losses(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return ((model(x) - y) ** 2).mean(dim=0)


def global_mean(losses: Tensor) -> Tensor:
    """The task losses averaged over all processes (detached); the losses themselves alone."""
    total = losses.detach().clone()
    if dist.is_initialized():
        dist.all_reduce(total)
        total /= dist.get_world_size()
    return total


def train(rank: int, world_size: int, steps: int, dtype: torch.dtype) -> dict[str, Tensor]:
    """Train this process's replica; return its final parameters and balancer state."""
    torch.manual_seed(0)  # the same initial model on every process
    net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, NUM_TASKS)).to(dtype)
    model = DistributedDataParallel(net) if world_size > 1 else net
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    balancer = bm.Marigold(NUM_TASKS, seed=0)
    x, y = make_data(dtype)
    batches = torch.Generator().manual_seed(1)  # the same global batches on every process
    for _ in range(steps):
        batch = torch.randint(0, len(x), (BATCH,), generator=batches)
        shard = batch.view(world_size, -1)[rank]
        losses = task_losses(model, x[shard], y[shard])
        before = global_mean(losses)
        weights = balancer.weights(before)
        optimizer.zero_grad()
        (weights @ losses).backward()  # DDP averages the gradients over the processes
        optimizer.step()
        after = None
        if balancer.needs_losses_after:  # the default re-measures its batch on every 16th step
            with torch.no_grad():
                after = global_mean(task_losses(model, x[shard], y[shard]))
        balancer.update(before, after)  # the upper-level step, the same on every process
    state = {f"param.{name}": p.detach().clone() for name, p in net.named_parameters()}
    state.update({f"balancer.{k}": v for k, v in balancer.state_dict().items() if isinstance(v, Tensor)})
    return state


def _worker(rank: int, world_size: int, steps: int, dtype: torch.dtype, folder: str) -> None:
    torch.set_num_threads(1)
    store = f"file://{Path(folder) / 'store'}"
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world_size)
    try:
        torch.save(train(rank, world_size, steps, dtype), Path(folder) / f"rank{rank}.pt")
    finally:
        gc.collect()  # free DDP's reducer (it holds the group) before the group is destroyed
        dist.destroy_process_group()


def run(world_size: int, steps: int, dtype: torch.dtype = torch.float32) -> list[dict[str, Tensor]]:
    """Train with ``world_size`` processes (1: no torch.distributed); each process's final state."""
    if BATCH % world_size:
        raise ValueError(f"the batch of {BATCH} must split evenly over {world_size} processes")
    if world_size == 1:
        return [train(0, 1, steps, dtype)]
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_worker, args=(world_size, steps, dtype, folder), nprocs=world_size, join=True)
        return [torch.load(Path(folder) / f"rank{r}.pt") for r in range(world_size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    states = run(args.world_size, args.steps)
    spread = max(float((s[k] - states[0][k]).abs().max()) for s in states for k in states[0])
    print(f"{args.world_size} process(es), {args.steps} steps; largest difference between replicas: {spread}")


if __name__ == "__main__":
    main()
