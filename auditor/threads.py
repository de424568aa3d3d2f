"""CPU threads that fit the machine: as many as the process may really use, and one for small operations.

torch sizes its thread pool from the machine's cores, not from what a container's CPU quota or the process's
affinity allows; a pool larger than the CPUs it gets makes every parallel region wait for threads that are not
scheduled (on this project's shared 2-core machine, a 1,000-class audit's tiny `cdist` calls took 12 ms each with
two threads and 0.013 ms with one).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 (cpu.max) or v1 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cpus, math.ceil(quota)) if quota else cpus)


def _cgroup_quota() -> float | None:
    """The CPU quota in CPUs (quota / period), or None where there is none or it cannot be read."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def fit_threads() -> int:
    """Lower torch's thread pool to the usable CPUs when it is larger (never raise a count the user set lower)."""
    usable = usable_cpus()
    if torch.get_num_threads() > usable:
        torch.set_num_threads(usable)
    return torch.get_num_threads()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one CPU thread. Single-image forwards and small tensor operations gain little from a
    parallel region, and on a busy machine every region waits for its other threads to be scheduled (on this
    project's shared 2-core CPU, prepare took 2 to 11 s with 2 threads, 0.9 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
