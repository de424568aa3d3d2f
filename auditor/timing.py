"""Seconds per stage of a run, for manifest.json's `timings`.

A stage is timed where its work is done (`with stage("causal_check_s"):` inside the causal check), so the
orchestration that calls it needs no timing code. Stages nest and each records its own seconds only: an inner
stage's time is taken out of the stage around it, so the stages of a run add up to its total. Outside
`recording()` a stage records nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

_open: list[list[float]] = []  # per open stage: the seconds its inner stages took
_timings: dict[str, float] | None = None


@contextlib.contextmanager
def recording() -> Iterator[dict[str, float]]:
    """Collect the stages timed inside the block into the dict it yields (name -> seconds)."""
    global _timings
    previous, _timings = _timings, {}
    try:
        yield _timings
    finally:
        _timings = previous


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Add the block's seconds, less those of stages nested inside it, to `name` (a stage may run several times)."""
    started = time.perf_counter()
    _open.append([0.0])
    try:
        yield
    finally:
        inner = _open.pop()[0]
        elapsed = time.perf_counter() - started
        if _open:
            _open[-1][0] += elapsed
        if _timings is not None:
            _timings[name] = _timings.get(name, 0.0) + elapsed - inner
