"""What changed between two audits of the same data: the before/after view of a retraining.

`diff_runs(A, B, OUT)` reads two run directories (never the model) and writes OUT/diff.json and OUT/diff.html:
accuracy, per-class metrics side by side, and findings that appeared, were resolved or persist. Findings are
matched by kind, classes and pair (not by id, which is only a rank within one run).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from pathlib import Path

from auditor.report.html import environment, fmt_number
from auditor.report.tables import (
    SEVERITIES,
    finding_key,
    per_class_columns,
    per_class_metrics,
    read_causal,
    severity_counts,
    sorted_findings,
)
from auditor.runs import Run, clean_floats, load_run, write_atomic, write_json

log = logging.getLogger("auditor")
SCHEMA_VERSION = 1


def diff_runs(run_a: str | Path, run_b: str | Path, out_dir: str | Path) -> tuple[Path, Path]:
    """Compare run A (before) with run B (after); write diff.html and diff.json into out_dir."""
    before, after = load_run(run_a), load_run(run_b)
    result = compare(before, after)
    out_dir = Path(out_dir)
    json_path, html_path = out_dir / "diff.json", out_dir / "diff.html"
    write_json(json_path, result)
    page = environment().get_template("diff.html").render(
        diff=result, columns=per_class_columns(), severities=SEVERITIES
    )
    write_atomic(html_path, page)
    changes = result["findings"]
    log.info(
        "diff: accuracy %s -> %s; %d findings appeared, %d resolved; wrote %s and %s",
        fmt_number(result["accuracy"]["a"]),
        fmt_number(result["accuracy"]["b"]),
        len(changes["appeared"]),
        len(changes["resolved"]),
        html_path,
        json_path,
    )
    return html_path, json_path


def compare(a: Run, b: Run) -> dict:
    """The diff as plain data (what diff.json holds)."""
    fingerprints = [(run.manifest.get("fingerprints") or {}) for run in (a, b)]
    warnings = []
    if fingerprints[0].get("data") != fingerprints[1].get("data"):
        warnings.append(
            "The two runs audited different data (data fingerprints differ): changes may come from the data, "
            "not the model."
        )
    if a.classes != b.classes:
        warnings.append("The runs have different class lists; classes are matched by name.")
    findings_a, findings_b = sorted_findings(a.findings()), sorted_findings(b.findings())
    return clean_floats(
        {
            "schema_version": SCHEMA_VERSION,
            "runs": {"a": _describe(a), "b": _describe(b)},
            "warnings": warnings,
            "accuracy": _change(a.summary.get("accuracy"), b.summary.get("accuracy")),
            "n_images": _change(a.summary.get("n_images"), b.summary.get("n_images")),
            "severity_counts": {"a": severity_counts(findings_a), "b": severity_counts(findings_b)},
            "per_class": per_class_changes(a, b),
            "findings": match_findings(findings_a, findings_b),
        }
    )


def _describe(run: Run) -> dict:
    fingerprints = run.manifest.get("fingerprints") or {}
    return {
        "path": str(run.path),
        "created": run.manifest.get("created"),
        "model_fingerprint": fingerprints.get("model"),
        "data_fingerprint": fingerprints.get("data"),
        "n_images": run.summary.get("n_images"),
        "accuracy": run.summary.get("accuracy"),
    }


def _change(before, after) -> dict:
    usable = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (before, after))
    return {"a": before, "b": after, "delta": after - before if usable else None}


def per_class_changes(a: Run, b: Run) -> list[dict]:
    """Per-class metrics of both runs side by side, classes matched by name (A's order, then B's new ones)."""
    tables = {}
    for side, run in (("a", a), ("b", b)):
        table = per_class_metrics(run.records, run.classes, read_causal(run.path))
        tables[side] = {row["class"]: row for row in table.to_dict("records")}
    names = list(dict.fromkeys(list(a.classes) + list(b.classes)))
    rows = []
    for name in names:
        row = {"class": name}
        for column in per_class_columns():
            before, after = (tables[side].get(name, {}).get(column.name) for side in ("a", "b"))
            row[column.name] = _change(before, after)
        rows.append(row)
    return rows


def match_findings(findings_a: list[dict], findings_b: list[dict]) -> dict:
    """Findings of B not in A (appeared), of A not in B (resolved), and in both (persisting)."""
    pending = defaultdict(list)
    for finding in findings_a:
        pending[finding_key(finding)].append(finding)
    appeared, persisting = [], []
    for finding in findings_b:
        matches = pending.get(finding_key(finding))
        if matches:
            before = matches.pop(0)
            persisting.append(
                {"a": before, "b": finding, "severity_changed": before.get("severity") != finding.get("severity")}
            )
        else:
            appeared.append(finding)
    resolved = [finding for matches in pending.values() for finding in matches]
    return {"appeared": appeared, "resolved": sorted_findings(resolved), "persisting": persisting}
