"""Regions and places in attention maps: where a class looks, in words and in normalised boxes.

Maps are [n, S, S] cell grids; a cell box is (y0, y1, x0, x1), end exclusive; a region in findings.json is
[x0, y0, x1, y1] normalised to [0, 1] of the input. A place is a cell box, or a bool [S, S] cell mask where no box
fits it (the border band a frame lies on, `around_the_border`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import ndimage

from auditor.config import FindingsConfig

BORDER_MIN_HOT = 0.8  # share of a mean map's hot cells on the border band for it to be a frame's place


def attention_share(maps) -> np.ndarray:
    """Maps [n, S, S] as distributions of positive attention (sum 1); an all-zero map becomes even (no place)."""
    maps = np.clip(np.asarray(maps, dtype=np.float32), 0.0, None)
    total = maps.sum(axis=(1, 2), keepdims=True)
    even = np.full_like(maps, 1.0 / (maps.shape[1] * maps.shape[2]))
    return np.where(total > 0, maps / np.where(total > 0, total, 1.0), even)


def hot_region(mean_map: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """Cell box (y0, y1, x0, x1), end exclusive, around the peak's connected cells at >= threshold * peak."""
    peak = np.unravel_index(np.argmax(mean_map), mean_map.shape)
    labels, _ = ndimage.label(mean_map >= threshold * mean_map.max())
    ys, xs = np.nonzero(labels == labels[peak])
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def box_share(share: np.ndarray, place) -> np.ndarray:
    """Each map's attention share at the place (a cell box or a cell mask)."""
    if isinstance(place, np.ndarray):
        return share[:, place].sum(axis=1)
    y0, y1, x0, x1 = place
    return share[:, y0:y1, x0:x1].sum(axis=(1, 2))


