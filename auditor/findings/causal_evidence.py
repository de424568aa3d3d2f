"""The causal check's verdict on the class findings (`auditor.causal` runs the model; this judges the result).

A heatmap only correlates attention with a region; if the class is still predicted once its object is gone, or
is lost once the flagged region is gone, the model demonstrably uses that region. A class recognised without its
object that no heatmap rule flagged becomes a `recognised_without_object` finding.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers

import numpy as np

from auditor.config import FindingsConfig
from auditor.findings.place_evidence import erasure_effect, off_the_object, transplant_effect
from auditor.findings.record import Finding, Kind, metrics

KIND = Kind(
    name="recognised_without_object",
    scope="class",
    needs_masks=True,
    advice=(
        "Look at what the images of {classes} share besides the object (a background, a frame, a caption, a "
        "colour): the model still names the class with the object erased. Vary it across classes, then retrain."
    ),
)


def unexplained(by_class: dict[str, dict], flagged: set[str], cfg: FindingsConfig) -> list[Finding]:
    """A recognised_without_object finding for each class still recognised with its object erased (above the
    baseline by cfg.causal_min_background_accuracy) that no heatmap rule flagged."""
    out = []
    for name, row in by_class.items():
        effect = _background_effect(row)
        if name in flagged or not effect >= cfg.causal_min_background_accuracy:
            continue
        accuracy, baseline = row["background_only_accuracy"], row["background_only_accuracy"] - effect
        out.append(Finding(
            kind=KIND.name, severity="high", classes=[name],
            metrics=metrics(
                n=row["n_masked"], accuracy=row["accuracy"], background_only_accuracy=accuracy,
                background_only_baseline=baseline,
            ),
            message=(
                f"Class {name!r} is still predicted for {accuracy:.0%} of its images once the object is erased "
                f"(other classes' erased images no longer named as theirs: {baseline:.0%}), so inspect what its "
                "images share besides the object."
            ),
        ))  # fmt: skip
    return out


def with_causal(f: Finding, row: dict | None, cfg: FindingsConfig) -> Finding:
    """One class finding with the causal check's figures for its class, its severity set by them: high when
    the class is still recognised with its object erased, or loses cfg.causal_min_background_gap of its
    accuracy when its objects are pasted onto other classes' backgrounds instead of its own, beyond the other
    classes' median loss (a class that needs object and background together), or loses
    cfg.causal_min_shortcut_drop of its accuracy without the region, beyond erasing a random region of the same
    size, where the region is known not to be the object (erasing the object costs any class its accuracy); a
    whole-class finding (background_reliance, spatial_shortcut) becomes low when every test it had shows no
    effect, unless it is about part of its class (`part_of_the_class`) or pasting its place already turned other
    classes' images into it (`turns_others`)."""
    if row is None:
        return f
    extra, confirmed, refuted, tests = {}, [], [], 0
    effect = _background_effect(row)
    if _finite(effect):
        tests += 1
        background = row["background_only_accuracy"]
        extra.update(background_only_accuracy=background, background_only_baseline=background - effect)
        if effect >= cfg.causal_min_background_accuracy:
            confirmed.append(f"with its object erased it is still predicted {background:.0%} of the time")
        elif effect <= cfg.causal_max_refuted:
            refuted.append(f"without its object it is predicted {background:.0%} of the time")
    gap = _background_gap(row)
    if _finite(gap):
        tests += 1
        same, rand, typical = row["mixed_same_accuracy"], row["mixed_rand_accuracy"], row.get("mixed_gap_baseline")
        typical = typical if _finite(typical) else 0.0
        extra.update(mixed_same_accuracy=same, mixed_rand_accuracy=rand, mixed_gap_baseline=typical)
        if gap - typical >= cfg.causal_min_background_gap:
            confirmed.append(
                f"pasted onto other classes' backgrounds its objects are recognised {rand:.0%} of the time, onto "
                f"its own class's {same:.0%} (the other classes' median gap: {typical:.0%})"
            )
        elif gap - typical <= cfg.causal_max_refuted:
            refuted.append(f"on other classes' backgrounds its objects are recognised {rand:.0%} of the time")
    removed = row.get("shortcut_removed_accuracy")
    if f.region is not None and _finite(removed) and _same_region(row.get("region"), f.region):
        tests += 1
        extra["shortcut_removed_accuracy"] = removed
        control = row.get("region_control_accuracy")
        control = control if _finite(control) else row["accuracy"]  # causal.csv written before the control
        extra["region_control_accuracy"] = control
        drop = min(row["accuracy"], control) - removed  # beyond what erasing any region that size costs
        frame = _finite(row.get("border_band"))  # a frame: its whole band erased, the band inside it the control
        place, other = ("the border band", "the band just inside it") if frame else (
            "the region", "a random region that size")
        if drop >= cfg.causal_min_shortcut_drop and off_the_object(f, cfg):
            confirmed.append(
                f"erasing {place} drops its accuracy from {row['accuracy']:.0%} to {removed:.0%} (erasing "
                f"{other}: {control:.0%})"
            )
        elif drop >= cfg.causal_min_shortcut_drop:
            tests -= 1  # erasing what may be the object tells nothing about a shortcut
        elif drop <= cfg.causal_max_refuted:
            refuted.append(f"erasing {place} leaves its accuracy at {removed:.0%}")
    severity, message = f.severity, f.message
    if confirmed:
        severity, message = "high", f"{f.message.rstrip('.')}; confirmed: {' and '.join(confirmed)}."
    elif tests and len(refuted) == tests and not part_of_the_class(f, cfg) and not turns_others(f, cfg):
        severity, message = "low", f"{f.message.rstrip('.')}; not confirmed: {' and '.join(refuted)}."
    return dataclasses.replace(f, severity=severity, metrics={**f.metrics, **metrics(**extra)}, message=message)


