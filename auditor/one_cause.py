"""One cause, one card: a class's place findings whose pixels look alike at their places (a sticker that moves
between corners, the sides of a frame) are one finding that names every place.

SpRAy clusters attention by where it falls, and the repeated-mark search windows by where they sit, so a mark that
moves is found once per place: four cards for one sticker. Each place finding's appearance is its images' mean at
the window of its region where they differ most from other classes' images (`place_check.distinctive_window`),
read from the sweep's thumbs (no file decoded, no model run). Two findings of one class are one cause when both
windows differ from the other classes' images there by at least `group_min_contrast` x the references' pixel std,
and from each other, under the eight turns and flips of a square (a frame's top side is its left side turned) and
shifts of a pixel or two, by at most `group_max_difference` x that std, or one's window shows that closely somewhere
in the other's region (a frame's corner is where one side's images differ most, a straight side where another's
do). Background clutter that merely differs from other classes' is no cue: it never matches itself at another place
as closely as a mark does. With masks, the same cue off the object also
makes the class's attention fall off its objects: the class's background_reliance finding is that cause too, and is
folded into the group (`registry.merge`, its evidence kept). Likewise a class's property_shortcut whose property
departs on the class's backgrounds rather than on its objects (a greener cast from the grass behind every crescent)
is its background_reliance's cause too, and is folded into it (`absorb_property`); where the maps raised no
background_reliance (the model reads a brightness from the whole image and its attention stays on the object), the
property finding, confirmed on the model, is the class's background_reliance.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from auditor.causal import region_mask
from auditor.config import FindingsConfig
from auditor.findings.place_evidence import TESTED_PLACE_KINDS
from auditor.findings.places import describe_place, regions_overlap
from auditor.findings.record import Finding, metrics, more_severe
from auditor.geometry import upsample
from auditor.findings.registry import PLACE_PRIORITY, merge, one_problem
from auditor.place_check import distinctive_window
from auditor.properties import property_maps
from auditor.property_names import PROPERTIES

MEMBERS, REFERENCES = 32, 64  # images read per finding and per class's yardstick: enough for a mean


def turns(patch: torch.Tensor) -> list[torch.Tensor]:
    """The eight turns and flips of a square patch [C, S, S]."""
    out = []
    for flipped in (patch, patch.flip(-1)):
        out += [torch.rot90(flipped, k, dims=(-2, -1)) for k in range(4)]
    return out


@dataclasses.dataclass(frozen=True)
class Appearance:
    """A place finding's look: the mean of its images at its distinctive window (`patch`, [C, S, S]; `native`, the
    window as cut, before resizing), over its whole region (`field`, [C, h, w]), and how far the window stands from
    other classes' images (`contrast`, in units of `scale`, their pixel std)."""

    patch: torch.Tensor
    contrast: float
    scale: float
    native: torch.Tensor | None = None
    field: torch.Tensor | None = None


