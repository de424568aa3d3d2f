"""Call-scoped forward hooks: registered on entry, removed in `finally` (Captum's shape).

Every hook `auditor` puts on a caller's model goes through `forward_hooks`, so no code path can leave one behind,
whether the block returns, raises, or a later registration fails half-way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

from torch import nn

Hook = Callable  # (module, inputs, output) -> replacement output or None


@contextlib.contextmanager
def forward_hooks(pairs: Iterable[tuple[nn.Module, Hook]]) -> Iterator[None]:
    """Register each `(module, hook)` as a forward hook for the block; every one is removed on exit."""
    handles = []
    try:
        for module, hook in pairs:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def forward_hook(module: nn.Module, hook: Hook) -> contextlib.AbstractContextManager[None]:
    """One hook on one module for the block: `forward_hooks([(module, hook)])`."""
    return forward_hooks([(module, hook)])
