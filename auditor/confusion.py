"""Confusion matrix, per-class scores and confused pairs: pure functions of the records table."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from auditor.metrics import class_aggregates


def confusion_frame(records: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """K x K counts; rows are true classes, columns predicted classes."""
    labels = list(range(len(classes)))
    counts = confusion_matrix(records["label_idx"], records["pred_idx"], labels=labels) if len(records) else np.zeros(
        (len(classes), len(classes)), dtype=int
    )
    frame = pd.DataFrame(counts, index=pd.Index(classes, name="true"), columns=pd.Index(classes, name="pred"))
    return frame


def per_class_frame(records: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Support, precision, recall, F1 and the metrics' aggregates (auditor.metrics) per true class."""
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        records["label_idx"], records["pred_idx"], labels=labels, zero_division=0
    )
    frame = pd.DataFrame({"class": classes, "support": support, "precision": precision, "recall": recall, "f1": f1})
    for name, values in class_aggregates(records, classes).items():
        frame[name] = values
    return frame


def confused_pairs(records: pd.DataFrame, classes: list[str]) -> list[dict]:
    """Every true -> pred confusion with its images (most confident mistakes first), by count then rate."""
    wrong = records[records["label_idx"] != records["pred_idx"]]
    support = records["label_idx"].value_counts()
    pairs = []
    for (true, pred), group in wrong.groupby(["label_idx", "pred_idx"]):
        group = group.sort_values("p_pred", ascending=False)
        pairs.append({
            "true": classes[int(true)],
            "pred": classes[int(pred)],
            "count": int(len(group)),
            "rate": float(len(group) / support[true]),
            "ids": group["id"].tolist(),
        })
    pairs.sort(key=lambda p: (-p["count"], -p["rate"], p["true"], p["pred"]))
    return pairs
