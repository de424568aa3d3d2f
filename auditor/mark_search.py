"""Repeated marks: the same pixels at one place in part of a class's images and rarely in other classes', found
from the images alone and then tested with the model (`auditor.findings.repeated_mark`).

The heatmap rules find a place the maps keep returning to; a mark the model uses without drawing its maps there
is invisible to them. This search needs no maps and no masks. For each class it reads a seeded sample of the
class's images and the class's yardstick of other classes' images (`place_check`), cuts both into windows of
`mark_window` x the side (on a half-window stride, at most 64 px a side: small marks survive the pooling), and
per window counts, for each class image, the class images and the other images within `mark_tolerance` of it
(root-mean-square difference, in units of the other images' pixel std). A window where many class images
nearly match one another and few other images match them holds a repeated mark; an object never repeats that
exactly, a background every class shares matches the others too. Each mark is then pasted and erased like a
place finding's region (`place_check.place_figures`, the carriers as donors), and reported only where the model
uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from auditor.config import FindingsConfig
from auditor.data import AuditDataset
from auditor.findings import Finding
from auditor.findings.place_evidence import PLACE_KINDS
from auditor.findings.places import describe_place, regions_overlap
from auditor.findings.record import SEVERITIES
from auditor.findings.registry import merge
from auditor.findings.repeated_mark import mark_finding
from auditor.budget import affordable, classes_in_budget, flagged_classes, sampling_note, share_of_run
from auditor.place_check import (
    Pixels,
    References,
    other_class_images,
    place_figures,
    reference_indices,
    stacked_images,
)
from auditor.threads import one_thread
from auditor.timing import stage

SEARCH_SIDE = 64  # images are pooled to at most this many pixels a side for the search
MIN_SIDE = 4  # a smaller window holds so few pixels that unrelated images match by chance
MIN_CARRIERS = 5  # fewer images (the one matched counted) are no repeated mark: a small class matches itself


@dataclass(frozen=True)
class Mark:
    """A window (top, left, side in pixels of the searched size) where `carriers` (indices into the class's
    images, most alike first) share the same pixels, as `reference_share` of the other classes' images do."""

    top: int
    left: int
    side: int
    carriers: list[int]
    reference_share: float
    excess: float = 0.0  # share of the class's images that match, beyond the references' share


def searched(images: torch.Tensor) -> torch.Tensor:
    """The images pooled to at most SEARCH_SIDE pixels a side (area averaging)."""
    height, width = images.shape[-2:]
    factor = math.ceil(max(height, width) / SEARCH_SIDE)
    return F.avg_pool2d(images, factor, ceil_mode=True) if factor > 1 else images


