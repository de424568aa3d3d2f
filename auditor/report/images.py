"""Thumbnails for the report: heatmap overlays, mask outlines and region boxes, encoded as small JPEG data URIs.

Everything here is numpy on small arrays (a thumbnail is ~100 x 100 pixels), so a report renders without
matplotlib or OpenCV, and the number of thumbnails is bounded by the report config, not by the dataset.
"""

from __future__ import annotations

import base64
import io
import logging

import numpy as np
from PIL import Image

log = logging.getLogger("auditor")

MASK_COLOR = (255, 64, 255)  # magenta: absent from the heatmap's colours, so the outline never blends in
REGION_COLOR = (255, 255, 255)
BACKGROUND_GRAY = 128

# Turbo (Google, 2019) as its published degree-5 polynomial fit: a rainbow map with even lightness steps,
# red = high attention, which is how Grad-CAM figures are usually read.
_TURBO = np.array(
    [
        [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
        [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
        [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
    ]
)


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (NaN counts as 0) to uint8 RGB with the turbo colormap."""
    x = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)[..., None]
    rgb = np.zeros((*x.shape[:-1], 3))
    for coefficients in _TURBO.T[::-1]:  # Horner's rule: no [..., 6] array of powers
        rgb = rgb * x + coefficients
    return (np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def resize_map(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a low-resolution map to the thumbnail's size (float32 in [0, 1])."""
    cam = np.nan_to_num(np.asarray(cam, dtype=np.float32))
    image = Image.fromarray(cam).resize((width, height), Image.BILINEAR)
    return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)


def fit_image(image: np.ndarray, side: int) -> np.ndarray:
    """Resize an RGB uint8 image so its longer side is `side`, keeping the aspect ratio the model saw."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def gray_image(height: int, width: int) -> np.ndarray:
    """Stand-in when the original image cannot be read: the map still shows, on a neutral background."""
    return np.full((height, width, 3), BACKGROUND_GRAY, dtype=np.uint8)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend a map (already at the image's size) onto the image; opacity grows with the map's value,
    so unattended pixels show the image unchanged and the reader sees what the model looked at."""
    weight = (alpha * np.clip(cam, 0.0, 1.0))[..., None]
    blended = image.astype(np.float32) * (1.0 - weight) + colormap(cam).astype(np.float32) * weight
    return (blended + 0.5).astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """Boolean border pixels of a boolean mask: inside pixels with at least one 4-neighbour outside."""
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def draw_mask_outline(image: np.ndarray, coverage: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Draw the outline of the object mask (per-cell coverage, any resolution) onto an RGB image."""
    if coverage is None or not np.any(np.asarray(coverage) > 0):
        return image
    height, width = image.shape[:2]
    border = outline(resize_map(coverage, height, width) >= threshold)
    result = image.copy()
    result[border] = MASK_COLOR
    return result


def draw_region(image: np.ndarray, box: tuple[float, float, float, float], width_px: int = 2) -> np.ndarray:
    """Draw a rectangle given as fractions (x0, y0, x1, y1) of the image's width and height."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box
    left, right = sorted((round(x0 * width), round(x1 * width)))
    top, bottom = sorted((round(y0 * height), round(y1 * height)))
    left, top = max(0, min(left, width - 1)), max(0, min(top, height - 1))
    right, bottom = max(left + 1, min(right, width)), max(top + 1, min(bottom, height))
    result = image.copy()
    for t in range(width_px):
        rows = [min(top + t, bottom - 1), max(bottom - 1 - t, top)]
        cols = [min(left + t, right - 1), max(right - 1 - t, left)]
        result[rows, left:right] = REGION_COLOR
        result[top:bottom, cols] = REGION_COLOR
    return result


def jpeg_data_uri(image: np.ndarray, quality: int = 80) -> str:
    """Encode an RGB uint8 image as a JPEG data URI: small, and it opens from disk without a server."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(
        buffer, format="JPEG", quality=int(quality), optimize=True
    )
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def load_display(path: str, data_cfg, side: int | None = None) -> np.ndarray | None:
    """The image as the model saw it (same resize and crop), or None when it cannot be read; with `side`, about
    that large (decoded at a reduced scale: a thumbnail needs no full-size decode).

    Imported lazily: re-rendering a report must work where the data loader (or the image itself) is gone.
    """
    try:
        from auditor.data import load_display_image

        image = np.asarray(load_display_image(str(path), data_cfg, side))
    except Exception as err:  # a missing file, a moved dataset, an old run: show the map on gray instead
        log.debug("report: cannot load %s for a thumbnail (%s); using a gray background", path, err)
        return None
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        log.debug("report: %s loaded with shape %s dtype %s; using a gray background", path, image.shape, image.dtype)
        return None
    return image


def triptych(
    image: np.ndarray | None,
    pred_map: np.ndarray,
    true_map: np.ndarray,
    mask: np.ndarray | None,
    side: int,
    quality: int,
    alpha: float = 0.6,
    against_map: np.ndarray | None = None,
    cam_box: tuple[float, float, float, float] | None = None,
) -> dict[str, str]:
    """The thumbnails of one gallery item: image, predicted-class overlay, true-class overlay and, given a
    counterfactual map of the true class, what argues against it; each with the object mask outlined, as
    JPEG data URIs. `cam_box` (fractions of the image: the predicted-class map's CAM box, auditor.localisation)
    is drawn on the predicted-class overlay, so the reader sees it beside the mask outline."""
    base = gray_image(side, side) if image is None else fit_image(image, side)
    height, width = base.shape[:2]
    panels = {
        "image": base,
        "pred": overlay(base, resize_map(pred_map, height, width), alpha),
        "true": overlay(base, resize_map(true_map, height, width), alpha),
    }
    if against_map is not None:
        panels["against"] = overlay(base, resize_map(against_map, height, width), alpha)
    if cam_box is not None and np.all(np.isfinite(cam_box)):
        panels["pred"] = draw_region(panels["pred"], cam_box, width_px=1)
    return {name: jpeg_data_uri(draw_mask_outline(panel, mask), quality) for name, panel in panels.items()}


def class_map_thumbnail(
    mean_map: np.ndarray,
    mean_mask: np.ndarray | None,
    boxes: list[tuple[float, float, float, float]],
    side: int,
    quality: int,
) -> str:
    """A class-average map on its own (no image), with where the object usually is outlined and any
    finding's region boxed: a reader sees at a glance whether the class is recognised by its object."""
    peak = float(np.nanmax(mean_map)) if np.size(mean_map) else 0.0
    scaled = np.asarray(mean_map, dtype=np.float32) / peak if peak > 0 else np.zeros_like(mean_map, np.float32)
    picture = colormap(resize_map(scaled, side, side))
    if mean_mask is not None and np.nanmax(mean_mask) > 0:
        picture = draw_mask_outline(picture, np.asarray(mean_mask, np.float32) / float(np.nanmax(mean_mask)))
    for box in boxes:
        picture = draw_region(picture, box)
    return jpeg_data_uri(picture, quality)