def peaks(share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell (ys, xs) of each map's maximum."""
    return np.unravel_index(share.reshape(len(share), -1).argmax(axis=1), share.shape[1:])


def peak_in_box(peak_cells, place) -> np.ndarray:
    """Whether each map's peak cell lies at the place (a cell box or a cell mask)."""
    ys, xs = peak_cells
    if isinstance(place, np.ndarray):
        return place[ys, xs]
    y0, y1, x0, x1 = place
    return (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)


def box_area(place, size: int) -> float:
    """The place's share of the image (a cell box or a cell mask)."""
    if isinstance(place, np.ndarray):
        return float(place.mean())
    y0, y1, x0, x1 = place
    return (y1 - y0) * (x1 - x0) / size**2


def box_iou(a, b) -> float:
    """IoU of two cell boxes (y0, y1, x0, x1), end exclusive."""
    h = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    w = max(0, min(a[3], b[3]) - max(a[2], b[2]))
    union = (a[1] - a[0]) * (a[3] - a[2]) + (b[1] - b[0]) * (b[3] - b[2]) - h * w
    return h * w / union if union else 0.0


def box_cells(place, size: int) -> np.ndarray:
    """The place as a bool [size, size] cell mask."""
    if isinstance(place, np.ndarray):
        return place
    cells = np.zeros((size, size), dtype=bool)
    y0, y1, x0, x1 = place
    cells[y0:y1, x0:x1] = True
    return cells


def border_sides(size: int, width: int) -> list[tuple[int, int, int, int]]:
    """The border band of `width` cells as four disjoint cell boxes: top and bottom (whole rows), left, right."""
    return [(0, width, 0, size), (size - width, size, 0, size), (width, size - width, 0, width),
            (width, size - width, size - width, size)]


def border_width(size: int, band: float) -> int:
    """The border band's width in cells: `band` of the side, at least one cell, at most a quarter of the grid."""
    return max(1, min(math.ceil(band * size), size // 4))


def around_the_border(mean_map: np.ndarray, threshold: float, band: float) -> np.ndarray | None:
    """The border band (cell mask) where a mean map's hot cells (>= threshold x its peak) lie mostly on it
    (BORDER_MIN_HOT of them) and run along at least three of its four sides (their middle halves): a frame or a
    vignette, a place no compact box describes. None otherwise, as for a mark in a corner (two sides at most)."""
    size = mean_map.shape[0]
    width = border_width(size, band)
    if band <= 0 or size < 4 * width:
        return None
    hot = mean_map >= threshold * mean_map.max()
    cells = np.ones_like(hot)
    cells[width:-width, width:-width] = False
    if hot[cells].sum() < BORDER_MIN_HOT * hot.sum():
        return None
    quarter = size // 4
    middles = [hot[:width, quarter:-quarter], hot[-width:, quarter:-quarter], hot[quarter:-quarter, :width],
               hot[quarter:-quarter, -width:]]
    return cells if sum(bool(m.any()) for m in middles) >= 3 else None


def strongest_side(mean_map: np.ndarray, band: float) -> tuple[int, int, int, int]:
    """The side of the border band (a cell box) holding the most attention per cell: where a frame's finding
    points the reader, and the region the causal check erases."""
    sides = border_sides(mean_map.shape[0], border_width(mean_map.shape[0], band))
    return max(sides, key=lambda b: float(mean_map[b[0] : b[1], b[2] : b[3]].mean()))


def place_of(mean_map: np.ndarray, box, cfg: FindingsConfig):
    """Where a mean map points: its hot region's cell box (`hot_region`, given) where that is small enough to be a
    place (cfg.max_region_area), else the border band where the hot cells run around the border (a frame,
    `around_the_border`), else None: the attention spreads."""
    if box_area(box, mean_map.shape[0]) <= cfg.max_region_area:
        return box
    return around_the_border(mean_map, cfg.region_threshold, cfg.frame_band)


def is_border(place) -> bool:
    """Whether a place is the border band (a cell mask), not a box."""
    return isinstance(place, np.ndarray)


def place_region(place, mean_map: np.ndarray, cfg: FindingsConfig) -> list[float]:
    """A finding's region for a place: the box (`reported_region`), or for the border band its side holding the
    most attention (`strongest_side`), where the report points (the checks take the whole band from
    `metrics.border_band`)."""
    box = strongest_side(mean_map, cfg.frame_band) if is_border(place) else place
    return reported_region(box, mean_map.shape[0], cfg)


def normalised_box(box, size: int, pad: int = 0) -> list[float]:
    """Cell box (y0, y1, x0, x1) as [x0, y0, x1, y1] in [0, 1], grown by `pad` cells on each side."""
    y0, y1, x0, x1 = max(0, box[0] - pad), min(size, box[1] + pad), max(0, box[2] - pad), min(size, box[3] + pad)
    return [round(x0 / size, 4), round(y0 / size, 4), round(x1 / size, 4), round(y1 / size, 4)]


def reported_region(box, size: int, cfg: FindingsConfig) -> list[float]:
    """A finding's region: the hot cells grown by cfg.region_pad_cells, because the upsampled map spreads each
    coarse feature cell over its neighbours, so the cells at half the peak can sit beside the artefact's
    centre rather than on it; a region that errs wide still holds the artefact (and the causal check erases it)."""
    return normalised_box(box, size, cfg.region_pad_cells)


def regions_overlap(a, b) -> bool:
    """Whether two normalised [x0, y0, x1, y1] regions share any area."""
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def describe_place(box, size: int) -> str:
    """'top-right corner', 'left edge', 'centre': words a reviewer finds in the image; for the border band (a cell
    mask), the image's border."""
    if is_border(box):
        return "image's border (three or four sides)"
    y0, y1, x0, x1 = box
    cy, cx = (y0 + y1) / (2 * size), (x0 + x1) / (2 * size)
    vertical = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else None
    horizontal = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else None
    if vertical and horizontal:
        return f"{vertical}-{horizontal} corner"
    if vertical or horizontal:
        return f"{vertical or horizontal} edge"
    return "centre"


def downsample(share: np.ndarray, size: int) -> np.ndarray:
    """Block sums to size x size (any S >= size), so each downsampled map still sums to 1."""
    edges = np.linspace(0, share.shape[1], size + 1).astype(int)[:-1]
    return np.add.reduceat(np.add.reduceat(share, edges, axis=1), edges, axis=2)


def focus(share: np.ndarray) -> float:
    """Peak of the mean map over the mean peak of the maps: 1 when every map peaks at the same cells.

    A watermark draws the same spot each time; objects that merely cluster in one area spread the mean map out.
    """
    return float(share.mean(axis=0).max() / share.max(axis=(1, 2)).mean())


# ------------------------------------------------------------------------------ is a place the object? (masks)


def masked_rows(group: pd.DataFrame) -> np.ndarray | None:
    """Which of the group's images have a mask, or None when fewer than half do (too few to judge by)."""
    masked = group["has_mask"].to_numpy(dtype=bool)
    return masked if masked.any() and 2 * masked.sum() >= len(group) else None


def place_on_object(group: pd.DataFrame, share: np.ndarray, masks, box) -> float:
    """Mean share of the attention inside the box that falls on the object (NaN without enough masks).

    High when the objects themselves sit at the place: then the place is the object, not a shortcut.
    """
    masked = masked_rows(group)
    if masked is None:
        return math.nan
    cells = box_cells(box, share.shape[1])
    inside = share[masked][:, cells]
    obj = np.asarray(masks[group["row"].to_numpy()[masked]], dtype=np.float32)[:, cells]
    return float(((inside * obj).sum(axis=1) / np.maximum(inside.sum(axis=1), 1e-12)).mean())


def peak_spread(group: pd.DataFrame, share: np.ndarray, masks, box) -> tuple[float, float]:
    """Spread of the peaks that fall in the box, in the image and around the object's centre (NaN without masks).

    A place the attention returns to while the objects move stays put in the image; attention on a part of the
    object moves with it, and stays put relative to the object instead. Maps peaking elsewhere (on the object,
    beside a patch that draws only part of the attention) say nothing about the box.
    """
    masked = masked_rows(group)
    if masked is None:
        return math.nan, math.nan
    obj = np.asarray(masks[group["row"].to_numpy()[masked]], dtype=np.float32)
    weight = obj.sum(axis=(1, 2))
    peak_cells = peaks(share[masked])
    keep = (weight > 0) & peak_in_box(peak_cells, box)
    if not keep.any():
        return math.nan, math.nan
    centre = (np.arange(obj.shape[1]) + 0.5) / obj.shape[1]
    cy, cx = (obj.sum(axis=2) @ centre)[keep] / weight[keep], (obj.sum(axis=1) @ centre)[keep] / weight[keep]
    py, px = centre[peak_cells[0][keep]], centre[peak_cells[1][keep]]
    return float(np.hypot(py.std(), px.std())), float(np.hypot((py - cy).std(), (px - cx).std()))


def on_the_object(group: pd.DataFrame, share: np.ndarray, masks, box, cfg: FindingsConfig) -> tuple[bool, dict]:
    """Whether masks show a place is the object: attention there falls on it, or the peaks move with it."""
    on_object = place_on_object(group, share, masks, box)
    in_image, around_object = peak_spread(group, share, masks, box)
    follows = around_object <= cfg.place_follow_ratio * in_image  # False when unmeasured (NaN)
    evidence = {"place_on_object": on_object, "peak_spread": in_image, "peak_spread_around_object": around_object}
    return bool(on_object > cfg.place_max_on_object or follows), evidence
