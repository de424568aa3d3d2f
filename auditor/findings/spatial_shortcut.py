"""Rule: a class whose attention keeps returning to one small place (watermark, ruler, logo, border)."""

from __future__ import annotations

import numpy as np

from auditor.config import FindingsConfig
from auditor.findings.context import Context, class_maps, others_at, sample_ids
from auditor.findings.places import (
    box_area,
    box_share,
    describe_place,
    focus,
    hot_region,
    is_border,
    on_the_object,
    peak_in_box,
    place_of,
    place_region,
)
from auditor.findings.record import Finding, Kind, metrics
from auditor.findings.stats import bootstrap_mean

KIND = Kind(
    name="spatial_shortcut",
    scope="class",
    needs_masks=False,
    advice=(
        "Open the listed images of {classes} at the boxed region: if they share an artefact there (a watermark, "
        "ruler, logo, border or text), crop or mask it out of the training images, or add it to images of other "
        "classes, then retrain."
    ),
)

UNCHECKED = "no masks to rule out that the object sits there"


def find(records, maps, masks, classes, cfg: FindingsConfig, context: Context | None = None) -> list[Finding]:
    """A class whose correct maps keep peaking in one small place, or keep a steady share of their attention
    there, far more than the other classes' maps.

    Needs no masks to be found: the place is compared with where the other classes look. With masks, a place
    where the attention falls on the object, or whose peaks move with the object, is the object, not a shortcut.
    Without masks an object-centred class looks exactly like a class that attends to a fixed place, so the
    finding stays low until the place is shown not to be the object (`place_evidence`: its pixels are the same
    across the class's images, pasting it flips other images).
    """
    context = Context.of(context, records, maps, masks, classes, cfg)
    summaries = context.summaries
    findings = []
    for c, group in context.correct(cfg.min_support).items():
        mean_map, peak_cells = summaries[c]
        size = mean_map.shape[0]
        place = place_of(mean_map, hot_region(mean_map, cfg.region_threshold), cfg)
        if place is None:
            continue
        area = box_area(place, size)
        hits = peak_in_box(peak_cells, place).mean()
        others_share, others_hits = others_at(summaries, c, place, size)
        share = class_maps(maps, group)
        in_box = box_share(share, place)
        mean, lo, hi = bootstrap_mean(in_box, cfg)
        peaks_there = hits >= cfg.shortcut_min_hit_rate and lo - others_share >= cfg.shortcut_min_gap
        attention_there = lo - others_share >= cfg.shortcut_min_share_gap
        if not (peaks_there or attention_there):
            continue
        is_object, evidence = on_the_object(group, share, masks, place, cfg)
        if is_object:
            continue
        strong = hits >= cfg.shortcut_high_hit_rate and lo - others_share >= cfg.shortcut_high_gap
        checked = np.isfinite(evidence["place_on_object"])
        name, where = classes[c], describe_place(place, size)
        severity = ("high" if strong else "medium") if checked else "low"
        findings.append(Finding(
            kind=KIND.name,
            severity=severity,
            classes=[name],
            region=place_region(place, mean_map, cfg),
            samples=sample_ids(group, np.argsort(-in_box, kind="stable"), cfg),
            metrics=metrics(
                n=len(group), hit_rate=hits, others_hit_rate=others_hits, share=mean, share_ci_low=lo,
                share_ci_high=hi, others_share=others_share, gap=mean - others_share,
                gap_ci_low=lo - others_share, region_area=area, focus=focus(share), **evidence,
                border_band=cfg.frame_band if is_border(place) else None,
            ),
            message=(
                f"Class {name!r} keeps looking at the {where}: {hits:.0%} of its correct maps peak there "
                f"(other classes {others_hits:.0%}) with {mean:.0%} of their attention, so check these images "
                f"for a watermark, logo, ruler or border there{'' if checked else f' ({UNCHECKED})'}."
            ),
        ))  # fmt: skip
    return sorted(findings, key=lambda f: -f.metrics["gap"])


def strong(f: Finding, cfg: FindingsConfig) -> bool:
    """Whether the maps alone make a place finding high once the place is known not to be the object."""
    return (
        f.metrics.get("hit_rate", 0.0) >= cfg.shortcut_high_hit_rate
        and f.metrics.get("gap_ci_low", 0.0) >= cfg.shortcut_high_gap
    )
