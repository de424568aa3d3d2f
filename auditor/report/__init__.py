"""The HTML report: rendered from a run directory alone (no model, no GPU), one self-contained file."""

from auditor.report.html import render_report

__all__ = ["render_report"]