def repeated_marks(images: torch.Tensor, references: torch.Tensor, window: float, tolerance: float,
                   min_share: float, most: int) -> list[Mark]:
    """Up to `most` windows, best first, where at least `min_share` more of the class images than of the
    references nearly match one class image (`tolerance`, see the module's docstring), each a different mark
    (`same_mark`)."""
    images, references = searched(images), searched(references)
    height, width = images.shape[-2:]
    side = min(max(MIN_SIDE, round(window * min(height, width))), height, width)
    stride = max(1, side // 2)
    ours = F.unfold(images, side, stride=stride).permute(2, 0, 1)  # [windows, n, C * side * side]
    columns = (width - side) // stride + 1
    spread = tolerance * float(references.std())
    limit = spread**2 * ours.shape[-1]  # squared distance, whole window
    # Every window at once: one batched distance call, not one per window (thousands of tiny calls, each a
    # parallel region, cost more in thread wake-ups than in arithmetic).
    distances = torch.cdist(ours, ours)  # [windows, n, n]
    near_ours = distances.square() <= limit
    # A mark needs MIN_CARRIERS class images alike in its window, so only windows where one image has that many
    # are compared with the references: the costly part, and on the scale benchmark 1 window in 7,200 gets there.
    kept = torch.nonzero(near_ours.sum(dim=2).max(dim=1).values >= MIN_CARRIERS).flatten().tolist()
    if not kept:
        return []
    near_ours, distances = near_ours[kept], distances[kept]
    theirs = torch.stack([references[:, :, top : top + side, left : left + side].flatten(1)  # as F.unfold lays it out
                          for top, left in ((w // columns * stride, w % columns * stride) for w in kept)])
    near_theirs = torch.cdist(ours[kept], theirs).square() <= limit  # [kept windows, n, m]
    excess = near_ours.float().mean(dim=2) - near_theirs.float().mean(dim=2)  # [kept windows, n]
    best = excess.argmax(dim=1)
    # Images that match over the whole image, not a window, are copies of one image (near-duplicates): every window
    # of theirs repeats, and testing those "marks" on the model would say nothing about a mark.
    flat = images.flatten(1)
    copies = torch.cdist(flat, flat).square() <= spread**2 * flat.shape[1]
    candidates = []
    for k, w in enumerate(kept):
        b = int(best[k])
        if float(excess[k, b]) >= min_share and int(near_ours[k, b].sum()) >= MIN_CARRIERS:
            carriers = [int(i) for i in distances[k, b].argsort() if near_ours[k, b, i]]
            if float(copies[b, carriers].float().mean()) >= 0.5:
                continue
            top, left = divmod(w, columns)
            mark = Mark(top * stride, left * stride, side, carriers, float(near_theirs[k, b].float().mean()),
                        float(excess[k, b]))
            candidates.append((float(excess[k, b]), mark))
    marks: list[Mark] = []
    for _, mark in sorted(candidates, key=lambda c: -c[0]):
        if len(marks) < most and not any(same_mark(mark, m, height, width) for m in marks):
            marks.append(mark)
    return marks


def same_mark(a: Mark, b: Mark, height: int, width: int) -> bool:
    """Overlapping windows, or mostly the same images: a tint or a background pattern repeats in every window
    it covers, on the same images, and is one cue."""
    shared = len(set(a.carriers) & set(b.carriers)) / min(len(a.carriers), len(b.carriers))
    return regions_overlap(box(a, height, width), box(b, height, width)) or shared > 0.5


def box(mark: Mark, height: int, width: int) -> list[float]:
    """The mark's window as a normalised [x0, y0, x1, y1] region."""
    return [mark.left / width, mark.top / height, (mark.left + mark.side) / width, (mark.top + mark.side) / height]


def _class_sample(labels: np.ndarray, target: int, cfg: FindingsConfig) -> list[int]:
    ours = np.flatnonzero(labels == target)
    rng = np.random.default_rng([cfg.seed, target, 1])
    return sorted(rng.choice(ours, size=min(cfg.mark_images, len(ours)), replace=False).tolist()) if len(ours) else []


def with_marks(findings: list[Finding], model, dataset: AuditDataset, classes: list[str], device,
               cfg: FindingsConfig, references_of: dict[int, References] | None = None,
               thumbs: Pixels | None = None, notes: list[str] | None = None, predictions: dict[int, int] | None = None,
               audited: int | None = None) -> list[Finding]:
    """The findings with a `repeated_mark` for each mark found that the model uses (medium or high), unless a
    place finding of the same class and place already tells it as strongly; a weaker one is merged into the mark's
    finding. Marks the model does not use are left out: a window of a tint repeats but pasting it changes nothing,
    and a centred object's saturated stroke repeats too (the real LeNet's digits: a dozen such windows per audit).

    Budgets per run: the search reads `mark_max_classes` classes (flagged first, then a seeded sample), from the
    sweep's thumbs (a `Pixels` on thumbs.npy, as the place check reads them) where there are any, else from the
    files, and the model tests at most
    `mark_max_tests` marks, those of flagged classes first, then the most repeated, and on a small run only as
    many as fit in RUN_SHARE of its `audited` images (`affordable_tests`). references_of: each class's
    other-class images as the place check read them (`check_places`); other classes' are read one class at a
    time, so memory stays flat in the number of classes. predictions: the sweep's, by dataset index, which spare
    running the model on the references again. A note on what was sampled goes to `notes`."""
    if not cfg.mark_search:
        return findings
    references_of = {} if references_of is None else references_of
    pixels = thumbs if thumbs is not None else Pixels(dataset, None, {})
    labels = np.array([s.label for s in dataset.samples])
    flagged = flagged_classes(findings, classes)
    searched_classes = classes_in_budget(flagged, len(classes), cfg.mark_max_classes, cfg.seed)
    with stage("mark_search_s"):
        candidates = []  # (class, its sample's dataset indices, mark, searched size)
        with one_thread():
            for target in searched_classes:
                indices = pixels.usable(_class_sample(labels, target, cfg))
                images = pixels.read(indices)
                references = pixels.read(pixels.usable(reference_indices(labels, target, cfg)))
                if images is None or references is None or images.shape[1:] != references.shape[1:]:
                    continue
                small = searched(images).shape[-2:]
                for mark in repeated_marks(images, references, cfg.mark_window, cfg.mark_tolerance,
                                           cfg.mark_min_share, cfg.mark_max_per_class):
                    candidates.append((target, indices, mark, small))
        # A mark where a high place finding of its class already is could only be left out (`_fold`): not tested.
        candidates = [c for c in candidates if not any(
            f.severity == "high" and _same_place(f, classes[c[0]], box(c[2], *c[3])) for f in findings)]
        rank = {c: i for i, c in enumerate(flagged)}
        by_priority = sorted(range(len(candidates)),
                             key=lambda k: (rank.get(candidates[k][0], len(rank)), -candidates[k][2].excess))
        allowance = share_of_run(None, len(dataset) if audited is None else audited, "mark_search")
        by_priority = affordable_tests([candidates[k][2] for k in by_priority[: cfg.mark_max_tests]],
                                       by_priority[: cfg.mark_max_tests], cfg.place_check_images, allowance)
        tested = sorted(by_priority)  # in class order, as the search found them
        out = list(findings)
        current: tuple[int, References] = (-1, (None, None))  # one class's references held at a time
        for target, indices, mark, small in (candidates[k] for k in tested):
            if current[0] != target:
                current = (target, references_of[target] if target in references_of
                           else other_class_images(dataset, target, cfg, labels, predictions))
            donors, (references, called) = stacked_images(dataset, [indices[i] for i in mark.carriers]), current[1]
            if donors is None or references is None or donors.shape[1:] != references.shape[1:]:
                continue
            region = box(mark, *small)
            figures = place_figures(model, donors, references, region, target, device, cfg.seed,
                                    window=cfg.place_pixel_window, reference_predictions=called)
            found = mark_finding(
                classes[target], region,
                describe_place((mark.top, mark.top + mark.side, mark.left, mark.left + mark.side), min(small)),
                [dataset.samples[indices[i]].id for i in mark.carriers[:12]], len(mark.carriers), len(indices),
                mark.reference_share, figures, cfg,
            )  # fmt: skip
            if found.severity != "low":  # a mark the model does not use says nothing about the model
                out = _fold(out, found)
    if notes is not None:
        note = sampling_note("Repeated-mark search", len(searched_classes), len(classes), "mark_max_classes")
        notes.extend(n for n in [note] if n)
        if len(candidates) > len(tested):
            notes.append(f"Repeated-mark search: {len(tested)} of {len(candidates)} marks found were tested on the "
                         "model (those of flagged classes first, then the most repeated; findings.mark_max_tests "
                         "and auditor.budget.RUN_SHARE).")
    return out


def affordable_tests(marks: list[Mark], keys: list, references: int, allowance: int) -> list:
    """The keys of the first `marks` whose tests fit in `allowance` forwards (the first always): a test runs its
    carriers erased and under the control erasure, and `references` other images pasted and under the control."""
    return keys[: affordable((2 * len(mark.carriers) + 2 * references for mark in marks), allowance)]


def _fold(findings: list[Finding], mark: Finding) -> list[Finding]:
    """Add the mark's finding, unless a place finding of the class at the same place is at least as severe; a
    less severe one is replaced by the mark's, its evidence merged in."""
    rank = SEVERITIES.index
    for i, f in enumerate(findings):
        if _same_place(f, mark.classes[0], mark.region):
            if rank(f.severity) <= rank(mark.severity):
                return findings
            return findings[:i] + [merge(mark, f)] + findings[i + 1 :]
    return findings + [mark]


def _same_place(finding: Finding, class_name: str, region: list[float]) -> bool:
    """Whether a finding is a place finding of the class whose region overlaps `region`."""
    return (finding.kind in PLACE_KINDS and finding.classes == [class_name] and bool(finding.region)
            and regions_overlap(finding.region, region))
