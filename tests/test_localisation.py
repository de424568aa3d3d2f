"""Weakly supervised localisation (auditor.localisation): hand-worked golden values on a 6 x 6 map, MaxBoxAccV2
against a brute-force reading of the reference's definition, and the audit's columns and keys end to end."""

import json

import numpy as np
import pandas as pd
import pytest

from auditor import localisation as loc
from auditor.cli import main

# The map (x 10): a 2 x 2 blob peaking at 1.0, a tail cell (0.15) below the CAM box threshold 0.2 that completes
# the object, and a two-cell speck at the right (0.1, 0.3).
MAP = np.array([
    [0, 0, 0, 0, 0, 0],
    [0, 9, 10, 0, 0, 0],
    [0, 8, 6, 0, 0, 1],
    [0, 1.5, 0, 0, 0, 3],
    [0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0],
]) / 10  # fmt: skip
# The object: columns 1-2, rows 1-3 (GT box x 1..3, y 1..4 in cells, exclusive ends, area 6); the half-covered
# cell (4, 1) is not object (coverage must exceed 0.5), nor the quarter-covered corner.
MASK = np.zeros((6, 6))
MASK[1:4, 1:3] = 1.0
MASK[4, 1], MASK[0, 0] = 0.5, 0.25


def test_golden_6x6_boxes_iou_and_localisation():
    cam = loc.largest_boxes(MAP[None], 0.2)[0]
    assert cam.tolist() == [1, 1, 3, 3]  # {> 0.2}: the blob (4 cells) and the 0.3 speck (1): the blob's box
    gt = loc.mask_boxes(MASK[None])[0]
    assert gt.tolist() == [1, 1, 3, 4]
    assert loc.box_iou(cam, gt) == pytest.approx(4 / 6)  # the 2 x 2 box inside the 2 x 3 object
    frame = loc.cam_box_frame(np.stack([MAP, MAP])[None], 0.2)
    assert frame.iloc[0].tolist() == pytest.approx([1 / 6, 1 / 6, 3 / 6, 3 / 6])
    assert np.isnan(loc.largest_boxes(np.zeros((1, 6, 6)), 0.2)).all()  # an empty map has no box
    assert np.isnan(loc.mask_boxes(np.full((1, 6, 6), 0.5))).all()  # no cell more than half covered: no GT box


def test_golden_6x6_max_box_acc_v2():
    # Quantised as the reference (floor(255 v)): 255, 229, 204, 153, 76, 38, 25. At tau <= 0.14 (threshold
    # int(255 tau) <= 35 < 38) the tail joins the blob: its box is the GT box, IoU 1, a hit at 0.3, 0.5 and 0.7.
    # At the CAM box threshold the IoU is only 4/6, so the threshold search matters.
    hits = loc.max_box_hits(MAP[None], np.array([[1, 1, 3, 4]]))
    assert hits.shape == (1, 3, 100)
    assert hits[0, :, :15].all() and hits[0, 2, 15:60].sum() == 0  # tau 0.15 .. 0.59: 4/6 < 0.7
    assert hits[0, 1, 15:60].all()  # ... but >= 0.5
    assert loc.max_box_acc(hits).tolist() == [1.0, 1.0, 1.0]
    # Two images: the second's GT box far from anything its map shows (IoU 0 at every tau).
    far = np.array([[1, 1, 3, 4], [4, 4, 6, 6]])
    both = loc.max_box_hits(np.stack([MAP, MAP]), far)
    assert loc.max_box_acc(both).mean() == pytest.approx(0.5)


def test_golden_6x6_pxap():
    # Ranked by value: object 1.0, 0.9, 0.8, 0.6, background 0.3, object 0.15, background 0.1, then zeros (one
    # object cell, 28 background). Precision at each recall step of 1/6: 1, 1, 1, 1, 5/6, then 6/36 for the last.
    hist = loc.score_histograms(MAP[None], MASK[None] > 0.5)
    assert hist.sum() == 36 and hist[0, 0].sum() == 6
    expected = (4 * 1 + 5 / 6 + 6 / 36) / 6
    assert loc.average_precision(hist[0]) == pytest.approx(expected)
    assert expected == pytest.approx(5 / 6)
    assert np.isnan(loc.average_precision(np.zeros((2, len(loc.EDGES) - 1))))  # no object cell


