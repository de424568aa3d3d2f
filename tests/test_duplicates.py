"""Near-duplicates with different labels: the pair search (auditor.duplicates) and its rule and outputs
(auditor.findings.duplicate_conflict)."""

import json
import shutil

import numpy as np
import pandas as pd
import torch

from auditor.cli import main
from auditor.duplicates import (
    FEATURE_DIMS,
    conflicting_pairs,
    image_features,
    nearest_other_label,
    query_rows,
)
from auditor.runs import load_run
from tests.conftest import make_image_folder

CPU = torch.device("cpu")


def test_golden_pairs_of_five_hand_made_vectors():
    # 0 and 1: the same direction, different labels (a conflict); 0 and 2: the same, one label (no conflict);
    # 3: 0.95 from 0 with another label (below 0.99); 4: orthogonal to all.
    features = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0.95, np.sqrt(1 - 0.95**2), 0], [0, 0, 1]], np.float32)
    labels = np.array([0, 1, 0, 2, 1])
    pairs = conflicting_pairs(features, labels, 0.99, device=CPU, centre=False)
    assert pairs[["a", "b"]].values.tolist() == [[0, 1], [1, 2]]
    assert np.allclose(pairs["similarity"], 1.0)
    looser = conflicting_pairs(features, labels, 0.9, device=CPU, centre=False)
    assert sorted(map(tuple, looser[["a", "b"]].values.tolist())) == [(0, 1), (0, 3), (1, 2), (1, 3), (2, 3)]
    # searched from row 4 only, nothing conflicts above 0.9; from row 3, every pair holding 3
    assert conflicting_pairs(features, labels, 0.9, queries=[4], device=CPU, centre=False).empty
    assert sorted(conflicting_pairs(features, labels, 0.9, queries=[3], device=CPU, centre=False)["a"]) == [0, 1, 2]
    # centred on the run's mean (the default), identical vectors stay identical; 3 (0.95 raw) falls below 0.9
    centred = conflicting_pairs(features, labels, 0.9, device=CPU)
    assert centred[["a", "b"]].values.tolist() == [[0, 1], [1, 2]]


def test_chunked_search_equals_brute_force(monkeypatch):
    from auditor import duplicates

    rng = np.random.default_rng(0)
    features = image_features(torch.from_numpy(rng.standard_normal((300, 16)).astype(np.float32))).numpy()
    labels = rng.integers(0, 4, 300)
    monkeypatch.setattr(duplicates, "_CHUNK_CELLS", 7 * 300)  # chunks of 7 rows, the last one short
    sims, rows = nearest_other_label(features, labels, np.arange(300), k=3, device=CPU)
    centred = features - features.mean(axis=0)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    full = centred @ centred.T
    full[labels[:, None] == labels[None, :]] = -np.inf
    expected = -np.sort(-full, axis=1)[:, :3]
    np.testing.assert_allclose(sims, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(full, rows, axis=1), expected, rtol=0, atol=1e-5)
    tops = np.unique(expected[:, 0])
    threshold = float(tops[-40] + tops[-41]) / 2  # between two values: no pair on the edge in float rounding
    pairs = conflicting_pairs(features, labels, threshold, k=300, device=CPU)
    a, b = np.nonzero(np.triu(full >= threshold, 1))
    assert sorted(zip(pairs["a"], pairs["b"])) == sorted(zip(a.tolist(), b.tolist()))


def test_features_are_unit_length_and_wide_layers_are_projected():
    narrow = image_features(torch.randn(4, 8))
    wide = image_features(torch.randn(4, 2048))
    assert narrow.shape == (4, 8) and wide.shape == (4, FEATURE_DIMS)
    assert torch.allclose(wide.norm(dim=1), torch.ones(4)) and torch.allclose(narrow.norm(dim=1), torch.ones(4))
    assert torch.equal(image_features(torch.zeros(2, 8)), torch.zeros(2, 8))
    same = torch.randn(1, 2048)
    assert torch.allclose(image_features(same), image_features(same.clone()))  # a fixed projection


def test_query_rows_keep_the_least_believed_beyond_the_cap():
    assert query_rows([0.9, 0.1, 0.5], 5).tolist() == [0, 1, 2]
    assert query_rows([0.9, 0.1, 0.5, np.nan], 2).tolist() == [1, 3]


def wide_cnn(num_classes: int = 2) -> torch.nn.Module:
    """A seeded, untrained CNN whose target layer has 16 channels (findings.duplicate_min_dims): brightness_cnn's
    two would not be searched. Untrained, so model_health may call it broken: the rule runs all the same."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, num_classes),
    )


def audit_with_a_copy(tmp_path, factory: str):
    """Audit the tiny image folder with cat/0.png copied into the dog folder; returns the run directory."""
    data, _ = make_image_folder(tmp_path, per_class=6)
    shutil.copy(data / "cat" / "0.png", data / "dog" / "copy.png")
    out = tmp_path / "run"
    assert main(["audit", "--data.root", str(data), "--model.factory", factory, "--out", str(out)]) == 0
    return out


def test_an_image_copied_into_another_class_is_reported(tmp_path):
    out = audit_with_a_copy(tmp_path, "tests.test_duplicates:wide_cnn")
    run = load_run(out)
    assert run.features.shape == (13, 16) and run.features.dtype == np.float16
    findings = json.loads((out / "findings.json").read_text())["findings"]
    (found,) = [f for f in findings if f["kind"] == "duplicate_conflict"]
    assert found["samples"][:2] in (["cat/0.png", "dog/copy.png"], ["dog/copy.png", "cat/0.png"])
    assert found["metrics"]["exact_pairs"] == 1 and found["metrics"]["pairs"] == 1  # no distinct image at 0.999
    broken = json.loads((out / "summary.json").read_text())["model_health"] == "broken"
    assert found["severity"] == ("low" if broken else "medium")  # an exact copy; capped on a broken model
    table = pd.read_csv(out / "label_errors.csv", keep_default_na=False).set_index("id")
    assert "near-duplicate of dog/copy.png labelled dog" in table.loc["cat/0.png", "reason"]
    assert "near-duplicate of cat/0.png labelled cat" in table.loc["dog/copy.png", "reason"]
    assert table["rank"].tolist() == list(range(1, len(table) + 1))
    manifest = json.loads((out / "manifest.json").read_text())
    assert "duplicates_s" in manifest["timings"] and manifest["work"]["duplicates"]["feature_rows"] == 13
    html = (out / "report.html").read_text()
    assert "Pairs side by side" in html and "alt=\"image dog/copy.png labelled dog\"" in html


def test_features_of_too_few_dims_are_not_searched(tmp_path):
    out = audit_with_a_copy(tmp_path, "tests.conftest:brightness_cnn")
    assert load_run(out).features.shape == (13, 2)  # kept, but 2 channels cannot tell copies from the rest
    assert "duplicate_conflict" not in (out / "findings.json").read_text()
