"""Entry points of the processes the reliability tests start (DDP and FSDP ranks)."""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import runpy
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from reliability_cases import CASE_NAMES, Net, global_batch, shard, train
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import bilevel_mtl as bm
from bilevel_mtl.balancers import MGDAUB

UNSYNCED_CONTROLS = ["marigold", "marigold_faithful"]
"""Cases also run with ``process_group=None`` (no agreement between ranks): they must diverge."""


def _attempt(name: str, steps: int, rank: int, world: int, **kwargs: Any) -> object:
    try:
        return train(name, steps, rank=rank, world=world, **kwargs)
    except Exception as error:  # reported per case by the tests
        return f"{type(error).__name__}: {error}"


def _fully_shard(net: Net) -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    fully_shard(net.trunk, mesh=mesh)
    fully_shard(net, mesh=mesh)
    return net


def _batchnorm_buffers(rank: int, world: int, steps: int) -> list[dict[str, torch.Tensor]]:
    """BatchNorm buffers after each step: faithful MARIGOLD (extra forwards) against plain DDP.

    Returns, per step, the real model's buffers and those of a twin trained by plain DDP
    with the weights MARIGOLD reported; they must be equal on every rank.
    """

    def network() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).double()

    model, twin = DistributedDataParallel(network()), DistributedDataParallel(network())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=0.02)
    trainer = bm.BalancedOptimizer(model, optimizer, bm.MarigoldFaithful(3, lr=0.05))
    out = []
    for step in range(steps):
        x, y = shard(global_batch(step), rank, world)
        x, y = x.reshape(-1, 5), y.reshape(-1, 3)
        record = trainer.step(lambda x=x, y=y: ((model(x) - y) ** 2).mean(0))
        twin_optimizer.zero_grad()
        (record.weights @ ((twin(x) - y) ** 2).mean(0)).backward()
        twin_optimizer.step()
        out.append(
            {
                "model": torch.cat([b.reshape(-1) for b in model.module.buffers()]),
                "twin": torch.cat([b.reshape(-1) for b in twin.module.buffers()]),
            }
        )
    return out


def _uneven_representation(rank: int) -> str:
    """MGDA-UB with shards of 4 and 6 samples: every rank must refuse (not hang)."""
    torch.manual_seed(0)
    net = Net().double()
    model = DistributedDataParallel(net)
    balancer = MGDAUB(3, shared=net.trunk)
    trainer = bm.BalancedOptimizer(model, torch.optim.Adam(model.parameters()), balancer)
    x, y = global_batch(0)
    size = 4 + 2 * rank
    try:
        trainer.step(lambda: ((model(x[0, :size]) - y[0, :size]) ** 2).mean(0))
    except ValueError as error:
        return str(error)
    return "no error"


def data_parallel_rank(
    rank: int, world: int, init_file: str, out_dir: str, steps: int, tutorial: str, port: int
) -> None:
    """One rank: every case under DDP and under FSDP2, the unsynchronized controls, then the
    tutorial's script as ``torchrun`` would start it (its environment variables, ``env://``)."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    results: dict[str, dict[str, object]] = {"ddp": {}, "fsdp": {}, "unsynced": {}}
    for name in CASE_NAMES:
        results["ddp"][name] = _attempt(name, steps, rank, world, wrap=DistributedDataParallel)
        results["fsdp"][name] = _attempt(name, steps, rank, world, wrap=_fully_shard)
    for name in UNSYNCED_CONTROLS:
        results["unsynced"][name] = _attempt(
            name, steps, rank, world, wrap=DistributedDataParallel, trainer_kwargs={"process_group": None}
        )
    results["batchnorm"] = {"buffers": _batchnorm_buffers(rank, world, steps)}
    results["uneven"] = {"mgda_ub": _uneven_representation(rank)}
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    gc.collect()  # free every DDP reducer (they hold the group) while the group is alive
    dist.barrier()
    dist.destroy_process_group()
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    with open(Path(out_dir) / f"tutorial{rank}.txt", "w") as out, contextlib.redirect_stdout(out):
        runpy.run_path(tutorial, run_name="__main__")
