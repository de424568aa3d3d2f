"""Plotly figures of the report, built from aggregates only (no I/O, no per-image points).

Each figure is a plain plotly.js figure dict ({"data": [...], "layout": {...}}), not a `plotly.graph_objects`
Figure: the page's plotly.js draws it either way, and a run's first graph object loads plotly's 3 MB validator
schema (0.13 s) for nothing; tests/test_figures.py validates every figure against that schema instead. A figure's
size depends on the number of classes and bins, never on the number of images, which keeps a 100,000-image report
small. Every label is HTML-escaped because plotly renders a subset of HTML in text:
escaped, `<img ...>` in a class name shows as text (plotly turns `&lt;` back into a literal `<`).
"""

from __future__ import annotations

import html

import numpy as np

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
INK = "#1f2933"
MUTED = "#616e7c"
GRID = "#e4e7eb"
BLUE = "#2f6fb3"
ORANGE = "#d9822b"
RED = "#c23030"
GREEN = "#2e8540"
SEQUENTIAL = [[0.0, "#f7fbff"], [0.15, "#c6dbef"], [0.45, "#6baed6"], [0.75, "#2171b5"], [1.0, "#08306b"]]


def label(text: object) -> str:
    """Text safe for plotly's pseudo-HTML: shown literally, never parsed as markup."""
    return html.escape(str(text), quote=False)


def _layout(**overrides) -> dict:
    """A light, template-free layout (plotly's default template would add ~10 kB per figure)."""
    base = dict(
        template="none",
        font=dict(family=FONT, size=12, color=INK),
        paper_bgcolor="white",
        plot_bgcolor="white",
        margin=dict(l=60, r=20, t=30, b=60),
        hoverlabel=dict(font=dict(family=FONT)),
        legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0, xanchor="left"),
    )
    base.update(overrides)
    return base


def _axis(title: str = "", **extra) -> dict:
    return dict(title=dict(text=title), gridcolor=GRID, zerolinecolor=GRID, linecolor=GRID, automargin=True, **extra)


def _figure(traces: list[dict], layout: dict) -> dict:
    return {"data": traces, "layout": layout}


def confusion_figure(counts: np.ndarray, names: list[str], show_text: bool) -> dict:
    """Counts heatmap (rows true, columns predicted) with a button to show each row as shares of its total.

    Clicking a cell is wired in the page's script (scroll to that pair's gallery), keyed by the cell's
    indices, so class names never travel into element ids.
    """
    counts = np.asarray(counts, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.round(np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0), 4)
    ticks = [label(n) for n in names]
    heatmap = dict(
        type="heatmap",
        z=counts.tolist(),
        x=ticks,
        y=ticks,
        colorscale=SEQUENTIAL,
        colorbar=dict(title=dict(text="images"), thickness=12),
        texttemplate="%{z}" if show_text else "",
        hovertemplate="true: %{y}<br>predicted: %{x}<br>%{z}<extra></extra>",
        xgap=1,
        ygap=1,
    )
    side = max(360, min(900, 140 + 34 * len(names)))
    menu = dict(
        type="buttons",
        direction="right",
        x=0,
        y=1.02,
        xanchor="left",
        yanchor="bottom",
        showactive=True,
        pad=dict(r=4, t=0, b=0, l=0),
        buttons=[
            dict(
                label="Counts",
                method="restyle",
                args=[
                    {
                        "z": [counts.tolist()],
                        "texttemplate": "%{z}" if show_text else "",
                        "colorbar.title.text": "images",
                    }
                ],
            ),
            dict(
                label="Row-normalised",
                method="restyle",
                args=[
                    {
                        "z": [shares.tolist()],
                        "texttemplate": "%{z:.2f}" if show_text else "",
                        "colorbar.title.text": "share of row",
                    }
                ],
            ),
        ],
    )
    layout = _layout(
        height=side,
        margin=dict(l=80, r=20, t=50, b=70),
        xaxis=_axis("predicted class", type="category", side="bottom", tickangle=-40 if len(names) > 8 else 0),
        yaxis=_axis("true class", type="category", autorange="reversed"),
        updatemenus=[menu],
    )
    return _figure([heatmap], layout)


def energy_by_class_figure(names: list[str], pred_stats: list[dict], true_stats: list[dict]) -> dict:
    """Energy in the mask per class as box plots drawn from precomputed quartiles (no raw points)."""
    traces = []
    for stats, name, color in ((pred_stats, "predicted-class map", BLUE), (true_stats, "true-class map", ORANGE)):
        keep = [i for i, s in enumerate(stats) if s is not None]
        if not keep:
            continue
        traces.append(
            dict(
                type="box",
                name=name,
                x=[label(names[i]) for i in keep],
                q1=[stats[i]["q1"] for i in keep],
                median=[stats[i]["median"] for i in keep],
                q3=[stats[i]["q3"] for i in keep],
                lowerfence=[stats[i]["low"] for i in keep],
                upperfence=[stats[i]["high"] for i in keep],
                mean=[stats[i]["mean"] for i in keep],
                marker=dict(color=color),
                line=dict(width=1.5),
                boxpoints=False,
            )
        )
    layout = _layout(
        height=360,
        boxmode="group",
        xaxis=_axis("true class", type="category"),
        yaxis=_axis("energy in mask", range=[0, 1.02]),
    )
    return _figure(traces, layout)


