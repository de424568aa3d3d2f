"""Where a map's attention falls relative to the object mask: pure batched torch functions.

Every function takes maps [B, H, W] (non-negative, any scale), masks bool [B, H, W] and has_mask bool [B], and
returns float [B] with NaN where the answer is undefined: no mask, an empty mask, or a map with no positive
mass (all zero or non-finite). They run on the maps' device, inside the sweep.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _defined(maps: torch.Tensor, masks: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor:
    finite = torch.isfinite(maps).all(dim=(1, 2))
    positive = torch.nan_to_num(maps, nan=0.0, posinf=0.0).amax(dim=(1, 2)) > 0
    return has_mask & masks.any(dim=(1, 2)) & finite & positive


def _where_defined(values: torch.Tensor, defined: torch.Tensor) -> torch.Tensor:
    return torch.where(defined, values, torch.full_like(values, float("nan")))


def _none_masked(maps: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor | None:
    """All NaN when no image of a CPU batch has a mask (a data set without masks): full-resolution passes over
    every map would only be discarded. Not on an accelerator, where asking would wait for the device."""
    if has_mask.device.type == "cpu" and not bool(has_mask.any()):
        return torch.full(maps.shape[:1], float("nan"), dtype=torch.float32, device=maps.device)
    return None


def energy_in_mask(maps: torch.Tensor, masks: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor:
    """Share of the map's positive mass inside the mask (energy-based pointing game, relevance mass accuracy).

    A map spread evenly scores the mask's area share, the baseline to judge it against.
    """
    if (undefined := _none_masked(maps, has_mask)) is not None:
        return undefined
    positive = torch.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0).double()
    total = positive.sum(dim=(1, 2))
    inside = (positive * masks).sum(dim=(1, 2))
    defined = _defined(maps, masks, has_mask)
    return _where_defined((inside / total.clamp_min(1e-300)).float(), defined)


def pointing_hit(maps: torch.Tensor, masks: torch.Tensor, has_mask: torch.Tensor, tolerance_px: int = 0) -> torch.Tensor:
    """1.0 when the map's maximum lies in the mask grown by `tolerance_px` pixels, else 0.0 (pointing game)."""
    if (undefined := _none_masked(maps, has_mask)) is not None:
        return undefined
    batch, height, width = maps.shape
    safe = torch.nan_to_num(maps, nan=-1.0, posinf=-1.0, neginf=-1.0)
    peak = safe.reshape(batch, -1).argmax(dim=1)
    grown = masks.float()
    if tolerance_px > 0:
        size = 2 * tolerance_px + 1
        grown = F.max_pool2d(grown[:, None], size, stride=1, padding=tolerance_px)[:, 0]
    hit = grown.reshape(batch, -1).gather(1, peak[:, None])[:, 0]
    return _where_defined(hit, _defined(maps, masks, has_mask))


def iou(maps: torch.Tensor, masks: torch.Tensor, has_mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Intersection over union of {map >= threshold * max} and the mask (weakly supervised localisation)."""
    if (undefined := _none_masked(maps, has_mask)) is not None:
        return undefined
    safe = torch.nan_to_num(maps, nan=0.0, posinf=0.0, neginf=0.0)
    peak = safe.amax(dim=(1, 2), keepdim=True)
    region = safe >= threshold * peak
    inter = (region & masks).sum(dim=(1, 2)).float()
    union = (region | masks).sum(dim=(1, 2)).float()
    return _where_defined(inter / union.clamp_min(1), _defined(maps, masks, has_mask))


def mask_area(masks: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor:
    """Share of the image covered by the mask: the score of an evenly spread map; NaN without a mask."""
    area = masks.float().mean(dim=(1, 2))
    return torch.where(has_mask, area, torch.full_like(area, float("nan")))