def _flood_components(region: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1, exclusive ends) of the 8-connected components of a boolean grid, by flood fill."""
    seen = np.zeros_like(region, dtype=bool)
    boxes = []
    height, width = region.shape
    for y in range(height):
        for x in range(width):
            if not region[y, x] or seen[y, x]:
                continue
            stack, cells = [(y, x)], []
            seen[y, x] = True
            while stack:
                cy, cx = stack.pop()
                cells.append((cy, cx))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = cy + dy, cx + dx
                        if 0 <= ny < height and 0 <= nx < width and region[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            stack.append((ny, nx))
            ys, xs = [c[0] for c in cells], [c[1] for c in cells]
            boxes.append((min(xs), min(ys), max(xs) + 1, max(ys) + 1))
    return boxes


def _iou(a, b) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def brute_max_box_acc_v2(maps: np.ndarray, gt_boxes: np.ndarray) -> float:
    """MaxBoxAccV2 as wsolevaluation defines it, one image and one threshold at a time."""
    taus = [i / 100 for i in range(100)]
    hits = np.zeros((3, len(taus)))
    for cam, gt in zip(maps, gt_boxes):
        low, high = float(cam.min()), float(cam.max())
        norm = (cam.astype(np.float64) - low) / (high - low) if high > low else np.zeros(cam.shape)
        levels = np.floor(norm * 255)
        for t in range(len(taus)):
            threshold = np.floor(loc.THRESHOLDS[t] * levels.max())
            best = max((_iou(box, gt) for box in _flood_components(levels > threshold)), default=0.0)
            for d, delta in enumerate((0.3, 0.5, 0.7)):
                hits[d, t] += best >= delta
    return float((hits / len(maps)).max(axis=1).mean())


def test_max_box_acc_v2_matches_a_brute_force_reading_of_the_definition():
    rng = np.random.default_rng(3)
    for trial in range(3):
        n, side = 12, 10
        smooth = rng.random((n, side + 2, side + 2))
        maps = (smooth[:, :-2, :-2] + smooth[:, 1:-1, 1:-1] + smooth[:, 2:, 2:]) ** 3  # blobs, some apart
        corners = rng.integers(0, side, (n, 2, 2))
        gt = np.concatenate([corners.min(axis=1), corners.max(axis=1) + 1], axis=1)[:, [1, 0, 3, 2]]
        mine = float(loc.max_box_acc(loc.max_box_hits(maps, gt)).mean())
        assert abs(mine - brute_max_box_acc_v2(maps, gt)) < 1e-6, trial


def test_pxap_matches_numpy_histograms():
    rng = np.random.default_rng(4)
    maps, objects = rng.random((5, 8, 8)) ** 2, rng.random((5, 8, 8)) > 0.6
    mine = loc.score_histograms(maps, objects).sum(axis=0)
    norm = loc.normalised(maps)
    assert (mine[0] == np.histogram(norm[objects], bins=loc.EDGES)[0]).all()
    assert (mine[1] == np.histogram(norm[~objects], bins=loc.EDGES)[0]).all()


def _audit(tmp_path, with_masks: bool):
    from tests.conftest import make_image_folder

    data, masks = make_image_folder(tmp_path, per_class=6)
    out = tmp_path / ("masked" if with_masks else "plain")
    args = ["audit", "--data.root", str(data), "--model.factory", "tests.conftest:brightness_cnn", "--out", str(out),
            "--findings.enabled", "false"]
    assert main(args + (["--data.masks", str(masks)] if with_masks else [])) == 0
    return out


def test_an_audit_with_masks_localises_and_one_without_says_none(tmp_path):
    out = _audit(tmp_path, with_masks=True)
    records = pd.read_parquet(out / "records.parquet")
    boxes = records[list(loc.BOX_COLUMNS)].to_numpy()
    assert np.isfinite(boxes).all() and ((boxes >= 0) & (boxes <= 1)).all()
    summary = json.loads((out / "summary.json").read_text())["localisation"]
    assert summary["n_images"] == 12 and summary["n_sampled"] == 12
    for key in ("top1_loc", "gt_known_loc", "max_box_acc_v2", "pxap"):
        assert 0 <= summary[key] <= 1, key
    assert set(summary["max_box_acc"]) == {"0.3", "0.5", "0.7"}
    per_class = pd.read_csv(out / "per_class.csv")
    assert per_class[list(loc.CLASS_COLUMNS)].notna().all().all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["work"]["localisation"]["maps_searched"] == 12 and "localisation_s" in manifest["timings"]
    assert "Localisation" in (out / "report.html").read_text()

    plain = _audit(tmp_path, with_masks=False)
    summary = json.loads((plain / "summary.json").read_text())["localisation"]
    assert summary["n_images"] == 0
    assert summary["top1_loc"] is None and summary["max_box_acc_v2"] is None and summary["pxap"] is None
    assert pd.read_csv(plain / "per_class.csv")[list(loc.CLASS_COLUMNS)].isna().all().all()
    assert np.isfinite(pd.read_parquet(plain / "records.parquet")[list(loc.BOX_COLUMNS)].to_numpy()).all()
