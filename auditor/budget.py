"""What the model checks after the sweep may spend: a budget per run, never per class.

The sweep reads every image once. The checks after it (batch-norm, place evidence, causal, repeated marks,
image properties, counterfactual evidence) re-run the model on some images; each one caps the classes it examines
per run (`FindingsConfig.check_max_classes`, `mark_max_classes`, ...) and chooses them here: the classes its findings
name first, most severe first, then a seeded sample of the rest. So a 1,000-class audit costs about what a
50-class one does after the sweep, and the report says which classes were sampled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from auditor.config import AttentionConfig
from auditor.hooks import forward_pre_hook
from auditor.property_names import PIXEL_PROPERTIES
from auditor.timing import count


def flagged_classes(findings, classes: Sequence[str]) -> list[int]:
    """The classes class-level findings name, in the findings' order (most severe first), each once."""
    from auditor.findings import scope_of  # noqa: PLC0415 - the rules' imports (scipy) wait until the sweep is done

    index = {name: i for i, name in enumerate(classes)}
    out: dict[int, None] = {}
    for f in findings:
        if scope_of(f.kind) == "class" and f.classes and f.classes[0] in index:
            out.setdefault(index[f.classes[0]])
    return list(out)


def classes_in_budget(first: Sequence[int], n_classes: int, most: int, seed: int, fill: bool = True) -> list[int]:
    """At most `most` class indices: `first` in its order, then (with `fill`) a seeded sample of the others."""
    chosen = list(dict.fromkeys(int(c) for c in first))[:most]
    if fill and len(chosen) < most:
        rest = np.setdiff1d(np.arange(n_classes), chosen)
        picked = np.random.default_rng([seed, 7]).choice(rest, size=min(most - len(chosen), len(rest)), replace=False)
        chosen += sorted(int(c) for c in picked)
    return chosen


# What a check may spend on a small run, as a share of the run's audited images: on a large run its cap binds, on a
# small one this keeps it a small part of the command (each image a check runs costs about what the sweep's did).
RUN_SHARE = {
    "batch_norm_check": 0.1,  # images run with batch statistics
    "causal_check": 0.25,  # images read (each run once to five times: erased, region, control, mixed)
    "place_check": 0.5,  # images run through the model by the place tests (a test: its images erased at the place
    # and at a control, other classes' images pasted with both; about 150 a test; the most severe finding first,
    # and the first test always runs). The planted-bias benchmarks used 0.08-0.34 of their runs; 512 COCO photos
    # with masks, uncapped, 1.8 (912 passes, 26 s against an 18.7 s sweep)
    "property_check": 0.25,  # images run through the model, edits and controls together
    "mark_search": 0.25,  # images run through the model by the mark tests (a test: its carriers and references,
    # each pasted or erased and under the control; the first test always runs)
}
SHARE_FLOOR = 64  # never fewer: below this a check's proportions mean nothing


def share_of_run(cap: int | None, audited: int, check: str) -> int:
    """A check's image count on a run of `audited` images: its cap (None: none of its own), and at most
    RUN_SHARE[check] of the run (SHARE_FLOOR at least)."""
    share = max(SHARE_FLOOR, int(audited * RUN_SHARE[check]))
    return share if cap is None else min(cap, share)


def affordable(costs: Iterable[int], allowance: int) -> int:
    """How many of the first `costs` fit in `allowance` together; the first always does (a small run still gets
    its most important test)."""
    spent = taken = 0
    for cost in costs:
        if taken and spent + cost > allowance:
            break
        spent, taken = spent + cost, taken + 1
    return taken


def sampling_note(check: str, examined: int, n_classes: int, setting: str) -> str | None:
    """A note for findings.json (the report shows it) when a check examined fewer classes than the run has."""
    if examined >= n_classes:
        return None
    return (f"{check}: {examined} of {n_classes} classes examined (the classes findings name first, most severe "
            f"first, then a seeded sample of the others; findings.{setting} {'set' if ' and ' in setting else 'sets'} "
            "the budget per run).")


@contextlib.contextmanager
def counting_forwards(model: torch.nn.Module) -> Iterator[None]:
    """Count every image the model runs on inside the block into the stage that runs it (manifest.json's
    `work`), whichever check calls it."""

    def hook(_module, args):
        if args and isinstance(args[0], torch.Tensor):
            count(forward_images=args[0].shape[0])

    with forward_pre_hook(model, hook, required=False):  # a module that takes no Python hooks is audited uncounted
        yield


def declared_budgets(findings, report, attention=None) -> dict[str, dict[str, int]]:
    """What each check after the sweep may spend per run, by its settings alone (never by the number of classes):
    images decoded from files (`images_read`), thumbs read (`thumbs_read`), images run through the model
    (`forward_images`), feature rows searched for near-duplicates (`feature_rows`) and stored maps searched for
    localisation (`maps_searched`). manifest.json's `work` holds what the run spent; tests hold the two against
    each other.

    A place or mark test reads its donors (at most `max_samples` or `mark_images`) and the class's
    `place_check_images` references, and runs each at most three times (as they are, erased or pasted, and the
    random control); a class has at most PLACE_FINDINGS_PER_CLASS place findings."""
    refs, bn = findings.place_check_images, findings.health_batch_norm_images
    place = findings.check_max_classes * (refs + PLACE_FINDINGS_PER_CLASS * findings.max_samples)
    marks = findings.mark_max_tests * (findings.mark_images + refs)
    causal = findings.causal_max_images
    shown = report.finding_galleries * report.gallery_size
    edited = findings.check_max_classes * 2 * findings.property_images  # the class's images and as many others'
    return {
        "batch_norm_check": {"images_read": bn, "forward_images": bn},
        # the pixels are measured on the thumbs first: each class's references once, each finding's images
        "place_check": {"images_read": place, "forward_images": 3 * place, "thumbs_read": place},
        "causal_check": {"images_read": causal, "forward_images": 5 * causal},  # erased, region, control, mixed x2
        "mark_search": {"images_read": marks, "forward_images": 3 * marks,
                        "thumbs_read": findings.mark_max_classes * (findings.mark_images + refs)},
        # each image as it is, then per pixel property the class departs on, edited and the control edit
        "property_check": {"images_read": edited, "forward_images": (1 + 2 * len(PIXEL_PROPERTIES)) * edited},
        "counterfactual": {"images_read": shown, "forward_images": shown},
        # the near-duplicate search reads features.npy, no image: each searched row costs one row x N product
        "duplicates": {"feature_rows": findings.duplicate_max_queries},
        # MaxBoxAccV2 and PxAP (auditor.localisation) read stored maps, no image: 100 labellings per sampled map
        "localisation": {"maps_searched": (attention or AttentionConfig()).localisation_max_images},
    }


PLACE_FINDINGS_PER_CLASS = 8  # spatial_shortcut, background_reliance and up to spray_max_clusters (6) clusters
