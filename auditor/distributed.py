"""Sweeping across processes: `torchrun --nproc-per-node N -m auditor audit ...`, on one node or several.

Each rank audits one contiguous block of the samples and writes its shards into the shared run directory (on
several nodes, put run.out_dir on a shared filesystem); rank 0 then merges every shard and writes the tables, the
findings and the report, exactly as a single process would.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def block(self, count: int) -> range:
        """This rank's contiguous share of `count` samples."""
        return range(self.rank * count // self.world, (self.rank + 1) * count // self.world)

    def device(self, requested: torch.device) -> torch.device:
        """One GPU per local rank; CPU ranks share the CPU."""
        if requested.type == "cuda" and self.world > 1:
            return torch.device("cuda", self.local_rank)
        return requested


def init_ranks() -> Ranks:
    """Join the process group torchrun describes in the environment; a plain launch is one rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=6))  # a long sweep waits at barriers
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


def shutdown(ranks: Ranks) -> None:
    if ranks.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
