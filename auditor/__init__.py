"""auditor: debug trained image classifiers through their data with class activation maps.

    import auditor
    run = auditor.audit(model, dataset, classes=[...], out="reports/run")   # auditor.api.audit
    run = auditor.load("reports/run")

The pipeline itself is `auditor.pipeline` (the CLI and the API both run it). Imported lazily: `import auditor`
(and `auditor --help`) loads no torch.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["Run", "audit", "load", "__version__"]


def __getattr__(name: str):
    if name in ("audit", "load", "Run"):
        return getattr(importlib.import_module("auditor.api"), name)
    raise AttributeError(f"module 'auditor' has no attribute {name!r}")
