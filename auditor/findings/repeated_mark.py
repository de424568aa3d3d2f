"""Kind: the same pixels at one place in part of a class's images, and rarely in other classes' (a watermark, a
logo, a stamp, a tag), which the model is then tested on.

Found from the pixels by `auditor.mark_search`, not from the maps: a small mark can change a model's answer
while drawing little of its Grad-CAM (timm resnet10t's pullovers on Fashion-MNIST seeds 13 and 14 put 1-2 % of
their attention on a patch half of them carry, against 1 % elsewhere, yet pasting it turns 37 % of other
images into pullovers on seed 13). The mark's figures are the place evidence's (`place_evidence`): pasting it
onto other classes' images and erasing it from the images that carry it, each against a random same-size
region.
"""

from __future__ import annotations

import dataclasses

from auditor.config import FindingsConfig
from auditor.findings.place_evidence import (
    erasure_effect,
    transplant_effect,
    what_the_model_did,
)
from auditor.findings.record import Finding, Kind, metrics

KIND = Kind(
    name="repeated_mark",
    scope="class",
    needs_masks=False,
    advice=(
        "Open the listed images of {classes} at the boxed region: they carry the same pixels there. If it is not "
        "part of the object (a watermark, logo, stamp, tag or border), crop or mask it out of the training images, "
        "or add it to images of other classes, then retrain."
    ),
)


def severity(f: Finding, cfg: FindingsConfig) -> str:
    """The place evidence's scale: high when pasting the mark turns many other images into the class, medium
    when it turns some or erasing it loses the class for some of its carriers, else low (a mark in the data
    that the model does not use, which `auditor.mark_search` leaves out)."""
    pasted, erased = transplant_effect(f), erasure_effect(f)
    if pasted >= cfg.transplant_min_gap:
        return "high"
    if pasted >= cfg.transplant_min_effect or erased >= cfg.erasure_min_effect:
        return "medium"
    return "low"


def mark_finding(class_name: str, region: list[float], place: str, samples: list[str], carriers: int, read: int,
                 reference_share: float, figures: dict, cfg: FindingsConfig) -> Finding:
    """The finding for one repeated mark: `carriers` of the `read` images of the class carry it (most alike
    first in `samples`), `reference_share` of other classes' images do; `figures` from
    `auditor.place_check.place_figures` on its carriers."""
    f = Finding(
        kind=KIND.name, severity="low", classes=[class_name], region=region, samples=samples,
        metrics=metrics(n=read, carriers=carriers, carrier_share=carriers / read, reference_share=reference_share,
                        **figures),
        message="",
    )  # fmt: skip
    level = severity(f, cfg)
    found = (f"{carriers} of the {read} '{class_name}' images searched carry the same pixels at the {place} "
             f"(other classes' images: {reference_share:.0%})")
    tested = " and ".join(what_the_model_did(f.metrics)) or "the model was not tested"
    verdict = "the model does not use it" if level == "low" else "the model uses the mark"
    return dataclasses.replace(f, severity=level, message=f"{found}; {tested}: {verdict}.")
