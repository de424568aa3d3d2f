"""Aggregates the report and the diff share: per-class metrics, findings keys, class-average maps.

Pure functions of a loaded run directory. Per-class figures are recomputed from records.parquet (the
single source of truth) so the report, the diff and any dashboard agree with each other.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from auditor.findings import scope_of
from auditor.findings.record import SEVERITIES
from auditor.metrics import ClassColumn, class_columns

CAUSAL_COLUMNS = (
    ClassColumn("background_only_accuracy", "Background-only accuracy", -1, percent=True),
    ClassColumn("shortcut_removed_accuracy", "Shortcut-removed accuracy", 1, percent=True),
)
COUNT_COLUMNS = (
    ClassColumn("support", "Support", 0),
    ClassColumn("precision", "Precision", 1),
    ClassColumn("recall", "Recall", 1),
    ClassColumn("f1", "F1", 1),
    ClassColumn("n_predicted", "Predicted", 0),
)


def per_class_columns() -> list[ClassColumn]:
    """The per-class table the report shows and the diff compares, in this order (the metrics' part from
    auditor.metrics.METRICS)."""
    return [*COUNT_COLUMNS, *class_columns(), *CAUSAL_COLUMNS]
CHUNK_ROWS = 8192  # rows of maps read at a time from the memory-mapped arrays


def per_class_metrics(records: pd.DataFrame, classes: list[str], causal: pd.DataFrame | None) -> pd.DataFrame:
    """One row per class: support, precision, recall, f1, the metrics' aggregates and the causal checks.

    A metric's aggregate is over the class's (true label) images that have a value, i.e. that have a mask;
    pointing accuracy is the pointing game of the true-class map, the standard definition.
    """
    k = len(classes)
    label = records["label_idx"].to_numpy(dtype=np.int64)
    pred = records["pred_idx"].to_numpy(dtype=np.int64)
    support = np.bincount(label, minlength=k)[:k]
    n_predicted = np.bincount(pred[(pred >= 0) & (pred < k)], minlength=k)[:k]
    hits = np.bincount(label[label == pred], minlength=k)[:k]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_predicted > 0, hits / np.maximum(n_predicted, 1), np.nan)
        recall = np.where(support > 0, hits / np.maximum(support, 1), np.nan)
        f1 = 2 * precision * recall / (precision + recall)
    table = pd.DataFrame(
        {
            "class": classes,
            "support": support,
            "n_predicted": n_predicted,
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
    )
    grouped = records.groupby("label_idx")
    for column in class_columns():
        table[column.name] = grouped[column.source].agg(column.aggregate).reindex(range(k)).to_numpy(dtype=float)
    for column in (c.name for c in CAUSAL_COLUMNS):
        if causal is not None and column in causal:
            by_class = dict(zip(causal["class"].astype(str), causal[column], strict=True))
            table[column] = table["class"].map(by_class).astype(float)
        else:
            table[column] = np.nan
    return table


def read_causal(run_dir: Path) -> pd.DataFrame | None:
    """causal.csv (class, n, accuracy, background_only_accuracy, shortcut_removed_accuracy), if written."""
    path = Path(run_dir) / "causal.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={"class": str}, keep_default_na=False, na_values=[""])
    return frame if "class" in frame else None


def read_label_errors(run_dir: Path) -> pd.DataFrame | None:
    """label_errors.csv (one row per suspected label error, most likely first), if written."""
    path = Path(run_dir) / "label_errors.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={"id": str, "label": str, "pred": str, "finding": str}, keep_default_na=False,
                        na_values=[""])
    return frame if {"id", "label", "pred", "finding"} <= set(frame.columns) else None


def read_confusion(run_dir: Path, records: pd.DataFrame, k: int) -> np.ndarray:
    """The K x K count matrix (rows true, columns predicted) from confusion.csv, else from the records."""
    path = Path(run_dir) / "confusion.csv"
    if path.is_file():
        matrix = pd.read_csv(path, index_col=0).to_numpy()
        if matrix.shape == (k, k):
            return matrix.astype(np.int64)
    label = records["label_idx"].to_numpy(dtype=np.int64)
    pred = records["pred_idx"].to_numpy(dtype=np.int64)
    keep = (label >= 0) & (label < k) & (pred >= 0) & (pred < k)
    return np.bincount(label[keep] * k + pred[keep], minlength=k * k).reshape(k, k)


def read_pairs(run_dir: Path, confusion: np.ndarray, classes: list[str]) -> list[dict]:
    """Confused pairs ranked by count then rate, from confused_pairs.json or else from the matrix."""
    path = Path(run_dir) / "confused_pairs.json"
    if path.is_file():
        return json.loads(path.read_text())
    support = confusion.sum(axis=1)
    pairs = [
        {
            "true": classes[i],
            "pred": classes[j],
            "count": int(confusion[i, j]),
            "rate": float(confusion[i, j] / support[i]),
            "ids": [],
        }
        for i, j in zip(*np.nonzero(confusion), strict=True)
        if i != j
    ]
    return sorted(pairs, key=lambda p: (-p["count"], -p["rate"]))


def sorted_findings(findings: list[dict]) -> list[dict]:
    """Most severe first, keeping the rules' own order within a severity."""
    return sorted(findings, key=lambda f: SEVERITIES.index(f["severity"]))


