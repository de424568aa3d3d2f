"""Weakly supervised localisation from the stored maps: what the CAM paper and Choe et al. (CVPR 2020) measure.

Everything works on the run's S x S grid (maps.npy, masks.npy): boxes are in cells, x0, y0, x1, y1 with exclusive
ends (so a box's area is its cell count), stored as fractions of the image. Components are 8-connected, as
OpenCV's contours (which the reference code, clovaai/wsolevaluation, uses) trace them.

- CAM box: the bounding box of the largest component of {map > attention.cam_box_threshold * max} of the
  predicted-class map (the CAM paper's 20 %); records.cam_box_*.
- Ground-truth box: the bounding box of the cells more than half covered by the mask (a manifest box is a filled
  rectangle mask, so its edges round to the nearest cell edge); none where no cell is.
- Top-1 localisation: correct and IoU(CAM box, GT box) >= 0.5. GT-known: IoU >= 0.5 of the true-class map's box.
- MaxBoxAccV2 (wsolevaluation's box_v2_metric): the true-class map, min-max normalised and quantised to 0..255 as
  the reference does; at every tau of 0.00 .. 0.99 every component's box counts, an image is a hit at IoU level
  delta when any box reaches delta; the best tau's hit rate per delta, averaged over delta in {0.3, 0.5, 0.7}.
- PxAP: average precision of the normalised true-class map's cells against the mask cells, pooled over the images
  (the reference's 100-bin histograms).
MaxBoxAccV2 and PxAP read a seeded sample of at most attention.localisation_max_images images per run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from auditor.timing import count

BOX_COLUMNS = ("cam_box_x0", "cam_box_y0", "cam_box_x1", "cam_box_y1")
CLASS_COLUMNS = ("top1_loc", "gt_known_loc", "max_box_acc_v2", "pxap")  # per_class.csv's new columns
IOU_LEVEL = 0.5  # top-1 and GT-known localisation
DELTAS = (0.3, 0.5, 0.7)  # MaxBoxAccV2's IoU levels
THRESHOLDS = np.arange(0, 1, 0.01)  # tau, as the reference's cam_curve_interval 0.01
EDGES = np.append(THRESHOLDS, [1.0, 2.0, 3.0])  # PxAP's histogram bins, the reference's
MASK_COVERAGE = 0.5  # a cell is object when more than half of it is
CHUNK = 4096  # maps per block: memory stays bounded whatever the run's size
_EIGHT = np.zeros((3, 3, 3), dtype=bool)
_EIGHT[1] = True  # 8-connected within each map of a stack, never across maps: one labelling per stack


def component_boxes(regions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every component of each boolean map of a stack [n, S, S]: its map's index [K] and its box int [K, 4], in
    scan order; and the label image (component k is label k + 1)."""
    labels, _ = ndimage.label(regions, structure=_EIGHT)
    spans = ndimage.find_objects(labels) if labels.size else []  # in C: 3x faster than ufunc.at over the cells
    found = np.array([(z.start, x.start, y.start, x.stop, y.stop) for z, y, x in spans], dtype=np.int64).reshape(-1, 5)
    return found[:, 0], found[:, 1:], labels


def largest_boxes(maps: np.ndarray, threshold: float) -> np.ndarray:
    """The box (cells, float [n, 4]) of the largest component of {map > threshold * max} of each map [n, S, S];
    NaN for a map without a positive maximum. Ties go to the component met first in scan order."""
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    peak = maps.max(axis=(1, 2), initial=0.0)[:, None, None]
    image, boxes, labels = component_boxes((maps > threshold * peak) & (peak > 0))
    sizes = np.bincount(labels.ravel(), minlength=len(boxes) + 1)[1:]
    order = np.lexsort((-sizes, image))  # stable: equal sizes keep scan order
    image, boxes = image[order], boxes[order]
    first = np.r_[True, image[1:] != image[:-1]] if len(image) else np.zeros(0, dtype=bool)
    out = np.full((len(maps), 4), np.nan)
    out[image[first]] = boxes[first]
    return out


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """The ground-truth box (cells, float [n, 4]) of each coverage map [n, S, S]; NaN where no cell is object."""
    obj = np.asarray(masks, dtype=np.float32) > MASK_COVERAGE
    rows, cols = obj.any(axis=2), obj.any(axis=1)
    side_y, side_x = obj.shape[1:]
    out = np.stack([cols.argmax(axis=1), rows.argmax(axis=1),
                    side_x - cols[:, ::-1].argmax(axis=1), side_y - rows[:, ::-1].argmax(axis=1)], axis=1)
    return np.where(rows.any(axis=1)[:, None], out.astype(float), np.nan)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes [..., 4] (x0, y0, x1, y1, exclusive ends) pairwise along the last axis; NaN where either is."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    inter = (np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
             * np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None))
    union = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.where(np.isnan(union), np.nan, 0.0))


def normalised(maps: np.ndarray) -> np.ndarray:
    """Min-max normalised maps [n, S, S] in [0, 1], zeros for a constant map (the reference's normalize_scoremap)."""
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
    span = high - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0)


