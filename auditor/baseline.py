"""Accepted findings: a baseline file lists the findings someone has reviewed and accepted, so that a scheduled
`--fail-on` gate fails only on new ones.

Finding numbers change from run to run; what a finding is about does not. A baseline entry accepts a finding of
the same kind, the same classes (and confused pair) and the same region, where regions are the same when they
overlap at IoU >= REGION_MIN_IOU: a region that moved or changed its size more than that is a new finding, and so is
a finding that gained or lost a region. Severity is not compared: a known problem is known however loud it gets.

The outcome is stored in the run directory (ACCEPTED_FILE: finding id -> the entry that accepts it), so the exit
code and a report re-rendered later read it without the baseline file.
"""

from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path

from auditor.errors import AuditorError

log = logging.getLogger("auditor")

BASELINE_VERSION = 1
ACCEPTED_FILE = "accepted_findings.json"
REGION_MIN_IOU = 0.5
MATCHED_KEYS = ("kind", "classes", "pair", "region")


def read_findings(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "findings.json"
    return json.loads(path.read_text())["findings"] if path.is_file() else []


def read_baseline(path: str | Path) -> list[dict]:
    """The entries of a baseline file; none when the file does not exist yet."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AuditorError(f"Baseline {path} is not valid JSON ({err}). Fix it, or write it anew with "
                           "`auditor accept RUN_DIR F001 --baseline FILE`.") from None
    entries = doc.get("accepted") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "kind" in e and "classes" in e
                                                for e in entries):
        raise AuditorError(f"Baseline {path} must be a JSON object whose \"accepted\" list holds entries with kind, "
                           "classes, pair and region, as `auditor accept RUN_DIR F001 --baseline FILE` writes them.")
    return entries


def region_iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def matches(finding: dict, entry: dict) -> bool:
    """Whether a baseline entry accepts the finding: same kind, classes and pair, and the same region."""
    if finding["kind"] != entry["kind"] or list(finding["classes"]) != list(entry["classes"]):
        return False
    if (finding.get("pair") or None) != (entry.get("pair") or None):
        return False
    a, b = finding.get("region"), entry.get("region")
    if a is None or b is None:
        return a is None and b is None
    return region_iou(a, b) >= REGION_MIN_IOU


def accepted_by(findings: list[dict], entries: list[dict]) -> dict[str, dict]:
    """Finding id -> the first baseline entry that accepts it."""
    accepted = {}
    for finding in findings:
        entry = next((e for e in entries if matches(finding, e)), None)
        if entry is not None:
            accepted[finding["id"]] = entry
    return accepted


def mark_accepted(run_dir: str | Path, baseline: str | Path | None) -> dict[str, dict]:
    """Record in the run directory which of its findings the baseline accepts (none, and no file, without one)."""
    path = Path(run_dir) / ACCEPTED_FILE
    if not baseline:
        path.unlink(missing_ok=True)  # an earlier audit's acceptance says nothing about these findings
        return {}
    if not Path(baseline).is_file():
        log.warning("baseline %s does not exist yet: no finding is accepted", baseline)
    findings = read_findings(run_dir)
    accepted = accepted_by(findings, read_baseline(baseline))
    from auditor.runs import write_json  # noqa: PLC0415 - the CLI imports this module: no pandas at start-up

    write_json(path, {"baseline": str(baseline), "accepted": accepted})
    log.info("%d of %d finding(s) accepted by the baseline %s", len(accepted), len(findings), baseline)
    return accepted


def accepted_findings(run_dir: str | Path) -> dict[str, dict]:
    """What mark_accepted recorded: finding id -> its baseline entry."""
    path = Path(run_dir) / ACCEPTED_FILE
    return json.loads(path.read_text()).get("accepted", {}) if path.is_file() else {}


def accept(run_dir: str | Path, ids: list[str], baseline: str | Path, reason: str = "") -> list[dict]:
    """Append the run's findings `ids` to the baseline file (created when missing) with the reason and today's date,
    then mark the run against it; returns the entries added (a finding the baseline already accepts adds none)."""
    if not (Path(run_dir) / "findings.json").is_file():
        raise AuditorError(f"{run_dir} has no findings.json: point at a run directory `auditor audit` wrote.")
    findings = {f["id"]: f for f in read_findings(run_dir)}
    unknown = [i for i in ids if i not in findings]
    if unknown:
        raise AuditorError(f"{run_dir} has no finding {', '.join(unknown)}; its findings are "
                           f"{', '.join(findings) or 'none'} (see findings.json or the report).")
    entries = read_baseline(baseline)
    added = []
    for finding_id in dict.fromkeys(ids):
        finding = findings[finding_id]
        if any(matches(finding, e) for e in entries):
            log.info("%s is already accepted by %s", finding_id, baseline)
            continue
        entry = {**{key: finding.get(key) for key in MATCHED_KEYS}, "severity": finding["severity"],
                 "message": finding["message"], "reason": reason, "date": date.today().isoformat(),
                 "run": str(run_dir), "id": finding_id}
        entries.append(entry)
        added.append(entry)
    from auditor.runs import write_json  # noqa: PLC0415 - as in mark_accepted

    write_json(Path(baseline), {"schema_version": BASELINE_VERSION, "accepted": entries})
    mark_accepted(run_dir, baseline)
    return added
