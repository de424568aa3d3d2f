"""auditor.confusion.confused_pairs by hand."""

from __future__ import annotations

import pandas as pd

from auditor.confusion import confused_pairs


def test_confused_pairs_by_hand():
    # cat (3 images): two called dog; dog (2): one called cat; bird (2): one called dog.
    records = pd.DataFrame({
        "id": ["c1", "c2", "c3", "d1", "d2", "b1", "b2"],
        "label_idx": [0, 0, 0, 1, 1, 2, 2],
        "pred_idx": [1, 1, 0, 0, 1, 1, 2],
        "p_pred": [0.6, 0.9, 0.8, 0.7, 0.9, 0.7, 0.8],
    })  # fmt: skip
    pairs = confused_pairs(records, ["cat", "dog", "bird"])
    assert pairs == [
        {"true": "cat", "pred": "dog", "count": 2, "rate": 2 / 3, "ids": ["c2", "c1"]},  # surest mistake first
        {"true": "bird", "pred": "dog", "count": 1, "rate": 0.5, "ids": ["b1"]},  # equal counts: higher rate first
        {"true": "dog", "pred": "cat", "count": 1, "rate": 0.5, "ids": ["d1"]},  # equal rates: by name
    ]


def test_confused_pairs_keep_record_order_among_equally_sure_mistakes_and_handle_none():
    records = pd.DataFrame({"id": ["a", "b", "c"], "label_idx": [0, 0, 0], "pred_idx": [1, 1, 1],
                            "p_pred": [0.5, 0.7, 0.5]})
    assert confused_pairs(records, ["x", "y"])[0]["ids"] == ["b", "a", "c"]
    assert confused_pairs(records.assign(pred_idx=0), ["x", "y"]) == []
