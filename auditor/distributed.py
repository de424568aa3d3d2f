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

from auditor.errors import AuditorError


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


def backend_for(device: torch.device) -> str:
    """NCCL for ranks that sweep on GPUs, gloo for CPU ranks, whatever else the machine has: NCCL puts every
    rank's barrier on a GPU, and two CPU ranks on a one-GPU machine would both claim GPU 0 (`--device cpu` under
    torchrun on an H200 failed so)."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_ranks(device: torch.device) -> Ranks:
    """Join the process group torchrun describes in the environment; a plain launch is one rank. `device` is the
    one the sweep asked for (sweep.device, resolved)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and local_rank >= torch.cuda.device_count():
        raise AuditorError(
            f"torchrun started local rank {local_rank}, but this node has {torch.cuda.device_count()} visible "
            "GPU(s): one rank runs per GPU, so pass --nproc-per-node at most that many, or --device cpu.")
    if not dist.is_initialized():
        # A long sweep waits at barriers.
        dist.init_process_group(backend_for(device), timeout=datetime.timedelta(hours=6))
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank)


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[ranks.local_rank])  # this rank's own GPU, not GPU 0
        else:
            dist.barrier()


def shutdown(ranks: Ranks) -> None:
    if ranks.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
