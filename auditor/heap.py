"""Large temporary arrays handed back to the operating system when freed, so that peak memory is what is live.

glibc's malloc serves an allocation above its mmap threshold (128 KiB at start) from a fresh mapping, unmapped
again on free; but each such free raises the threshold to that allocation's size (up to 32 MiB), so later
temporaries of that size come from the heap, where freed blocks stay resident between fragments. After the sweep,
the checks allocate many short-lived arrays of a few to a few tens of MiB (similarity chunks of the near-duplicate
search, cleanlab's [N, C] copies, the model's activations on a check's batch): measured at 1,000 classes x 8 images
of 48 px, the audit's peak fell from 1,229 to 1,067 MiB with a fixed 1 MiB threshold. The sweep keeps glibc's
default (its batches reuse the same sizes, where the heap is faster).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

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


def map_large_allocations(threshold: int = LARGE) -> bool:
    """From now on, allocations of `threshold` bytes or more are mapped afresh and returned to the OS when freed
    (a fixed mmap threshold, which also stops glibc from raising it). Returns whether the allocator took it."""
    global _set
    libc = _libc()
    _set = bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1)
    return _set


def hand_back() -> None:
    """After the audit, in a process that goes on (a notebook, a training script calling auditor.api): the
    threshold at glibc's own ceiling, where its dynamic one would have settled, so that the session's later
    allocations are not each mapped afresh. glibc cannot return to the dynamic threshold once it was set."""
    global _set
    libc = _libc()
    if _set and libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, SESSION)
    _set = False
