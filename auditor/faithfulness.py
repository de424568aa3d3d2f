"""Deletion check of a map's faithfulness: does removing what the map points at hurt the prediction?

Per image, the top `percent` % of pixels by map value are removed (set to 0, which after normalisation is the
data set's mean colour), and, as a control, the same number of pixels at random. The drops in the predicted
class's probability are compared: a faithful map's deletion hurts clearly more than the random one. Both
perturbed batches go through the model in one inference-mode forward; everything stays on the device.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

FAITHFULNESS_COLUMNS = ("deletion_drop", "random_drop")


def deletion_masks(maps: torch.Tensor, percent: float, generator: torch.Generator | None = None):
    """Boolean masks [B, H, W] of the top `percent` % pixels of each map and of as many random pixels."""
    batch, height, width = maps.shape
    count = max(1, round(percent / 100 * height * width))
    flat = maps.reshape(batch, -1)
    noise = torch.rand(flat.shape, generator=generator, device=flat.device)
    masks = []
    for scores in (flat, noise):
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        chosen.scatter_(1, scores.topk(count, dim=1).indices, True)
        masks.append(chosen.reshape(batch, height, width))
    return masks[0], masks[1]


@torch.inference_mode()
def deletion_drops(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    predicted: torch.Tensor,
    p_pred: torch.Tensor,
    percent: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop in the predicted class's probability after deleting the map's top pixels, and after deleting random ones.

    `maps` [B, H, W] are at the images' resolution; `p_pred` is the predicted class's probability on the intact
    images. A map that is zero everywhere ranks no pixel: its deletion drop is NaN (the random one is kept).
    """
    top, random = deletion_masks(maps, percent, generator)
    keep = ~torch.cat([top, random])[:, None]  # [2B, 1, H, W], broadcast over channels
    probs = model(images.repeat(2, 1, 1, 1) * keep).float().softmax(dim=1)
    after = probs.gather(1, predicted.repeat(2)[:, None])[:, 0]
    deletion, random_drop = (p_pred.repeat(2) - after).chunk(2)
    empty = maps.flatten(1).amax(dim=1) <= 0
    return deletion.masked_fill(empty, float("nan")), random_drop


def class_means(records: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Mean deletion and random drop per true class (NaN where a class has no finite value)."""
    grouped = records.groupby("label_idx")
    return pd.DataFrame({
        f"mean_{column}": [grouped[column].mean().get(i, np.nan) for i in range(len(classes))]
        for column in FAITHFULNESS_COLUMNS
    })