def severity_counts(findings: list[dict]) -> dict[str, int]:
    return {name: sum(f["severity"] == name for f in findings) for name in SEVERITIES}


def finding_classes(finding: dict) -> list[str]:
    """The classes a finding is about; none for a run-wide one: model_health names the class a collapsed model
    answers, but the problem is the model's, so it gets no class map, no per-class badge and no focus."""
    return [] if scope_of(str(finding.get("kind"))) == "run" else [str(c) for c in finding.get("classes") or []]


def classes_at_issue(findings: list[dict], confusion: np.ndarray, classes: list[str]) -> list[int]:
    """Every class index, most at issue first: the classes the findings name (most severe first), then by
    errors (images of the class predicted otherwise plus images predicted as it wrongly), most first."""
    index = {name: i for i, name in enumerate(classes)}
    named = [index[c] for f in sorted_findings(findings) for c in finding_classes(f) if c in index]
    errors = confusion.sum(axis=0) + confusion.sum(axis=1) - 2 * np.diag(confusion)
    return list(dict.fromkeys([*named, *(int(i) for i in np.argsort(-errors, kind="stable"))]))


def pair_of(finding: dict) -> tuple[str, str] | None:
    """A finding's (true, predicted) pair, from findings.json's {"true": ..., "pred": ...}; None for a class finding."""
    pair = finding.get("pair")
    return (pair["true"], pair["pred"]) if pair else None


def finding_key(finding: dict) -> tuple:
    """What makes two findings the same problem across runs: kind, classes (unordered) and pair (ordered)."""
    return finding["kind"], tuple(sorted(finding["classes"])), pair_of(finding)


def region_box(region: list[float] | None) -> tuple[float, float, float, float] | None:
    """A finding's region [x0, y0, x1, y1] (fractions of the image, as findings.json holds it) as a tuple."""
    return None if region is None else tuple(float(v) for v in region)


def class_mean(records: pd.DataFrame, maps: np.ndarray, masks: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Class c's average true-class map and average mask coverage (records: row, label_idx, has_mask), read from
    the memory-mapped arrays for that class's rows only and in chunks: the report draws a class's map only where a
    finding names the class, so memory and reading stay flat in the number of classes (all classes' means at
    once, in float64, had been 125 MB at 1,000 classes)."""
    size = maps.shape[-1]
    ours = records["label_idx"].to_numpy(dtype=np.int64) == c
    rows = records["row"].to_numpy(dtype=np.int64)[ours]
    has_mask = records["has_mask"].to_numpy(dtype=bool)[ours]
    order = np.argsort(rows)
    rows, has_mask = rows[order], has_mask[order]
    map_sum = np.zeros((size, size), dtype=np.float64)
    mask_sum = np.zeros((size, size), dtype=np.float64)
    for start in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[start : start + CHUNK_ROWS]
        map_sum += np.nan_to_num(np.asarray(maps[chunk, 1], dtype=np.float32)).sum(axis=0, dtype=np.float64)
        masked = chunk[has_mask[start : start + CHUNK_ROWS]]  # masks.npy holds zeros where there is no mask
        if len(masked):
            mask_sum += np.asarray(masks[masked], dtype=np.float32).sum(axis=0, dtype=np.float64)
    count = max(len(rows), 1)
    return map_sum / count, mask_sum / count


def config_digest(config: dict) -> str:
    """A short fingerprint of the settings, so two reports can be told apart at a glance."""
    canonical = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def flatten(mapping: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested dict -> [("section.key", value)], for a plain two-column metadata table."""
    items = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            items.extend(flatten(value, name + "."))
        else:
            items.append((name, value))
    return items