def appearance(members: torch.Tensor, references: torch.Tensor, region, window: float) -> Appearance | None:
    """The look of `members` [n, C, H, W] at `region` against `references` [m, C, H, W] (float pixels)."""
    height, width = members.shape[-2:]
    mask = region_mask(region, height, width)
    if not mask.any() or len(members) == 0 or len(references) < 2:
        return None
    side = max(2, round(window * min(height, width)))
    spot = distinctive_window(members, references, mask, side)
    rows, cols = torch.nonzero(spot.any(dim=1)).flatten(), torch.nonzero(spot.any(dim=0)).flatten()
    crop = (slice(None), slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    mean = members.mean(dim=0)
    ours, theirs = mean[crop], references.mean(dim=0)[crop]
    scale = max(float(references.std()), 1e-6)
    contrast = float((ours - theirs).square().mean().sqrt()) / scale
    patch = F.interpolate(ours[None], size=(side, side), mode="bilinear", align_corners=False)[0]
    rows, cols = torch.nonzero(mask.any(dim=1)).flatten(), torch.nonzero(mask.any(dim=0)).flatten()
    field = mean[:, int(rows[0]) : int(rows[-1]) + 1, int(cols[0]) : int(cols[-1]) + 1]
    return Appearance(patch, contrast, scale, native=ours, field=field)


def difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root-mean-square difference of two patches [C, S, S], the least over the eight turns and flips of `a` and
    shifts of up to a quarter of the side (where each window caught the mark is a matter of a pixel or two), on the
    part the shifted patches share."""
    most, side = a.shape[-1] // 4, a.shape[-1]
    best = math.inf
    for turned in turns(a):
        for dy in range(-most, most + 1):
            for dx in range(-most, most + 1):
                ours = turned[:, max(dy, 0) : side + min(dy, 0), max(dx, 0) : side + min(dx, 0)]
                theirs = b[:, max(-dy, 0) : side + min(-dy, 0), max(-dx, 0) : side + min(-dx, 0)]
                best = min(best, float((ours - theirs).square().mean().sqrt()))
    return best


def found_in(patch: torch.Tensor, field: torch.Tensor) -> float:
    """Root-mean-square difference of a patch [C, h, w], turned or flipped, from the window of the `field`
    [C, H, W] it matches best (inf where it does not fit): a frame's corner, where one finding's images differ
    most, holds the straight side another finding's images show at the opposite edge."""
    best = math.inf
    for turned in turns(patch):
        h, w = turned.shape[-2:]
        if h > field.shape[-2] or w > field.shape[-1]:
            continue
        windows = field.unfold(1, h, 1).unfold(2, w, 1)  # [C, H - h + 1, W - w + 1, h, w]
        best = min(best, float((windows - turned[:, None, None]).square().mean(dim=(0, 3, 4)).sqrt().min()))
    return best


def alike(a: Appearance, b: Appearance, cfg: FindingsConfig) -> bool:
    """Both stand out from other classes' images, and they match each other up to a turn, a flip or a small
    shift (`difference`), or one's distinctive window shows somewhere in the other's region (`found_in`)."""
    if min(a.contrast, b.contrast) < cfg.group_min_contrast:
        return False
    closest = difference(a.patch, b.patch)
    if a.native is not None and b.field is not None:
        closest = min(closest, found_in(a.native, b.field))
    if b.native is not None and a.field is not None:
        closest = min(closest, found_in(b.native, a.field))
    return closest / min(a.scale, b.scale) <= cfg.group_max_difference


def grouped(members: list[Finding], size: int = 100) -> Finding:
    """One finding for the members (most severe first): the first's kind and region, the most severe severity,
    every member's images (the first's first), and a message naming every place."""
    first = members[0]
    severity = first.severity
    for f in members[1:]:
        severity = more_severe(severity, f.severity)
    samples = list(dict.fromkeys(s for f in members for s in f.samples))
    places = [describe_place((r[1] * size, r[3] * size, r[0] * size, r[2] * size), size)
              for r in (f.region for f in members)]
    message = (f"{first.message} The same pixels are at {len(members)} places ({', '.join(places)}): one cause, "
               f"which moves or runs along the image (also found as {', '.join(f.kind for f in members[1:])}).")
    return dataclasses.replace(first, severity=severity, samples=samples, message=message,
                               metrics={**first.metrics, "places": len(members)})


def one_cause(findings: list[Finding], records: pd.DataFrame, thumbs: np.ndarray | None, classes: list[str],
              cfg: FindingsConfig) -> list[Finding]:
    """The findings with each class's look-alike place findings at different places (`alike`, transitively; at
    medium or above: a low finding is not yet a cue, and an object's parts look alike too) grouped into one
    (`grouped`), kept where the first of them stood; look-alikes at one place are one card (`at_one_place`).
    Without thumbs (runs kept none) nothing is grouped."""
    if thumbs is None or not cfg.group_max_difference > 0:
        return findings
    row_of = dict(zip(records["id"].astype(str), records["row"].astype(int)))
    labels = records["label_idx"].to_numpy()
    by_class: dict[str, list[int]] = {}
    for i, f in enumerate(findings):
        if (f.kind in TESTED_PLACE_KINDS and f.region is not None and f.severity != "low" and f.classes
                and f.classes[0] in classes):
            by_class.setdefault(f.classes[0], []).append(i)
    parent = list(range(len(findings)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for name, members in by_class.items():
        if len(members) < 2:
            continue
        target = classes.index(name)
        others = records["row"].to_numpy()[labels != target]
        rng = np.random.default_rng([cfg.seed, target, 21])
        picked = np.sort(rng.choice(others, size=min(REFERENCES, len(others)), replace=False))
        references = torch.from_numpy(np.asarray(thumbs[picked], dtype=np.float32))
        looks = {}
        for i in members:
            rows = sorted(row_of[s] for s in findings[i].samples[:MEMBERS] if s in row_of)
            if rows:
                images = torch.from_numpy(np.asarray(thumbs[rows], dtype=np.float32))
                looks[i] = appearance(images, references, findings[i].region, cfg.place_pixel_window / 2)
        for a in members:
            for b in members:
                if (a < b and looks.get(a) is not None and looks.get(b) is not None
                        and alike(looks[a], looks[b], cfg)):
                    parent[root(b)] = root(a)
    groups: dict[int, list[int]] = {}
    for i in range(len(findings)):
        groups.setdefault(root(i), []).append(i)
    out = []
    for i, f in enumerate(findings):
        members = groups[root(i)]
        if i == members[0]:
            places = at_one_place([findings[j] for j in members], cfg)
            out.append(places[0] if len(places) == 1 else grouped(places))
    return absorb_background(out)


def at_one_place(members: list[Finding], cfg: FindingsConfig) -> list[Finding]:
    """The look-alike findings of a group with those at one place (overlapping regions) folded into one, both
    kinds' evidence kept: a shortcut the class's maps peak at and a minority cluster attending the same pixels there
    (MNIST seed 24's half-class patch, without masks: two medium cards with the same place test) are one card.
    `registry.without_repeats` joins two such findings only where the cluster's own maps peak there."""
    folded: list[Finding] = []
    for f in members:
        j = next((k for k, g in enumerate(folded) if regions_overlap(g.region, f.region)), None)
        if j is None:
            folded.append(f)
        elif f.kind != folded[j].kind and {f.kind, folded[j].kind} <= set(PLACE_PRIORITY):
            folded[j] = one_problem(folded[j], f, cfg)
        elif more_severe(folded[j].severity, f.severity) == folded[j].severity:
            folded[j] = merge(folded[j], f)
        else:
            folded[j] = merge(f, folded[j])
    return folded


def absorb_background(findings: list[Finding]) -> list[Finding]:
    """A class's background_reliance folded into its (first) group of places checked against masks: the cue that
    moves is what the attention off the objects falls on."""
    group_of: dict[str, Finding] = {}
    for f in findings:
        if f.metrics.get("places", 1) > 1 and "place_on_object" in f.metrics:
            group_of.setdefault(f.classes[0], f)
    out = []
    for f in findings:
        if f.kind == "background_reliance" and f.classes and f.classes[0] in group_of:
            continue
        if f.classes and group_of.get(f.classes[0]) is f:
            for other in findings:
                if other.kind == "background_reliance" and other.classes == f.classes:
                    f = merge(f, other)
        out.append(f)
    return out


def where_it_departs(name: str, ours: torch.Tensor, our_masks: torch.Tensor, theirs: torch.Tensor,
                     their_masks: torch.Tensor) -> tuple[float, float]:
    """(on the backgrounds, on the objects): how far the class's images (`ours`, float pixels [n, C, H, W] in
    [0, 1], object coverage `our_masks` [n, H, W]) lie from other classes' in property `name`, measured on their
    background pixels only and on their object pixels only, each in standard deviations of those per-image values
    (as property_shortcut measures whole images). NaN where the property is not a pixel mean of these images
    (`properties.property_maps`) or no image has pixels of that part."""

    def part(pixels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
        values = property_maps(pixels).get(name)
        if values is None:
            return None
        total = weight.sum(dim=(1, 2))
        return ((values * weight).sum(dim=(1, 2)) / total.clamp_min(1e-6))[total > 0.5]

    def effect(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
        if a is None or b is None or len(a) == 0 or len(b) == 0:
            return math.nan
        spread = float(torch.cat([a, b]).std())
        return (float(a.mean()) - float(b.mean())) / spread if spread > 1e-9 else math.nan

    return (effect(part(ours, 1 - our_masks), part(theirs, 1 - their_masks)),
            effect(part(ours, our_masks), part(theirs, their_masks)))


def masked_thumbs(rows: np.ndarray, thumbs: np.ndarray, masks) -> tuple[torch.Tensor, torch.Tensor]:
    """The thumbs of `rows` as pixels in [0, 1], and their masks (map cells) resized to the thumbs' size."""
    pixels = torch.from_numpy(np.asarray(thumbs[rows], dtype=np.float32) / 255.0)
    coverage = upsample(torch.from_numpy(np.asarray(masks[rows], dtype=np.float32)), tuple(pixels.shape[-2:]))
    return pixels, coverage.clamp(0.0, 1.0)


def background_property(f: Finding, records: pd.DataFrame, thumbs: np.ndarray, masks, classes: list[str],
                        cfg: FindingsConfig) -> Finding | None:
    """The property_shortcut `f` with its background and object effects (`where_it_departs`, on a seeded sample
    of masked images) where its property departs more on the class's backgrounds than on its objects, the same
    way as on whole images; None where it does not (a class photographed darker, objects and all)."""
    target = classes.index(f.classes[0])
    labels, masked = records["label_idx"].to_numpy(), records["has_mask"].to_numpy(dtype=bool)
    rows = records["row"].to_numpy()
    ours, theirs = rows[masked & (labels == target)], rows[masked & (labels != target)]
    if len(ours) < 2 or len(theirs) < 2:
        return None
    rng = np.random.default_rng([cfg.seed, target, 22])
    ours, theirs = (np.sort(rng.choice(chosen, size=min(REFERENCES, len(chosen)), replace=False))
                    for chosen in (ours, theirs))
    name = PROPERTIES[int(f.metrics["property"])]
    on_background, on_objects = where_it_departs(name, *masked_thumbs(ours, thumbs, masks),
                                                 *masked_thumbs(theirs, thumbs, masks))
    same_way = np.sign(on_background) == np.sign(f.metrics.get("effect", 0.0))
    if not (math.isfinite(on_background) and same_way and not abs(on_objects) >= abs(on_background)):
        return None
    figures = {"background_effect": on_background, "object_effect": on_objects}
    return dataclasses.replace(f, metrics={**f.metrics, **metrics(**figures)})


def absorb_property(findings: list[Finding], records: pd.DataFrame, thumbs: np.ndarray | None, masks,
                    classes: list[str], cfg: FindingsConfig) -> list[Finding]:
    """Each class's property_shortcut whose property is the backgrounds' (`background_property`) told as what it
    is, the class's background reliance: folded into the class's background_reliance where that is medium or
    above (one cause, one card); where the maps raised none (a brightness the model reads from the whole image
    leaves its attention on the object), the property finding itself, once the model check made it medium or
    above and where the backgrounds alone depart by property_min_effect, becomes the class's background_reliance
    (`as_background_reliance`), a low one's figures kept."""
    if thumbs is None or masks is None:
        return findings
    background = {f.classes[0] for f in findings if f.kind == "background_reliance" and f.severity != "low"}
    absorbed: dict[str, tuple[int, Finding]] = {}
    for i, f in enumerate(findings):
        if (f.kind == "property_shortcut" and "property" in f.metrics and f.classes[0] in classes
                and (f.classes[0] in background or f.severity != "low") and f.classes[0] not in absorbed):
            found = background_property(f, records, thumbs, masks, classes, cfg)
            if found is not None:
                absorbed[f.classes[0]] = (i, found)
    # Raised to a card of its own only where the backgrounds alone depart as far as a property must to be reported
    # (property_min_effect): a class photographed darker, objects and all, departs on both about equally
    # (Fashion-MNIST seed 3's sneakers: 0.53 on the backgrounds, 0.44 on the objects) and keeps its property card.
    raised = {c for c, (_, found) in absorbed.items() if c not in background
              and abs(found.metrics["background_effect"]) >= cfg.property_min_effect}
    absorbed = {c: a for c, a in absorbed.items() if c in background or c in raised}
    out = []
    for i, f in enumerate(findings):
        c = f.classes[0] if f.classes else None
        if c in absorbed and i == absorbed[c][0]:
            if c in raised:
                low = [g for g in findings if g.kind == "background_reliance" and g.classes == f.classes]
                out.append(as_background_reliance(absorbed[c][1], low))
            continue
        if f.kind == "background_reliance" and c in absorbed:
            if c not in raised:
                out.append(merge(f, absorbed[c][1]))
            continue
        out.append(f)
    return out


def as_background_reliance(found: Finding, low: list[Finding]) -> Finding:
    """The property_shortcut `found` (with `background_property`'s figures) as the class's background_reliance, at
    its severity: its message opened by where the property departs; a low background_reliance's metrics of the
    same class kept under its kind's prefix (its "not confirmed" sentence is what this evidence overturns)."""
    m = found.metrics
    name = PROPERTIES[int(m["property"])]
    extra = {f"background_reliance.{key}": value for g in low for key, value in g.metrics.items()}
    opening = (f"Class '{found.classes[0]}' relies on its backgrounds: their {name} departs from other classes' "
               f"backgrounds by {abs(m['background_effect']):.1f} standard deviations, while its objects' departs from "
               f"other classes' objects by {abs(m['object_effect']):.1f}; the model uses it. ")
    return dataclasses.replace(found, kind="background_reliance", metrics={**m, **extra},
                               message=opening + found.message)
