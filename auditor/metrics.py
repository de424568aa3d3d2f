"""The per-image metrics, in one list: the sweep computes them, the records name them, and per_class.csv, the
report's and the diff's per-class tables aggregate them from it.

Adding a metric is one `Metric` in METRICS (its formula, if new, in auditor.attention with a hand-sized golden
test) and its row in the metrics table of docs/how-it-works.md. Importing this module does not load torch, so the
report and the diff read run directories without it: a metric's function imports auditor.attention when the sweep
calls it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAP_KINDS = ("pred", "true")  # the predicted-class and the true-class map of every image


@dataclass(frozen=True)
class MapView:
    """What a metric sees of one batch (torch tensors on the sweep's device)."""

    maps: Any  # float [B, H, W]: one map kind at the images' resolution (None for an image-level metric)
    raw: Any  # float [B, h, w]: the same maps as the CAM method made them, before upsampling
    masks: Any  # bool [B, H, W]
    has_mask: Any  # bool [B]
    settings: Any  # auditor.config.AttentionConfig


@dataclass(frozen=True)
class ClassColumn:
    """A column of the per-class table the report shows and the diff compares."""

    name: str
    title: str
    better: int  # +1 higher is better, -1 lower is better, 0 neither (the diff colours the change by it)
    percent: bool = False
    source: str | None = None  # the record column a metric's column aggregates per class
    aggregate: str | None = None  # how (a pandas aggregation)


@dataclass(frozen=True)
class Metric:
    name: str
    function: Callable[[MapView], Any]  # -> float [B], NaN where undefined (no mask, empty mask, no positive map)
    better: int  # +1 higher is better, -1 lower is better, 0 neither
    aggregate: str | None = "mean"  # per class, over the class's images that have a value; None: not aggregated
    per_map: bool = True  # measured on each map kind (pred_<name>, true_<name>), else once per image (<name>)
    shown: dict[str, str] = field(default_factory=dict)  # map kind (or "" if per-image) -> title in the class table
    column_names: dict[str, str] = field(default_factory=dict)  # map kind -> per-class table column, if not <kind>_<name>
    percent: bool = False

    def columns(self, prefix: str = "") -> list[str]:
        """Its record columns; `prefix` names a further CAM method's (hirescam_pred_iou)."""
        return [f"{prefix}{kind}_{self.name}" for kind in MAP_KINDS] if self.per_map else [self.name]

    def class_columns(self) -> list[ClassColumn]:
        """Its columns in the per-class table the report shows and the diff compares."""
        out = []
        for kind, title in self.shown.items():
            source = f"{kind}_{self.name}" if self.per_map else self.name
            name = self.column_names.get(kind, source)
            out.append(ClassColumn(name, title, self.better, self.percent, source, self.aggregate))
        return out


def _attention():
    from auditor import attention  # noqa: PLC0415 - torch only where metrics are computed

    return attention


def _energy_in_mask(view: MapView):
    return _attention().energy_in_mask(view.maps, view.masks, view.has_mask)


def _pointing_hit(view: MapView):
    return _attention().pointing_hit(view.maps, view.masks, view.has_mask, view.settings.pointing_tolerance_px)


def _iou(view: MapView):
    return _attention().iou(view.maps, view.masks, view.has_mask, view.settings.iou_threshold)


def _cam_max(view: MapView):
    return view.raw.amax(dim=(1, 2))


def _mask_area(view: MapView):
    return _attention().mask_area(view.masks, view.has_mask)


METRICS = (
    Metric("energy_in_mask", _energy_in_mask, better=1,
           shown={"pred": "Energy in mask (pred)", "true": "Energy in mask (true)"}),
    Metric("pointing_hit", _pointing_hit, better=1, shown={"true": "Pointing accuracy"},
           column_names={"true": "pointing_accuracy"}, percent=True),
    Metric("iou", _iou, better=1, aggregate=None),
    Metric("cam_max", _cam_max, better=0, aggregate=None),
    Metric("mask_area", _mask_area, better=0, per_map=False),
)  # fmt: skip
# Everything below reads METRICS when called, so one entry there is all a new metric needs.


def record_columns(prefix: str = "") -> list[str]:
    """The records' metric columns in the sweep's order: per-image metrics, then per map kind each map metric
    (`prefix` names a further CAM method's, which have map metrics only)."""
    image = [] if prefix else [metric.name for metric in METRICS if not metric.per_map]
    return image + [f"{prefix}{kind}_{metric.name}" for kind in MAP_KINDS for metric in METRICS if metric.per_map]


def class_columns() -> list[ClassColumn]:
    """The metrics' columns in the per-class table the report shows and the diff compares."""
    return [column for metric in METRICS for column in metric.class_columns()]


def class_aggregates(records, classes: list[str]) -> dict[str, list[float]]:
    """per_class.csv's metric columns: mean_<column> of every aggregated metric, per true class (NaN if none)."""
    grouped = records.groupby("label_idx")
    out = {}
    for metric in METRICS:
        if metric.aggregate:
            for column in metric.columns():
                values = grouped[column].agg(metric.aggregate)
                out[f"{metric.aggregate}_{column}"] = [values.get(i, float("nan")) for i in range(len(classes))]
    return out
