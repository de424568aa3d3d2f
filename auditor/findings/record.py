"""The findings.json contract: one `Finding` per problem, a `Kind` per rule, and the schema check.

Everything else in the package produces or transforms these records; readers (report, diff, CI gates) rely on
the keys below staying exactly as they are.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from auditor.runs import clean_floats

SCHEMA_VERSION = 1
SEVERITIES = ("high", "medium", "low")
FINDING_KEYS = ("id", "kind", "severity", "classes", "pair", "region", "samples", "metrics", "message")


@dataclass(frozen=True)
class Kind:
    """What a rule reports, declared once in the rule's own module and read by everything else.

    scope: "run" (about the model as a whole), "class" (one class: the causal check speaks to these) or "pair"
    (a confused pair true -> pred). advice: the next step shown in the report; {classes}, {true} and {pred}
    are filled in.
    """

    name: str
    scope: str
    needs_masks: bool
    advice: str


@dataclass(kw_only=True)
class Finding:
    """One entry of findings.json; the fields are its keys, in its order."""

    id: str = ""  # assigned by `number` once all rules have run
    kind: str
    severity: str
    classes: list[str]
    pair: dict[str, str] | None = None  # {"true": name, "pred": name} for a confused pair
    region: list[float] | None = None  # [x0, y0, x1, y1] normalised to [0, 1] of the input
    samples: list[str] = field(default_factory=list)  # sample ids, most telling first
    metrics: dict[str, float] = field(default_factory=dict)
    message: str

    def to_dict(self) -> dict:
        return clean_floats(dataclasses.asdict(self))


def metrics(**values) -> dict[str, float]:
    """Finite values only (findings.json holds numbers, not nulls), floats rounded for reading."""
    out = {}
    for name, value in values.items():
        if value is None or not np.isfinite(value):
            continue
        out[name] = int(value) if isinstance(value, (int, np.integer)) else round(float(value), 4)
    return out


def more_severe(a: str, b: str) -> str:
    return a if SEVERITIES.index(a) <= SEVERITIES.index(b) else b


def validate_findings(doc) -> list[str]:
    """Every way `doc` departs from the findings.json contract, as readable problems (empty when valid)."""
    if not isinstance(doc, dict):
        return ["the document must be a JSON object"]
    problems = []
    extra = set(doc) - {"schema_version", "findings", "notes"}
    if extra:
        problems.append(f"unknown top-level keys {sorted(extra)}")
    if doc.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version must be {SCHEMA_VERSION}")
    notes = doc.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        problems.append("notes must be a list of strings")
    findings = doc.get("findings")
    if not isinstance(findings, list):
        return problems + ["findings must be a list"]
    last_severity = 0
    for i, finding in enumerate(findings):
        where = f"findings[{i}]"
        if not isinstance(finding, dict) or set(finding) != set(FINDING_KEYS):
            keys = sorted(finding) if isinstance(finding, dict) else type(finding).__name__
            problems.append(f"{where} must have exactly the keys {list(FINDING_KEYS)}, not {keys}")
            continue
        problems += [f"{where}: {p}" for p in _finding_problems(finding, expected_id=f"F{i + 1:03d}")]
        if finding["severity"] in SEVERITIES:
            if SEVERITIES.index(finding["severity"]) < last_severity:
                problems.append(f"{where}: findings must be ordered high, medium, low")
            last_severity = SEVERITIES.index(finding["severity"])
    return problems


def _finding_problems(f: dict, expected_id: str) -> list[str]:
    problems = []
    if f["id"] != expected_id:
        problems.append(f"id must be {expected_id!r} (numbered in order), not {f['id']!r}")
    if not isinstance(f["kind"], str) or not f["kind"].replace("_", "").isalpha() or not f["kind"].islower():
        problems.append(f"kind must be a lower_snake_case name, not {f['kind']!r}")
    if f["severity"] not in SEVERITIES:
        problems.append(f"severity must be one of {SEVERITIES}, not {f['severity']!r}")
    if not _str_list(f["classes"]) or not f["classes"]:
        problems.append("classes must be a non-empty list of class names")
    pair = f["pair"]
    pair_ok = isinstance(pair, dict) and set(pair) == {"true", "pred"} and _str_list([*pair.values()])
    if pair is not None and not pair_ok:
        problems.append("pair must be null or {'true': name, 'pred': name}")
    region = f["region"]
    if region is not None:
        ok = isinstance(region, list) and len(region) == 4 and all(_number(v) and 0 <= v <= 1 for v in region)
        if not ok or region[0] >= region[2] or region[1] >= region[3]:
            problems.append(f"region must be null or [x0, y0, x1, y1] in [0, 1] with x0 < x1, y0 < y1, not {region}")
    if not _str_list(f["samples"]):
        problems.append("samples must be a list of sample ids (strings)")
    metric_values = f["metrics"].items() if isinstance(f["metrics"], dict) else [(None, None)]
    if not all(isinstance(name, str) and _number(value) for name, value in metric_values):
        problems.append("metrics must map names to finite numbers")
    if not isinstance(f["message"], str) or not f["message"].strip():
        problems.append("message must be a non-empty sentence")
    return problems


def _str_list(values) -> bool:
    return isinstance(values, list) and all(isinstance(v, str) for v in values)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
