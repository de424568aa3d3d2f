"""Rule: a class whose correct predictions look mostly outside the object (needs masks)."""

from __future__ import annotations

import math

import numpy as np

from auditor.config import FindingsConfig
from auditor.findings.context import Context, sample_ids
from auditor.findings.record import Finding, Kind, metrics
from auditor.findings.stats import bootstrap_mean

KIND = Kind(
    name="background_reliance",
    scope="class",
    needs_masks=True,
    advice=(
        "Look through the listed images of {classes} for a background or context they share (a setting, a colour, "
        "a co-occurring object). Add images of {classes} in other settings and of other classes in this one, or "
        "crop tighter to the object, then retrain."
    ),
)


def find(records, maps, masks, classes, cfg: FindingsConfig, context: Context | None = None) -> list[Finding]:
    """A class whose correct predictions look mostly outside the object.

    Judged against chance (object score 0) and against the median of the other classes, with a bootstrap
    interval. High: at chance while the other classes clearly look at their objects; medium: near chance and
    clearly below them; low: near chance where the other classes are too (the maps do not track objects here).
    """
    context = Context.of(context, records, maps, masks, classes, cfg)
    scored, class_score = context.scored, context.class_score
    findings = []
    for c in class_score.index:
        group = scored[scored["label_idx"] == c]
        energy = group["pred_energy_in_mask"].mean()
        mean, lo, hi = bootstrap_mean(group["score"], cfg)
        others = class_score.drop(c)
        reference = float(others.median()) if len(others) else math.nan
        chance = hi <= cfg.uniform_score
        near_chance = hi < cfg.on_object_score  # small objects score low by blur alone, but not this low
        below_others = reference - hi >= cfg.background_min_gap  # the gap's lower bound; False when NaN
        contrast = reference >= cfg.on_object_score  # the others do look at their objects
        clear = reference >= cfg.clear_object_score  # ... clearly enough to trust the maps alone with a high
        if energy >= cfg.background_max_energy or not near_chance or not (chance or below_others):
            continue
        severity = "high" if chance and below_others and clear else "medium" if below_others and contrast else "low"
        name, area = classes[int(c)], group["mask_area"].mean()
        others_text = f"other classes {reference:.2f}" if np.isfinite(reference) else "no other class to compare"
        findings.append(Finding(
            kind=KIND.name,
            severity=severity,
            classes=[name],
            samples=sample_ids(group, np.argsort(group["score"].to_numpy(), kind="stable"), cfg),
            metrics=metrics(
                n=len(group), energy_in_mask=energy, mask_area=area, object_score=mean, object_score_ci_low=lo,
                object_score_ci_high=hi, others_object_score=reference, gap=reference - mean,
                gap_ci_low=reference - hi, gap_ci_high=reference - lo,
            ),
            message=(
                f"Class {name!r} is recognised mostly outside its object: correct predictions put {energy:.0%} of "
                f"their attention on objects covering {area:.0%} of the image (object score {mean:.2f}, "
                f"{others_text}), so look for a background or context that comes with this class."
            ),
        ))  # fmt: skip
    return sorted(findings, key=lambda f: f.metrics["object_score"])
