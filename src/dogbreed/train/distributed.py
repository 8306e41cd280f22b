"""Data-parallel training across processes: ``torchrun --nproc-per-node N -m dogbreed.cli train ...``.

torchrun starts N copies of the command and sets RANK / WORLD_SIZE / LOCAL_RANK; `init` joins them into one
process group (NCCL on GPUs, gloo on CPU). Then:

- the model is wrapped in DistributedDataParallel, which averages gradients across processes after every backward;
- each process takes its share of every global batch (``batch_size`` stays the *global* batch, split evenly):
  photos through a `DistributedSampler` seeded per epoch, cached features by the same interleaving. With the same
  seed, the union of the shards of step k is the batch a single process would take at step k, so a run on N
  processes follows the single-process run (up to float summation order);
- training metrics are summed over processes; validation runs whole on every process and rank 0's numbers are
  broadcast, so every process takes the same early-stopping decision;
- rank 0 alone creates the run directory and writes checkpoints, metrics, the model and the reports; the others
  wait at barriers. Resuming is unchanged: ``--resume RUN_DIR`` under torchrun, or without it.

Without torchrun (no WORLD_SIZE, or 1) everything here is a no-op and training runs in one process as before.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def from_env() -> Dist:
    """The process's place in a torchrun launch (RANK, WORLD_SIZE, LOCAL_RANK), or `SINGLE`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(device: str) -> tuple[Dist, str]:
    """Join the torchrun process group when there is one; returns it and this process's device.

    On CUDA each process takes GPU ``LOCAL_RANK`` and NCCL; on CPU gloo, with the cores split between the processes
    so N processes do not each start one thread per core.
    """
    d = from_env()
    if not d.enabled:
        return d, device
    if device.startswith("cuda"):
        device = f"cuda:{d.local_rank}"
        torch.cuda.set_device(d.local_rank)
    else:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", d.world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return d, device


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(batch_size: int, d: Dist) -> int:
    """The global batch split evenly; an uneven split would weight some photos more than others."""
    if batch_size % d.world:
        raise ConfigError(f"batch_size {batch_size} must be divisible by the {d.world} processes (it is the global "
                          "batch)")
    return batch_size // d.world


def wrap(net: nn.Module, d: Dist, device: str) -> nn.Module:
    """DistributedDataParallel around ``net`` (which keeps its parameters, so optimizer and checkpoints use it
    directly). DDP broadcasts rank 0's weights at construction, so every process starts from the same model."""
    if not d.enabled:
        return net
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [torch.device(device).index] if device.startswith("cuda") else None
    return DDP(net, device_ids=ids)


def sum_all(values: list[float], d: Dist, device: str) -> list[float]:
    """Element-wise sum over processes (training loss x n, correct, n)."""
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def from_main(obj: Any, d: Dist) -> Any:
    """Rank 0's ``obj`` on every process (any picklable object)."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


@contextlib.contextmanager
def main_first(d: Dist) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. fills the feature cache), the others after it, reading what it wrote."""
    if d.enabled and not d.is_main:
        dist.barrier()
    yield
    if d.enabled and d.is_main:
        dist.barrier()


def launch(nproc: int, argv: list[str]) -> int:
    """``dogbreed train --nproc N ...``: the same command under torchrun on this machine (a standalone rendezvous
    on a free local port); returns torchrun's exit code."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "dogbreed.cli", *argv]
    return subprocess.call(cmd)


def strip_option(argv: list[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE`` (how --nproc is removed before relaunching)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out