def quartiles(values: np.ndarray) -> dict | None:
    """Box statistics (5th and 95th percentiles as whiskers) of the finite values, or None if there are none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    low, q1, median, q3, high = np.percentile(values, [5, 25, 50, 75, 95])
    return {"low": low, "q1": q1, "median": median, "q3": q3, "high": high, "mean": float(values.mean())}


def confidence_figure(p_right: np.ndarray, p_wrong: np.ndarray, bins: int = 20) -> dict:
    """Histogram of the predicted-class probability for right and wrong predictions, as shares of each
    group, so a small group of errors is not dwarfed by the correct ones."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    traces = []
    for values, name, color in ((p_right, "right", GREEN), (p_wrong, "wrong", RED)):
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=edges)
        share = counts / max(1, counts.sum())
        traces.append(
            dict(
                type="bar",
                x=np.round(centers, 4).tolist(),
                y=np.round(share, 5).tolist(),
                customdata=counts.tolist(),
                name=f"{name} ({len(values):,})",
                marker=dict(color=color),
                opacity=0.7,
                width=1.0 / bins,
                hovertemplate="p = %{x:.2f}<br>%{y:.1%} of " + name + " (%{customdata})<extra></extra>",
            )
        )
    layout = _layout(
        height=320,
        barmode="overlay",
        xaxis=_axis("probability of the predicted class", range=[0, 1]),
        yaxis=_axis("share of predictions", tickformat=".0%"),
    )
    return _figure(traces, layout)


CAUSAL_SERIES = (
    ("accuracy", "original images", BLUE),
    ("background_only_accuracy", "background only (object removed)", ORANGE),
    ("background_only_baseline", "baseline: other classes' erased images, no longer theirs, called this class",
     "#9aa5b1"),
    ("shortcut_removed_accuracy", "shortcut region removed", GREEN),
    ("mixed_same_accuracy", "object on its own class's backgrounds", "#6a3d9a"),
    ("mixed_rand_accuracy", "object on other classes' backgrounds", "#cab2d6"),
)


def causal_figure(names: list[str], rows: list[dict]) -> dict:
    """Accuracy per class on the original images, with the object removed, with the suspected shortcut
    removed, and with its objects on its own and on other classes' backgrounds: high background-only accuracy
    means the class is recognised without its object, a drop on others' backgrounds that it needs its own."""
    traces = [
        dict(
            type="bar",
            name=title,
            x=[label(n) for n in names],
            y=[row.get(column) for row in rows],
            marker=dict(color=color),
            hovertemplate="%{x}<br>" + title + ": %{y:.1%}<extra></extra>",
        )
        for column, title, color in CAUSAL_SERIES
        if any(row.get(column) is not None for row in rows)
    ]
    layout = _layout(
        height=300,
        barmode="group",
        xaxis=_axis("class", type="category"),
        yaxis=_axis("accuracy", range=[0, 1.02], tickformat=".0%"),
    )
    return _figure(traces, layout)


def property_figure(name: str, class_name: str, ours: np.ndarray, rest: np.ndarray, bins: int = 30) -> dict:
    """A property_shortcut finding's property: histogram of the class's images against the other classes', as
    shares of each group (one scale for both, so a shifted class shows as a shifted bump)."""
    ours, rest = (np.asarray(v, dtype=np.float64) for v in (ours, rest))
    ours, rest = ours[np.isfinite(ours)], rest[np.isfinite(rest)]
    both = np.concatenate([ours, rest])
    low, high = (float(both.min()), float(both.max())) if len(both) else (0.0, 1.0)
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    traces = []
    for values, group, color in ((rest, "other classes", "#9aa5b1"), (ours, class_name, ORANGE)):
        counts, _ = np.histogram(values, bins=edges)
        traces.append(dict(type="bar", x=np.round(centers, 5).tolist(), y=np.round(counts / max(1, counts.sum()), 5).tolist(),
                             customdata=counts.tolist(), name=f"{label(group)} ({len(values):,})", marker=dict(color=color),
                             opacity=0.7, width=float(edges[1] - edges[0]),
                             hovertemplate=name + " %{x:.3g}<br>%{y:.1%} (%{customdata})<extra></extra>"))
    layout = _layout(height=280, barmode="overlay", xaxis=_axis(name), yaxis=_axis("share of images", tickformat=".0%"))
    return _figure(traces, layout)
