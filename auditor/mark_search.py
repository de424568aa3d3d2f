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
from auditor.place_check import other_class_images, place_figures, stacked_images
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
    theirs = F.unfold(references, side, stride=stride).permute(2, 0, 1)
    columns = (width - side) // stride + 1
    limit = (tolerance * float(references.std())) ** 2 * ours.shape[-1]  # squared distance, whole window
    candidates = []
    for w in range(ours.shape[0]):
        distances = torch.cdist(ours[w], ours[w])  # [n, n]
        near_ours = distances.square() <= limit
        near_theirs = torch.cdist(ours[w], theirs[w]).square() <= limit  # [n, m]
        excess = near_ours.float().mean(dim=1) - near_theirs.float().mean(dim=1)
        best = int(excess.argmax())
        if float(excess[best]) >= min_share and int(near_ours[best].sum()) >= MIN_CARRIERS:
            carriers = [int(i) for i in distances[best].argsort() if near_ours[best, i]]
            top, left = divmod(w, columns)
            mark = Mark(top * stride, left * stride, side, carriers, float(near_theirs[best].float().mean()))
            candidates.append((float(excess[best]), mark))
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


def _class_sample(dataset: AuditDataset, target: int, cfg: FindingsConfig) -> list[int]:
    ours = [i for i, s in enumerate(dataset.samples) if s.label == target]
    rng = np.random.default_rng([cfg.seed, target, 1])
    return sorted(rng.choice(ours, size=min(cfg.mark_images, len(ours)), replace=False).tolist()) if ours else []


def with_marks(findings: list[Finding], model, dataset: AuditDataset, classes: list[str], device,
               cfg: FindingsConfig, references_of: dict[int, torch.Tensor | None] | None = None) -> list[Finding]:
    """The findings with a `repeated_mark` for each mark found that the model uses (medium or high), unless a
    place finding of the same class and place already tells it as strongly; a weaker one is merged into the mark's
    finding. Marks the model does not use are left out: a window of a tint repeats but pasting it changes nothing,
    and a centred object's saturated stroke repeats too (the real LeNet's digits: a dozen such windows per audit).
    references_of: each class's other-class images as the place check read them (`check_places`), filled in here
    for the classes it did not read."""
    if not cfg.mark_search:
        return findings
    out = list(findings)
    references_of = {} if references_of is None else references_of
    with stage("mark_search_s"):
        for target, name in enumerate(classes):
            indices = _class_sample(dataset, target, cfg)
            if target not in references_of:
                references_of[target] = other_class_images(dataset, target, cfg)
            images, references = stacked_images(dataset, indices), references_of[target]
            if images is None or references is None or images.shape[1:] != references.shape[1:]:
                continue
            small = searched(images).shape[-2:]
            for mark in repeated_marks(images, references, cfg.mark_window, cfg.mark_tolerance, cfg.mark_min_share,
                                       cfg.mark_max_per_class):
                region = box(mark, *small)
                donors = images[mark.carriers]
                figures = place_figures(model, donors, references, region, target, device, cfg.seed,
                                        window=cfg.place_pixel_window)
                found = mark_finding(
                    name, region, describe_place((mark.top, mark.top + mark.side, mark.left, mark.left + mark.side),
                                                 min(small)),
                    [dataset.samples[indices[i]].id for i in mark.carriers[:12]], len(mark.carriers), len(indices),
                    mark.reference_share, figures, cfg,
                )  # fmt: skip
                if found.severity != "low":  # a mark the model does not use says nothing about the model
                    out = _fold(out, found)
    return out


def _fold(findings: list[Finding], mark: Finding) -> list[Finding]:
    """Add the mark's finding, unless a place finding of the class at the same place is at least as severe; a
    less severe one is replaced by the mark's, its evidence merged in."""
    rank = SEVERITIES.index
    for i, f in enumerate(findings):
        if f.kind in PLACE_KINDS and f.classes == mark.classes and f.region and regions_overlap(f.region, mark.region):
            if rank(f.severity) <= rank(mark.severity):
                return findings
            return findings[:i] + [merge(mark, f)] + findings[i + 1 :]
    return findings + [mark]