def max_box_hits(maps: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """bool [n, len(DELTAS), len(THRESHOLDS)]: whether any component box of map i at tau reaches IoU delta with
    its GT box (cells). Maps are quantised as the reference's uint8 score map, thresholded at int(tau * its max)."""
    levels = np.floor(normalised(maps) * 255)
    top = levels.max(axis=(1, 2), keepdims=True, initial=0.0)
    best = np.zeros((len(maps), len(THRESHOLDS)))
    for t, tau in enumerate(THRESHOLDS):
        image, boxes, _ = component_boxes(levels > np.floor(tau * top))
        np.maximum.at(best[:, t], image, np.nan_to_num(box_iou(boxes, gt_boxes[image])))
    return best[:, None, :] >= np.asarray(DELTAS)[None, :, None]


def score_histograms(maps: np.ndarray, objects: np.ndarray) -> np.ndarray:
    """int [n, 2, len(EDGES) - 1]: each normalised map's cell values binned at EDGES, object cells ([:, 0]) and
    background cells ([:, 1]) apart (np.histogram's bins)."""
    n, bins = len(maps), len(EDGES) - 1
    index = np.searchsorted(EDGES, normalised(maps), side="right") - 1
    key = (np.arange(n)[:, None, None] * 2 + ~np.asarray(objects, dtype=bool)) * bins + index
    return np.bincount(key.ravel(), minlength=n * 2 * bins).reshape(n, 2, bins)


def average_precision(histograms: np.ndarray) -> float:
    """PxAP of pooled histograms [2, B] (the reference's MaskEvaluator.compute, as a share); NaN without object
    cells."""
    tp, fp = histograms[0, ::-1].cumsum(), histograms[1, ::-1].cumsum()
    positives, predicted = tp[-1], tp + fp
    if positives <= 0:
        return float("nan")
    precision = tp / np.where(predicted > 0, predicted, 1)
    recall = tp / positives
    return float((precision[1:] * np.diff(recall))[predicted[1:] > 0].sum())


def max_box_acc(hits: np.ndarray) -> np.ndarray:
    """Per delta, the best tau's hit rate of hits [n, D, T] (NaN for no image)."""
    return hits.mean(axis=0).max(axis=1) if len(hits) else np.full(len(DELTAS), np.nan)


def cam_box_frame(maps: np.ndarray, threshold: float) -> pd.DataFrame:
    """records' cam_box_* columns from maps.npy [N, 2, S, S] (the predicted-class map), read CHUNK rows at a
    time: fractions of the image, NaN for an empty map."""
    side = maps.shape[-1]
    boxes = [largest_boxes(maps[start: start + CHUNK, 0], threshold) for start in range(0, len(maps), CHUNK)]
    values = np.concatenate(boxes) / side if boxes else np.zeros((0, 4))
    return pd.DataFrame(values, columns=list(BOX_COLUMNS))


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


def localise_run(run_dir: Path, records: pd.DataFrame, classes: list[str], attention, seed: int) -> dict:
    """The localisation metrics of a merged run: {"per_class": DataFrame of CLASS_COLUMNS per class,
    "summary": summary.json's `localisation`}. Top-1 and GT-known over every image with a GT box; MaxBoxAccV2 and
    PxAP over a seeded sample of at most attention.localisation_max_images of them."""
    maps = np.load(Path(run_dir) / "maps.npy", mmap_mode="r")
    masks = np.load(Path(run_dir) / "masks.npy", mmap_mode="r")
    side = maps.shape[-1]
    rows = records["row"].to_numpy()
    gt = np.full((len(records), 4), np.nan)
    true_box = np.full((len(records), 4), np.nan)
    masked = np.flatnonzero(records["has_mask"].to_numpy(bool))
    for start in range(0, len(masked), CHUNK):
        part = masked[start: start + CHUNK]
        gt[part] = mask_boxes(masks[rows[part]])
        true_box[part] = largest_boxes(maps[rows[part], 1], attention.cam_box_threshold)
    boxed = np.flatnonzero(np.isfinite(gt[:, 0]))
    pred_box = np.rint(records[list(BOX_COLUMNS)].to_numpy(float) * side)
    top1 = records["correct"].to_numpy(bool)[boxed] & (np.nan_to_num(box_iou(pred_box[boxed], gt[boxed])) >= IOU_LEVEL)
    gt_known = np.nan_to_num(box_iou(true_box[boxed], gt[boxed])) >= IOU_LEVEL
    most = min(len(boxed), attention.localisation_max_images)
    sample = np.sort(np.random.default_rng([seed, 28]).choice(boxed, size=most, replace=False))
    count(maps_searched=len(sample))
    true_maps = np.asarray(maps[rows[sample], 1], dtype=np.float32)
    hits = max_box_hits(true_maps, gt[sample])
    histograms = score_histograms(true_maps, np.asarray(masks[rows[sample]], dtype=np.float32) > MASK_COVERAGE)

    labels = records["label_idx"].to_numpy()
    boxed_labels, sample_labels = labels[boxed], labels[sample]
    per_class = {name: [] for name in CLASS_COLUMNS}
    for i in range(len(classes)):
        mine, drawn = boxed_labels == i, sample_labels == i
        per_class["top1_loc"].append(_mean(top1[mine]))
        per_class["gt_known_loc"].append(_mean(gt_known[mine]))
        per_class["max_box_acc_v2"].append(float(max_box_acc(hits[drawn]).mean()))
        per_class["pxap"].append(average_precision(histograms[drawn].sum(axis=0)))
    by_delta = max_box_acc(hits)
    found = len(boxed) > 0
    summary = {
        "n_images": len(boxed),
        "n_sampled": len(sample),
        "top1_loc": _mean(top1) if found else None,
        "gt_known_loc": _mean(gt_known) if found else None,
        "max_box_acc_v2": float(by_delta.mean()) if len(sample) else None,
        "max_box_acc": {f"{delta:g}": (float(v) if len(sample) else None) for delta, v in zip(DELTAS, by_delta)},
        "pxap": average_precision(histograms.sum(axis=0)) if len(sample) else None,
        "cam_box_threshold": attention.cam_box_threshold,
    }
    return {"per_class": pd.DataFrame(per_class), "summary": summary}
