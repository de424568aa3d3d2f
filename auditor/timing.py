"""Seconds per stage of a run, for manifest.json's `timings`.

A stage is timed where its work is done (`with stage("causal_check_s"):` inside the causal check), so the
orchestration that calls it needs no timing code. Stages nest and each records its own seconds only: an inner
stage's time is taken out of the stage around it, so the stages of a run add up to its total. Outside
`recording()` a stage records nothing.

Stages also count their work (`count`): the images they decode from files and the images they run through the
model. manifest.json keeps the counts (`work`), so a test can hold every stage after the sweep to its budget
without timing anything, and the process's peak memory (`peak_memory_mib`).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

_open: list[list[float]] = []  # per open stage: the seconds its inner stages took
_names: list[str] = []  # the open stages' names, innermost last
_timings: dict[str, float] | None = None
_work: dict[str, dict[str, int]] | None = None


@contextlib.contextmanager
def recording() -> Iterator[dict[str, float]]:
    """Collect the stages timed inside the block into the dict it yields (name -> seconds)."""
    global _timings, _work
    previous, _timings = _timings, {}
    previous_work, _work = _work, {}
    try:
        yield _timings
    finally:
        _timings, _work = previous, previous_work


def work_counts() -> dict[str, dict[str, int]]:
    """Stage name (without its "_s") -> counts such as images_read and forward_images, while recording."""
    return {name: dict(counts) for name, counts in (_work or {}).items()}


def count(**amounts: int) -> None:
    """Add to the innermost open stage's counts (to "sweep" outside any stage: the sweep times itself)."""
    if _work is None:
        return
    name = _names[-1].removesuffix("_s") if _names else "sweep"
    counts = _work.setdefault(name, {})
    for key, amount in amounts.items():
        counts[key] = counts.get(key, 0) + int(amount)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Add the block's seconds, less those of stages nested inside it, to `name` (a stage may run several times)."""
    started = time.perf_counter()
    _open.append([0.0])
    _names.append(name)
    try:
        yield
    finally:
        _names.pop()
        inner = _open.pop()[0]
        elapsed = time.perf_counter() - started
        if _open:
            _open[-1][0] += elapsed
        if _timings is not None:
            _timings[name] = _timings.get(name, 0.0) + elapsed - inner


def peak_memory_mib() -> float:
    """This process's peak resident memory in MiB: Linux's VmHWM, which counts this program's own pages only.
    Elsewhere getrusage's ru_maxrss, which on Linux would also count a large parent's pages when the process was
    started from it (the kernel carries the high-water mark across fork and exec): a benchmark holding its images
    while it starts the audit would read as the audit's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # noqa: PLC0415 - Unix only: the module stays importable everywhere

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes, bytes on macOS
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
