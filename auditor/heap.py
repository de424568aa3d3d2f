"""Large temporary arrays handed back to the operating system when freed, so that peak memory is what is live.

glibc's malloc serves an allocation above its mmap threshold (128 KiB at start) from a fresh mapping, unmapped
again on free; but each such free raises the threshold to that allocation's size (up to 32 MiB), so later
temporaries of that size come from the heap, where freed blocks stay resident between fragments. After the sweep,
the rules and the report allocate many short-lived arrays of a few to a few tens of MiB (similarity chunks of the
near-duplicate search, cleanlab's [N, C] copies, tables): measured at 1,000 classes x 8 images of 48 px, the
audit's peak fell from 1,229 to 1,067 MiB with a fixed 1 MiB threshold (`map_large_allocations`).

The model's own passes are the exception (`heap_for_forwards`): a CPU forward's activations reuse the heap from
batch to batch, and mapping each afresh cost 10-15 % (resnet18, 56 images of 224 px: 2.45 s against 2.2 s), so
while the model runs the threshold is glibc's ceiling, as in the sweep. The sweep keeps glibc's default.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from collections.abc import Iterator

from auditor.hooks import forward_hook, forward_pre_hook

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
LARGE = 1 << 20  # bytes: allocations from this size are mapped afresh and unmapped on free
SESSION = 32 << 20  # glibc's ceiling for its dynamic threshold on 64-bit: where a long session's threshold ends up
_set = False


@functools.cache
def _libc():
    """glibc, or None elsewhere (macOS, Windows, musl: their allocators do not take this setting)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None
    except OSError:
        return None


def _threshold(size: int) -> bool:
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, int(size)) == 1)


def map_large_allocations(threshold: int = LARGE) -> bool:
    """From now on, allocations of `threshold` bytes or more are mapped afresh and returned to the OS when freed
    (a fixed mmap threshold, which also stops glibc from raising it). Returns whether the allocator took it."""
    global _set
    _set = _threshold(threshold)
    return _set


@contextlib.contextmanager
def heap_for_forwards(model) -> Iterator[None]:
    """Inside the block, while `model` runs (from its forward pre-hook to its forward hook), glibc's ceiling
    instead of `map_large_allocations`' threshold: its activations reuse the heap as in the sweep. Nothing where
    the threshold was never set or the model takes no hooks."""
    def running(*_) -> None:
        _threshold(SESSION)

    def done(*_) -> None:
        _threshold(LARGE)

    if not _set:
        yield
        return
    with forward_pre_hook(model, running, required=False) as hooked, \
            (forward_hook(model, done) if hooked else contextlib.nullcontext()):  # no Python hooks: as the rest runs
        yield


def hand_back() -> None:
    """After the audit, in a process that goes on (a notebook, a training script calling auditor.api): the
    threshold at glibc's own ceiling, where its dynamic one would have settled, so that the session's later
    allocations are not each mapped afresh. glibc cannot return to the dynamic threshold once it was set."""
    global _set
    if _set:
        _threshold(SESSION)
    _set = False
