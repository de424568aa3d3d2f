"""Is a flagged place the object or something else? Evidence from the pixels, for runs without masks too.

Without masks, a class whose objects sit in the middle of the image looks exactly like a class that attends to
a fixed place. Two measurements tell them apart (made by `auditor.causal.place_check`, which needs the model and
the images; this module only judges them):

  pixel_std_ratio      the region's pixels vary across the finding's images this much, relative to the same
                       pixels across other classes' images, at the pixels where the two differ on average
                       (`auditor.place_check.pixel_std_ratio`), in the region's most distinctive window
                       (`distinctive_window`, a quarter of the image's side): near 0 for a watermark, a border or
                       a tint that is the same every time, near 1 for objects, which differ from image to image;
                       region_pixel_std_ratio is the same over the whole region, for the reader
  transplant_rate      share of other classes' images predicted as the class once the region is pasted onto
                       them at the same place, against transplant_control_rate for pasting a random same-size
                       region of the same images (at its own place)
  erased_rate          share of the finding's own images still predicted as the class with the region erased,
                       against erased_control_rate for erasing a random same-size region instead

A place finding without mask evidence is raised above low only when the pixels say it is not the object and the
model uses what is there: pasting it turns some other images into the class (transplant_min_effect), or erasing
it loses the class for some of the finding's images (erasure_min_effect: a cue half a class carries is needed
where it is but often too weak to turn other classes' images); on pixels alone where the model could not be
run. It is high only when pasting it turns many (transplant_min_gap).

With masks the place is known to be off the object, and the maps' finding keeps its severity, unless the model,
tested, does not use what is there (neither effect reaches its minimum): then it is low too, as a place the model
looks at but does not need (512 COCO photos with masks: three of the four unmerged medium and high places of a
fitted head on random features, erasing them lost nothing and pasting them turned 0-6 % of other images; on the
planted-bias benchmarks one place, a clean class's medium). A place merged with its class's background_reliance keeps that part's
severity: the background may still be used where one place of it is not.
"""

from __future__ import annotations

import dataclasses
import math

from auditor.config import FindingsConfig
from auditor.findings.record import Finding, metrics
from auditor.findings.spatial_shortcut import strong

PLACE_KINDS = ("spatial_shortcut", "strategy_cluster")
TESTED_PLACE_KINDS = (*PLACE_KINDS, "repeated_mark")  # every finding at a place the model was tested on: the
# rules' places (place evidence) and the mark search's marks (their own tests)


def needs_place_check(f: Finding) -> bool:
    return f.kind in PLACE_KINDS and f.region is not None


def masks_checked(f: Finding) -> bool:
    """The rule could test the place against masks (and found it off the object, or it would not report it)."""
    return "place_on_object" in f.metrics


def same_pixels(f: Finding, cfg: FindingsConfig) -> bool:
    ratio = f.metrics.get("pixel_std_ratio", math.nan)
    return ratio <= cfg.place_max_pixel_std_ratio


def transplant_effect(f: Finding) -> float:
    """Share of other classes' images the region turns into the class, beyond a random region (NaN unmeasured)."""
    return f.metrics.get("transplant_rate", math.nan) - f.metrics.get("transplant_control_rate", math.nan)


def erasure_effect(f: Finding) -> float:
    """Share of the finding's images that lose the class without the region, beyond a random region (NaN
    unmeasured)."""
    return f.metrics.get("erased_control_rate", math.nan) - f.metrics.get("erased_rate", math.nan)


def what_the_model_did(figures: dict) -> list[str]:
    """The transplant and erasure figures that were measured, as the finding's message says them."""
    return [s for s in (what_pasting_did(figures), what_erasing_did(figures)) if s is not None]


def _place_words(figures: dict) -> tuple[str, str]:
    """The place and its control as a message names them (a frame's place is the border band, its control the band
    just inside it: `place_check.place_figures`)."""
    return ("the border band", "the band just inside it") if "border_band" in figures else ("it", "a random region")


def what_pasting_did(figures: dict) -> str | None:
    """The transplant figures as a message says them; None where they were not measured."""
    rate, control = figures.get("transplant_rate"), figures.get("transplant_control_rate")
    if rate is None or control is None:
        return None
    it, other = _place_words(figures)
    return (f"pasting {it} onto other classes' images turns {rate:.0%} of them into this class "
            f"({other} of the same images: {control:.0%})")


def what_erasing_did(figures: dict) -> str | None:
    """The erasure figures as a message says them; None where they were not measured."""
    kept, kept_control = figures.get("erased_rate"), figures.get("erased_control_rate")
    if kept is None or kept_control is None:
        return None
    it, other = _place_words(figures)
    return (f"with {it} erased the model still names the class for {kept:.0%} of these images "
            f"({other} erased: {kept_control:.0%})")


def off_the_object(f: Finding, cfg: FindingsConfig) -> bool:
    """Whether the place is known not to be the object: by masks, or by its pixels."""
    return masks_checked(f) or same_pixels(f, cfg)


def worth_reporting(f: Finding, cfg: FindingsConfig) -> bool:
    """A SpRAy cluster whose place, by its pixels, is where its objects lie is no other strategy: left out."""
    return not (f.kind == "strategy_cluster" and not masks_checked(f) and "pixel_std_ratio" in f.metrics
                and not same_pixels(f, cfg))


def unused(f: Finding, cfg: FindingsConfig) -> bool:
    """The model was tested at the place and neither pasting nor erasing it moved the class by its minimum."""
    pasted, erased = transplant_effect(f), erasure_effect(f)
    measured = not (math.isnan(pasted) and math.isnan(erased))
    return measured and not (pasted >= cfg.transplant_min_effect or erased >= cfg.erasure_min_effect)


def with_place_evidence(f: Finding, figures: dict, cfg: FindingsConfig) -> Finding:
    """Fold the pixel, transplant and erasure figures into a place finding and set its severity (with masks: low
    only where the model does not use the place; see the module's docstring)."""
    f = dataclasses.replace(f, metrics={**f.metrics, **metrics(**figures)})
    ratio = f.metrics.get("pixel_std_ratio")
    if ratio is None:
        return f
    said = [(f"the region's most distinctive pixels vary {ratio:.2f}x as much across these images as across other "
             "classes' images"), *what_the_model_did(f.metrics)]
    unused_note = (f"{f.message.rstrip('.')}; {said[0]} but {' and '.join(said[1:])}: the model does not use what "
                   "is there.")
    if masks_checked(f):
        if unused(f, cfg) and not any(name.startswith("background_reliance.") for name in f.metrics):
            return dataclasses.replace(f, severity="low", message=unused_note)
        return dataclasses.replace(f, message=f"{f.message.rstrip('.')}; {' and '.join(said)}.")
    if not same_pixels(f, cfg):
        return dataclasses.replace(
            f, severity="low",
            message=f"{f.message.rstrip('.')}; {said[0]}, as an object's do, so the place is likely the object.",
        )
    if unused(f, cfg):
        return dataclasses.replace(f, severity="low", message=unused_note)
    pasted = transplant_effect(f)
    high = pasted >= cfg.transplant_min_gap and (f.kind != "spatial_shortcut" or strong(f, cfg))
    return dataclasses.replace(
        f, severity="high" if high else "medium",
        message=f"{f.message.rstrip('.')}; but {' and '.join(said)}: the place holds the same thing every time.",
    )
