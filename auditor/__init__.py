"""auditor: debug trained image classifiers through their data with class activation maps."""

__version__ = "0.1.0"
