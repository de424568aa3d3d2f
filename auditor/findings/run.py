"""Judge a finished run directory from its files alone and write findings.json and label_errors.csv.

`auditor.judge` is the full path with the model (place evidence, causal check, counterfactual maps); this one
needs no model: it folds in a causal.csv the run directory already holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from auditor.config import FindingsConfig
from auditor.findings.causal_evidence import (
    typical_background_gap,
    unexplained,
    with_causal,
)
from auditor.findings.context import Context
from auditor.findings.duplicate_conflict import with_duplicates
from auditor.findings.model_health import cap_findings
from auditor.findings.record import SCHEMA_VERSION, Finding, validate_findings
from auditor.findings.registry import find_all, number, scope_of
from auditor.findings.suspected_label_error import label_error_table, shortcut_cues, suspects_of
from auditor.runs import load_run, write_atomic, write_json

BATCH_NORM_FILE = "batch_norm.json"  # auditor.batch_norm_check's figures, which model_health reads


def run_context(run, cfg: FindingsConfig) -> Context:
    return Context(run.records, run.maps, run.masks, run.classes, cfg, probs=run.probs,
                   batch_norm=read_batch_norm(run.path), features=run.features, thumbs=run.thumbs)


def read_batch_norm(run_dir: Path) -> dict | None:
    path = Path(run_dir) / BATCH_NORM_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def apply_causal(findings: list[Finding], causal: pd.DataFrame, cfg: FindingsConfig) -> list[Finding]:
    """Fold the causal check (causal.csv's rows) into the class findings: the heatmaps correlate, this tests.

    Each class finding gets background_only_accuracy (with its baseline) and, where the check erased the same
    region, shortcut_removed_accuracy, and its severity from them (`causal_evidence.with_causal`); a class
    recognised without its object that no rule flagged gets a finding of its own. Returns renumbered findings.
    """
    by_class = {str(row["class"]): row for row in causal.to_dict("records")}
    flagged = {f.classes[0] for f in findings if scope_of(f.kind) == "class"}
    typical = typical_background_gap(by_class, flagged)
    out = [
        with_causal(f, {**by_class[f.classes[0]], "mixed_gap_baseline": typical}, cfg)
        if scope_of(f.kind) == "class" and f.classes[0] in by_class else f
        for f in findings
    ]  # fmt: skip
    return number(out + unexplained(by_class, flagged, cfg))


def write_document(run_dir: Path, findings: list[Finding], notes: list[str], context: Context) -> dict:
    """findings.json (validated) and label_errors.csv, each written atomically, once; returns the document."""
    shortcut_classes = shortcut_cues(findings, context.cfg)  # as the label findings were judged (`with_shortcut_costs`)
    findings = number(cap_findings(findings))
    doc = {"schema_version": SCHEMA_VERSION, "findings": [f.to_dict() for f in findings], "notes": notes}
    problems = validate_findings(doc)
    if problems:
        raise ValueError(f"refusing to write an invalid findings.json: {'; '.join(problems)}")
    write_json(Path(run_dir) / "findings.json", doc)
    suspects = suspects_of(context, shortcut_classes)
    table = with_duplicates(label_error_table(suspects, doc["findings"], context.cfg), context, doc["findings"])
    write_atomic(Path(run_dir) / "label_errors.csv", table.to_csv(index=False))
    return doc


def read_causal(run_dir: Path) -> pd.DataFrame | None:
    path = Path(run_dir) / "causal.csv"
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype={"class": str}, keep_default_na=False, na_values=[""])


def write_findings(run_dir: str | Path, cfg: FindingsConfig | None = None) -> dict:
    """Judge a finished run directory and write its findings.json (and label_errors.csv) atomically; returns
    the document. When the run directory holds causal.csv (auditor.causal), it is folded into the class findings.
    """
    run = load_run(run_dir)
    cfg = cfg if cfg is not None else run.config.findings
    context = run_context(run, cfg)
    findings, notes = find_all(run.records, run.maps, run.masks, run.classes, cfg, context=context)
    causal = read_causal(run.path)
    if causal is not None:
        findings = apply_causal(findings, causal, cfg)
    return write_document(run.path, findings, notes, context)