def causal_can_change(f: Finding, cfg: FindingsConfig, masks: bool) -> bool:
    """Whether the causal check could change a class finding (`with_causal`): raise it (the background tests,
    which need masks, or erasing a region known not to be the object) or lower it (refuted: not when low
    already). Without masks, a low place finding on what its pixels show to be the object is neither, and its
    class need not be read again."""
    return masks or f.severity != "low" or (f.region is not None and off_the_object(f, cfg))


def turns_others(f: Finding, cfg: FindingsConfig) -> bool:
    """Whether pasting the finding's place onto other classes' images turned at least transplant_min_gap (the high
    bar) more of them into the class than a random region did (place evidence): the model strongly uses what is
    there, so an erasure that leaves the class standing refutes nothing. Erasing fills the place with one flat
    colour, which can pass for the cue itself: a white text on hearts (colour family, seed 7), pasted, turned 81 %
    of other images into hearts, yet 88 % of hearts stayed hearts with a flat box in its place. A weaker transplant
    (a cue that can sway a few images but that the class does without) is still refuted."""
    return transplant_effect(f) >= cfg.transplant_min_gap


def part_of_the_class(f: Finding, cfg: FindingsConfig) -> bool:
    """Whether the finding is about part of its class, whose effect the class's figures dilute: a strategy
    cluster, or a place that erasing loses the class for the finding's own images (place evidence) while the
    class as a whole does without it."""
    return f.kind == "strategy_cluster" or erasure_effect(f) >= cfg.erasure_min_effect


def _background_effect(row: dict) -> float:
    """Object-erased accuracy above the baseline of other classes' erased images (NaN when not measured)."""
    background, baseline = row.get("background_only_accuracy"), row.get("background_only_baseline")
    if not _finite(background):
        return math.nan
    return background - (baseline if _finite(baseline) else 0.0)


def typical_background_gap(by_class: dict[str, dict], flagged: set[str]) -> float:
    """The median background gap (`_background_gap`) of the classes no rule flagged (of every class measured when
    none is unflagged), NaN when none was measured: what pasting objects onto other classes' backgrounds costs a
    class under no suspicion, since another class's background cue claims objects of every class alike and real
    photos carry some context for all of them."""
    gaps = {name: _background_gap(row) for name, row in by_class.items()}
    gaps = {name: gap for name, gap in gaps.items() if _finite(gap)}
    pool = [gap for name, gap in gaps.items() if name not in flagged] or list(gaps.values())
    return float(np.median(pool)) if pool else math.nan


def _background_gap(row: dict) -> float:
    """Accuracy on its own class's backgrounds minus on other classes' (Mixed-Same minus Mixed-Rand; NaN when not
    measured)."""
    same, rand = row.get("mixed_same_accuracy"), row.get("mixed_rand_accuracy")
    return same - rand if _finite(same) and _finite(rand) else math.nan


def _same_region(stored, region) -> bool:
    if not isinstance(stored, str) or not stored:
        return False
    return all(abs(a - b) < 1e-6 for a, b in zip(json.loads(stored), region))


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and math.isfinite(value)
