"""`diff_runs`: the before/after view of a retraining, as JSON and HTML."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from auditor.report.diff import diff_runs, match_findings
from auditor.report.tables import per_class_metrics
from tests.synthetic_run import CLASSES, HOSTILE, SHORTCUT_CLASS, write_synthetic_run


@pytest.fixture(scope="module")
def diffed(tmp_path_factory):
    """Run A has the corner shortcut; run B (the retrained model, same data) does not and is more accurate."""
    root = tmp_path_factory.mktemp("diff")
    before = write_synthetic_run(root / "a", n_images=96, write_images=False, seed=0)
    after = write_synthetic_run(root / "b", n_images=96, write_images=False, shortcut=False, p_correct=0.9, seed=1)
    html_path, json_path = diff_runs(before, after, root / "out")
    return before, after, html_path, json.loads(json_path.read_text())


def test_accuracy_before_and_after(diffed):
    before, after, _, diff = diffed
    a = json.loads((before / "summary.json").read_text())["accuracy"]
    b = json.loads((after / "summary.json").read_text())["accuracy"]
    assert diff["accuracy"] == {"a": a, "b": b, "delta": pytest.approx(b - a)}
    assert diff["warnings"] == []  # same data fingerprint, same classes


def test_resolved_and_persisting_findings(diffed):
    _, _, _, diff = diffed
    resolved = diff["findings"]["resolved"]
    assert [(f["kind"], f["classes"]) for f in resolved] == [("spatial_shortcut", [CLASSES[SHORTCUT_CLASS]])]
    assert diff["findings"]["appeared"] == []
    assert {p["b"]["kind"] for p in diff["findings"]["persisting"]} == {"context_confusion", "background_reliance"}
    assert diff["severity_counts"]["a"]["high"] == 1 and diff["severity_counts"]["b"]["high"] == 0


def test_per_class_metrics_side_by_side(diffed):
    before, after, _, diff = diffed
    rows = {row["class"]: row for row in diff["per_class"]}
    assert list(rows) == CLASSES
    for side, run_dir in (("a", before), ("b", after)):
        expected = per_class_metrics(pd.read_parquet(run_dir / "records.parquet"), CLASSES, None).set_index("class")
        for name in CLASSES:
            assert rows[name]["recall"][side] == pytest.approx(expected.loc[name, "recall"])
    shortcut = rows[CLASSES[SHORTCUT_CLASS]]["true_energy_in_mask"]
    assert shortcut["delta"] == pytest.approx(shortcut["b"] - shortcut["a"]) and shortcut["delta"] > 0.3


def test_diff_html_escapes_names_and_lists_changes(diffed):
    _, _, html_path, _ = diffed
    html = html_path.read_text()
    assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    resolved = html[html.find('id="findings-resolved"') : html.find('id="findings-persisting"')]
    assert "spatial_shortcut" in resolved
    assert "<script src" not in html


def test_different_data_is_flagged(tmp_path):
    before = write_synthetic_run(tmp_path / "a", n_images=16, write_images=False)
    after = write_synthetic_run(tmp_path / "b", n_images=16, write_images=False)
    manifest = json.loads((after / "manifest.json").read_text())
    manifest["fingerprints"]["data"] = "e" * 64
    (after / "manifest.json").write_text(json.dumps(manifest))
    _, json_path = diff_runs(before, after, tmp_path / "out")
    assert any("different data" in w for w in json.loads(json_path.read_text())["warnings"])


def test_match_findings_by_kind_classes_and_pair():
    shortcut = {"kind": "spatial_shortcut", "severity": "medium", "classes": ["a"], "pair": None}
    pair = {
        "kind": "context_confusion",
        "severity": "medium",
        "classes": ["a", "b"],
        "pair": {"true": "a", "pred": "b"},
    }
    flipped = {**pair, "pair": {"true": "b", "pred": "a"}, "classes": ["b", "a"]}
    worse = {**shortcut, "severity": "high", "id": "F009"}  # ids and severities do not decide identity
    result = match_findings([shortcut, pair], [worse, flipped])
    assert result["appeared"] == [flipped] and result["resolved"] == [pair]
    assert result["persisting"] == [{"a": shortcut, "b": worse, "severity_changed": True}]


def test_duplicate_findings_are_matched_one_to_one():
    finding = {"kind": "strategy_cluster", "severity": "low", "classes": ["a"], "pair": None}
    result = match_findings([finding, finding], [finding])
    assert len(result["persisting"]) == 1 and result["resolved"] == [finding]
