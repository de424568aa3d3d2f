"""The report's figures are plain plotly.js dicts (no graph objects at run time): each must still be a figure
plotly's own schema accepts, and carry the numbers it was given."""

import json

import numpy as np
import plotly.graph_objects as go
import pytest

from auditor.report import figures
from auditor.report.html import safe_json


def validated(fig: dict) -> go.Figure:
    """plotly's strict constructor: raises ValueError on any property the schema does not know."""
    assert set(fig) == {"data", "layout"}
    return go.Figure(fig)


def test_confusion_figure_counts_and_row_shares_by_hand():
    counts = np.array([[3, 1], [0, 4]])
    fig = validated(figures.confusion_figure(counts, ["cat", "<b>dog</b>"], show_text=True))
    heatmap = fig.data[0]
    assert heatmap.type == "heatmap" and [list(row) for row in heatmap.z] == [[3, 1], [0, 4]]
    assert list(heatmap.x) == ["cat", "&lt;b&gt;dog&lt;/b&gt;"]  # escaped: shown as text, never markup
    shares = fig.layout.updatemenus[0].buttons[1].args[0]["z"][0]
    assert shares == [[0.75, 0.25], [0.0, 1.0]]  # rows as shares of their totals: 3/4, 1/4; 0/4, 4/4


def test_confidence_figure_shares_of_each_group_by_hand():
    fig = validated(figures.confidence_figure(np.array([0.92, 0.97, 0.12, np.nan]), np.array([0.55]), bins=4))
    right, wrong = fig.data
    assert list(right.x) == [0.125, 0.375, 0.625, 0.875]
    assert list(right.y) == pytest.approx([1 / 3, 0, 0, 2 / 3], abs=1e-5)  # NaN left out: 3 values
    assert list(right.customdata) == [1, 0, 0, 2] and right.name == "right (3)"
    assert list(wrong.y) == [0, 0, 1, 0]


def test_energy_causal_and_property_figures_are_valid_plotly():
    stats = figures.quartiles(np.arange(21, dtype=float) / 20)
    assert stats["median"] == 0.5 and stats["low"] == pytest.approx(0.05) and stats["high"] == pytest.approx(0.95)
    energy = validated(figures.energy_by_class_figure(["a", "b"], [stats, None], [stats, stats]))
    assert [t.name for t in energy.data] == ["predicted-class map", "true-class map"]
    assert list(energy.data[0].x) == ["a"] and energy.data[0].marker.color == figures.BLUE
    rows = [{"accuracy": 0.9, "mixed_rand_accuracy": None}, {"accuracy": 0.8, "mixed_rand_accuracy": 0.4}]
    causal = validated(figures.causal_figure(["a", "b"], rows))  # a series no class has is left out
    assert [t.name for t in causal.data] == ["original images", "object on other classes' backgrounds"]
    assert list(causal.data[1].y) == [None, 0.4]
    prop = validated(figures.property_figure("brightness", "x", np.array([0.1, 0.2]), np.array([0.9]), bins=2))
    assert list(prop.data[1].y) == [1.0, 0.0] and list(prop.data[0].y) == [0.0, 1.0]


def test_figures_serialise_to_strict_json():
    """As the report writes them: NaN as null, numpy numbers as JSON numbers."""
    fig = figures.causal_figure(["a"], [{"accuracy": np.float32(0.5), "background_only_accuracy": float("nan")}])
    data = json.loads(str(safe_json(fig)))
    assert data["data"][0]["y"] == [0.5] and data["data"][1]["y"] == [None]
