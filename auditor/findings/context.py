"""What several rules read from one run, computed once: `Context` caches it, the functions define it.

A rule gets (records, maps, masks, classes, cfg) and may be handed a `Context` of the same run; tests call
rules without one and each rule then builds its own.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from auditor.config import FindingsConfig
from auditor.findings.places import attention_share, box_area, box_share, peak_in_box, peaks
from auditor.findings.stats import object_score


def informative(records: pd.DataFrame, energy_column: str, cfg: FindingsConfig) -> pd.Series:
    """Rows whose mask can tell object from background: a mask, a measured energy, an object that is not all."""
    area = records["mask_area"]
    return (
        records["has_mask"].astype(bool) & records[energy_column].notna()
        & (area > 0) & (area <= cfg.max_mask_area)
    )  # fmt: skip


def sample_ids(records: pd.DataFrame, order, cfg: FindingsConfig) -> list[str]:
    """Ids of records in the given order (most telling first), capped at cfg.max_samples."""
    order = np.asarray(order)[: cfg.max_samples]
    return [str(i) for i in records["id"].to_numpy()[order]]


def correct_by_class(records: pd.DataFrame, min_support: int) -> dict[int, pd.DataFrame]:
    """Correctly classified images per class, for classes with at least min_support of them."""
    correct = records[records["correct"].astype(bool)]
    return {int(c): g for c, g in correct.groupby("label_idx") if len(g) >= min_support}


def class_maps(maps, group: pd.DataFrame) -> np.ndarray:
    """Predicted-class attention shares of a group's images (for correct images: also the true class's)."""
    return attention_share(maps[group["row"].to_numpy(), 0])


def object_scores(records: pd.DataFrame, cfg: FindingsConfig) -> pd.DataFrame:
    """The correct, informative images, each with its object score."""
    use = records[records["correct"].astype(bool) & informative(records, "pred_energy_in_mask", cfg)]
    return use.assign(score=object_score(use["pred_energy_in_mask"], use["mask_area"]))


def class_object_score(scored: pd.DataFrame, cfg: FindingsConfig) -> pd.Series:
    """Mean object score per class (label_idx) over classes with min_support correct, informative images.

    This is how the model looks at a class's objects when it is right: the yardstick of several rules.
    """
    counts = scored.groupby("label_idx")["score"].agg(["mean", "size"])
    return counts.loc[counts["size"] >= cfg.min_support, "mean"]


def others_at(summaries: dict, c: int, box, size: int) -> tuple[float, float]:
    """Median over the other classes of (attention share, peak rate) in the box; chance without other classes."""
    others = [v for k, v in summaries.items() if k != c]
    if not others:
        return box_area(box, size), box_area(box, size)
    share = np.median([box_share(mean_map[None], box)[0] for mean_map, _ in others])
    hits = np.median([peak_in_box(peak_cells, box).mean() for _, peak_cells in others])
    return float(share), float(hits)


class Context:
    """One run's inputs to the rules and what several rules share, each computed on first use."""

    def __init__(self, records, maps, masks, classes, cfg: FindingsConfig, probs=None, batch_norm=None,
                 features=None, thumbs=None):
        self.records, self.maps, self.masks, self.classes, self.cfg = records, maps, masks, list(classes), cfg
        self.probs = probs  # float [N, C] softmax per image (probs.npy), None for older run directories
        self.features = features  # float16 [N, D] pooled features (features.npy), None where not kept
        self.thumbs = thumbs  # uint8 [N, C, s, s] (thumbs.npy), None where not kept: tells exact copies
        self.batch_norm = batch_norm  # auditor.batch_norm_check's figures (batch_norm.json), None if not checked
        self._cache: dict = {}

    @classmethod
    def of(cls, context: Context | None, records, maps, masks, classes, cfg: FindingsConfig) -> Context:
        """The given context, or a fresh one for a rule called on its own."""
        return context if context is not None else cls(records, maps, masks, classes, cfg)

    @cached_property
    def has_masks(self) -> bool:
        return bool(self.records["has_mask"].astype(bool).any())

    @cached_property
    def maps_miss_objects(self) -> bool:
        """The maps miss the objects in most classes (median class object score below on_object_score): the
        mask rules, which compare a class with the others, cannot single out a class, so the causal check must
        read every class."""
        return self.has_masks and bool(self.class_score.median() < self.cfg.on_object_score)

    @cached_property
    def scored(self) -> pd.DataFrame:
        return object_scores(self.records, self.cfg)

    @cached_property
    def class_score(self) -> pd.Series:
        return class_object_score(self.scored, self.cfg)

    def cached(self, key, compute):
        """compute() once per run for `key`: how a rule shares what it derives with other rules."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def correct(self, min_support: int) -> dict[int, pd.DataFrame]:
        return self.cached(("correct", min_support), lambda: correct_by_class(self.records, min_support))

    @cached_property
    def summaries(self) -> dict[int, tuple[np.ndarray, tuple]]:
        """Mean attention map and each map's peak cell, per class with min_support correct images: what a
        class's place is compared with; kept instead of the maps themselves to bound memory."""
        summaries = {}
        for c, group in self.correct(self.cfg.min_support).items():
            share = class_maps(self.maps, group)
            summaries[c] = (share.mean(axis=0), peaks(share))
        return summaries
