"""Data-parallel EM over ``torch.distributed``: ``pcc train --nproc N``, or any launch under ``torchrun``.

Every process holds the whole model and the whole data set and walks the same shuffled batches; process
``r`` of ``N`` evaluates rows ``r, r+N, ...`` of each batch. Before every EM update the flows are summed over
the processes (``all_reduce``), so each process applies the update that one process would have computed
from the whole batch: the parameters stay identical everywhere. NCCL on GPUs, gloo on CPUs. Only rank 0
writes checkpoints and logs.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Group:
    """This process's place in the group (``world == 1``: no distribution at all)."""

    rank: int = 0
    world: int = 1

    def shard(self, idx):
        """This process's rows of a global batch."""
        return idx[self.rank :: self.world]

    def sum_(self, tensors: list[torch.Tensor]) -> None:
        """Sum tensors over the group, in place."""
        if self.world > 1:
            for t in tensors:
                if t.numel():
                    dist.all_reduce(t)

    def total(self, value: float, device) -> float:
        """A float summed over the group."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t.item())


def from_environment() -> Group:
    """The group torchrun (or :func:`spawn`) describes in RANK/WORLD_SIZE, initialised on first use."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Group()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", os.environ["RANK"])))
    return Group(dist.get_rank(), dist.get_world_size())


def spawn(nproc: int, fn, *args) -> None:
    """Run ``fn(*args)`` in ``nproc`` processes forming one group (what ``pcc train --nproc`` does)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_entry, args=(nproc, port, fn, args), nprocs=nproc, join=True)


def _entry(rank: int, nproc: int, port: int, fn, args) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    try:
        fn(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
