"""`auditor demo`: the planted corner square must show in the audit, for the reader and in the numbers."""

import re

import numpy as np

from auditor import demo
from tests.conftest import DEMO_HOSTILE_DIGIT, HOSTILE_NAME


def test_planted_square_on_most_of_one_class():
    data = demo.make_decoy_digits(seed=0)
    biased = data["labels"] == demo.BIASED_CLASS
    assert data["planted"][biased].mean() >= 0.9
    assert not data["planted"][~biased].any()
    # The square never touches a digit: the mask is empty under it.
    x0, y0, x1, y1 = demo.SQUARE
    assert not data["masks"][:, y0:y1, x0:x1].any()
    _, audit = demo.split(data["labels"])
    assert data["planted"][audit][data["labels"][audit] == demo.BIASED_CLASS].mean() >= 0.9


def test_biased_class_attention_is_off_the_digit(demo_run):
    records = demo_run.records
    assert records["correct"].mean() > 0.9
    right = records[records["correct"]]
    medians = right.groupby("label_idx")["pred_energy_in_mask"].median()
    biased = medians[demo.BIASED_CLASS]
    others = medians.drop(demo.BIASED_CLASS)
    assert biased < others.min()
    assert biased < 0.6 * others.median()


def test_biased_class_average_map_peaks_at_the_corner(demo_run):
    records = demo_run.records
    size = demo_run.maps.shape[-1]
    rows = records[(records["label_idx"] == demo.BIASED_CLASS) & records["correct"]]["row"].to_numpy()
    average = demo_run.maps[rows, 0].astype(np.float32).mean(axis=0)
    y, x = np.unravel_index(average.argmax(), average.shape)
    x0, y0, x1, y1 = (v * size / demo.CANVAS for v in demo.SQUARE)
    assert x0 - 1 <= x <= x1 + 1 and y0 - 1 <= y <= y1 + 1
    # A clean class's average map peaks away from that corner.
    clean = records[(records["label_idx"] == 0) & records["correct"]]["row"].to_numpy()
    y, x = np.unravel_index(demo_run.maps[clean, 0].astype(np.float32).mean(axis=0).argmax(), (size, size))
    assert x > x1 + 2 or y > y1 + 2


def test_demo_findings_name_the_shortcut_with_causal_evidence(demo_run):
    findings = [f for f in demo_run.findings() if f["classes"] == ["8"] and f["severity"] == "high"]
    shortcut = next(f for f in findings if f["kind"] == "spatial_shortcut")
    x0, y0, x1, y1 = shortcut["region"]
    sx0, sy0, sx1, sy1 = (v / demo.CANVAS for v in demo.SQUARE)
    assert x0 <= sx0 and y0 <= sy0 and x1 >= sx1 and y1 >= sy1  # the region covers the planted square
    assert (x1 - x0) * (y1 - y0) < 0.1  # and is small
    # With the digit erased the class is still recognised; with the corner erased it is not.
    assert shortcut["metrics"]["background_only_accuracy"] > 0.5
    assert shortcut["metrics"]["shortcut_removed_accuracy"] < 0.5
    clean = [f for f in demo_run.findings() if f["severity"] == "high" and f["classes"] != ["8"]]
    assert clean == []
    assert demo_run.summary["findings"]["high"] >= 1


def test_demo_report_is_written(demo_run):
    html = (demo_run.path / "report.html").read_text()
    assert demo_run.classes[DEMO_HOSTILE_DIGIT] == HOSTILE_NAME
    assert HOSTILE_NAME not in html  # only ever escaped
    assert not re.search(r"<script[^>]*\bsrc=", html)  # everything inlined: opens offline
    assert "Plotly.newPlot" in html or "Plotly.react" in html
