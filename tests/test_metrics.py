"""The per-image metrics live in one list (auditor.metrics.METRICS): records, per_class.csv, the report's and the
diff's per-class tables all follow it."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from auditor import metrics
from auditor.confusion import per_class_frame
from auditor.metrics import Metric
from auditor.report import tables
from auditor.runs import RECORD_COLUMNS

REPO = Path(__file__).resolve().parents[1]


def test_record_and_per_class_columns_keep_their_names_and_order():
    assert metrics.record_columns() == [
        "mask_area",
        "pred_energy_in_mask", "pred_pointing_hit", "pred_iou", "pred_cam_max",
        "true_energy_in_mask", "true_pointing_hit", "true_iou", "true_cam_max",
    ]  # fmt: skip
    assert metrics.record_columns("hirescam_")[:2] == ["hirescam_pred_energy_in_mask", "hirescam_pred_pointing_hit"]
    assert list(RECORD_COLUMNS[-9:]) == metrics.record_columns()
    assert [c.name for c in tables.per_class_columns()] == [
        "support", "precision", "recall", "f1", "n_predicted", "pred_energy_in_mask", "true_energy_in_mask",
        "pointing_accuracy", "background_only_accuracy", "shortcut_removed_accuracy",
    ]  # fmt: skip


def test_per_class_csv_means_on_a_hand_sized_table():
    nan = math.nan
    records = pd.DataFrame({
        "label_idx": [0, 0, 0, 1], "pred_idx": [0, 1, 0, 1],
        "mask_area": [0.25, 0.5, nan, 0.1],
        "pred_energy_in_mask": [0.8, 0.4, nan, 0.3], "true_energy_in_mask": [0.8, 0.2, nan, 0.3],
        "pred_pointing_hit": [1.0, 0.0, nan, 1.0], "true_pointing_hit": [1.0, 1.0, nan, 0.0],
        "pred_iou": [0.5, 0.5, nan, 0.5], "true_iou": [0.5, 0.5, nan, 0.5],
        "pred_cam_max": [1.0, 2.0, 3.0, 4.0], "true_cam_max": [1.0, 2.0, 3.0, 4.0],
    })  # fmt: skip
    frame = per_class_frame(records, ["a", "b", "c"]).set_index("class")
    assert list(frame.columns) == [
        "support", "precision", "recall", "f1", "mean_pred_energy_in_mask", "mean_true_energy_in_mask",
        "mean_pred_pointing_hit", "mean_true_pointing_hit", "mean_mask_area",
    ]  # fmt: skip
    assert frame.loc["a", "mean_pred_energy_in_mask"] == pytest.approx(0.6)  # the image without a mask is left out
    assert frame.loc["a", "mean_true_pointing_hit"] == pytest.approx(1.0)
    assert frame.loc["a", "mean_mask_area"] == pytest.approx(0.375)
    assert frame.loc["b", "mean_true_energy_in_mask"] == pytest.approx(0.3)
    assert np.isnan(frame.loc["c", "mean_mask_area"])


def test_every_metric_has_a_direction_and_a_documented_row():
    documented = (REPO / "docs" / "how-it-works.md").read_text()  # the per-image metrics table
    for metric in metrics.METRICS:
        assert metric.better in (-1, 0, 1)
        assert f"`*_{metric.name}`" in documented or f"`{metric.name}`" in documented, metric.name


def test_reading_a_run_needs_no_torch():
    code = "import sys, auditor.report, auditor.metrics, auditor.confusion; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def _cam_mean(view):
    return view.raw.mean(dim=(1, 2))


def test_a_metric_added_to_the_list_reaches_records_tables_report_and_diff(tmp_path, monkeypatch):
    """One new entry: the sweep computes it, per_class.csv averages it, the report and the diff show it."""
    from auditor.cli import main
    from tests.conftest import make_image_folder

    added = Metric("cam_mean", _cam_mean, better=-1, shown={"pred": "Mean of the map (pred)"})
    monkeypatch.setattr(metrics, "METRICS", (*metrics.METRICS, added))
    data, masks = make_image_folder(tmp_path, per_class=3)
    args = ["audit", "--data.root", str(data), "--data.masks", str(masks), "--model.factory",
            "tests.conftest:tiny_cnn", "--set", "findings.enabled=false"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0

    records = pd.read_parquet(tmp_path / "a" / "records.parquet")
    assert {"pred_cam_mean", "true_cam_mean"} <= set(records.columns)
    assert (records["pred_cam_mean"] <= records["pred_cam_max"] + 1e-6).all()
    per_class = pd.read_csv(tmp_path / "a" / "per_class.csv")
    assert per_class.loc[0, "mean_pred_cam_mean"] == pytest.approx(records[records.label_idx == 0].pred_cam_mean.mean())
    assert "Mean of the map (pred)" in (tmp_path / "a" / "report.html").read_text()

    assert main(["diff", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "d")]) == 0
    rows = json.loads((tmp_path / "d" / "diff.json").read_text())["per_class"]
    assert set(rows[0]["pred_cam_mean"]) == {"a", "b", "delta"}
    assert "Mean of the map (pred)" in (tmp_path / "d" / "diff.html").read_text()
