"""Call-scoped forward hooks and forward pre-hooks: registered on entry, removed in `finally` (Captum's shape).

Every hook `auditor` puts on a caller's model goes through `forward_hooks` or `forward_pre_hook`, so no code path
can leave one behind, whether the block returns, raises, or a later registration fails half-way.
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


@contextlib.contextmanager
def forward_pre_hook(module: nn.Module, hook: Callable, required: bool = True) -> Iterator[bool]:
    """`hook` (module, inputs) -> replacement inputs or None, as a forward pre-hook for the block; removed on exit.
    With `required=False` a module that takes no Python hooks (a scripted one) runs the block without it, and the
    block is told so (it gets False)."""
    try:
        handle = module.register_forward_pre_hook(hook)
    except (AttributeError, RuntimeError):
        if required:
            raise
        handle = None
    try:
        yield handle is not None
    finally:
        if handle is not None:
            handle.remove()
