"""Place evidence from the images (see auditor.findings.place_evidence for what the figures mean and how they
are judged): is a flagged region the same pixels every time, does pasting it turn other images into the class,
and does erasing it lose the class for the finding's own images?

Runs after the rules, on the images of each place finding (its samples: the images that attend to the place
most) and on a fixed, seeded sample of other classes' images, so it costs a few batches per finding.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from auditor.budget import classes_in_budget
from auditor.causal import border_mask, erase, region_mask
from auditor.config import FindingsConfig
from auditor.data import AuditDataset, positions
from auditor.findings import Finding
from auditor.findings.record import SEVERITIES
from auditor.findings.place_evidence import (
    masks_checked,
    needs_place_check,
    with_place_evidence,
    worth_reporting,
)
from auditor.timing import count, stage


def stacked_images(dataset: AuditDataset, indices) -> torch.Tensor | None:
    """The images decoded from their files (counted as read), stacked; None for fewer than two or mixed sizes."""
    count(images_read=len(indices))
    items = [dataset[i] for i in indices]
    images = [item["image"] for item in items if item["ok"]]
    if len(images) < 2 or len({tuple(image.shape) for image in images}) > 1:
        return None
    return torch.stack(images)


def pixel_std(images: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None) -> float:
    """Mean over the mask's pixels (and channels) of the pixels' standard deviation across the images, each pixel
    weighted by `weight` ([C, n] for the n pixels of the mask) when given."""
    std = images[:, :, mask].std(dim=0)
    if weight is None:
        return float(std.mean())
    return float((weight * std).sum() / weight.sum().clamp_min(1e-12))


def pixel_std_ratio(donors: torch.Tensor, references: torch.Tensor, mask: torch.Tensor) -> tuple[float, float, float]:
    """How much the donors' pixels vary in the region relative to the references', at the pixels that tell them
    apart: each pixel weighted by the contrast energy (donors' mean - references' mean)^2 there, so neither the
    background around a small watermark (the same for every class) nor the edge of an object reaching into the
    region (a weaker, varying difference) waters the mark's constancy down. Returns (donors' std, references'
    std, ratio); the ratio is NaN where the references do not vary either."""
    weight = (donors[:, :, mask].mean(dim=0) - references[:, :, mask].mean(dim=0)).square()
    d, r = pixel_std(donors, mask, weight), pixel_std(references, mask, weight)
    return d, r, d / r if r > 1e-6 else math.nan


def _bounds(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a bool [H, W] mask's bounding box, ends exclusive."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def distinctive_window(donors: torch.Tensor, references: torch.Tensor, mask: torch.Tensor, side: int) -> torch.Tensor:
    """The square of `side` pixels inside the region (the region itself where it is smaller) where the donors
    differ most from the references: the most contrast energy (donors' mean - references' mean)^2 summed over it.

    A coarse feature grid (a stride-32 network, a ViT's 16-px patches) makes a region far larger than a small
    watermark, and its object pixels then water the region's constancy down (timm resnet10t, Fashion-MNIST seed
    13: 0.32 over the 26 x 26 px region, 0.02 over the 16 x 16 px window on the mark). The window the class
    differs in most is where a cue sits, if there is one."""
    y0, y1, x0, x1 = _bounds(mask)
    h, w = min(side, y1 - y0), min(side, x1 - x0)
    energy = (donors.mean(dim=0) - references.mean(dim=0)).square().sum(dim=0) * mask  # [H, W], 0 off the place
    # Sum over every h x w window whose top-left corner lies in the region, at once: a box filter by pooling.
    sums = torch.nn.functional.avg_pool2d(energy[None, None, y0:y1, x0:x1], (h, w), stride=1)[0, 0]
    top, left = divmod(int(sums.argmax()), sums.shape[1])
    window = torch.zeros_like(mask)
    window[y0 + top : y0 + top + h, x0 + left : x0 + left + w] = True
    return window


def random_box_like(mask: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A box of the same size as the mask's bounding box, elsewhere in the image (not overlapping it where it fits)."""
    y0, y1, x0, x1 = _bounds(mask)
    h, w = y1 - y0, x1 - x0
    height, width = mask.shape
    for _ in range(100):
        y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        box = torch.zeros_like(mask)
        box[y : y + h, x : x + w] = True
        if not (box & mask).any():
            return box
    return box


def place_mask(region, height: int, width: int, border: float | None = None) -> torch.Tensor:
    """bool [H, W]: the region's pixels, or a frame's band (`metrics.border_band`) where `border` is given."""
    return region_mask(region, height, width) if border is None else border_mask(border, height, width)


def pixel_figures(donors: torch.Tensor, references: torch.Tensor, region, window: float = 0.25,
                  border: float | None = None) -> dict:
    """The place's pixel figures (see `place_figures`) of donors and references at any one resolution: the
    sweep's thumbs tell them as well as the decoded files, so the files are read only for the model's passes."""
    height, width = donors.shape[-2:]
    mask = place_mask(region, height, width, border)
    side = max(1, round(window * min(height, width)))
    region_std, reference_std, ratio = pixel_std_ratio(donors, references,
                                                       distinctive_window(donors, references, mask, side) & mask)
    return {"region_pixel_std": region_std, "reference_pixel_std": reference_std, "pixel_std_ratio": ratio,
            "region_pixel_std_ratio": pixel_std_ratio(donors, references, mask)[2]}


def pixels_decided(figures: dict, pixels_decide_above: float | None) -> bool:
    """Whether the pixels alone have decided (a ratio above `pixels_decide_above`, or unmeasured)."""
    return pixels_decide_above is not None and not figures["pixel_std_ratio"] <= pixels_decide_above


@torch.no_grad()
def place_figures(model, donors: torch.Tensor, references: torch.Tensor, region, target: int, device, seed: int,
                  pixels_decide_above: float | None = None, window: float = 0.25,
                  reference_predictions: torch.Tensor | None = None, border: float | None = None,
                  pixels: dict | None = None) -> dict:
    """pixel_std_ratio in the region's most distinctive square, `window` x the image's side (`distinctive_window`;
    region_pixel_std and reference_pixel_std are its two parts), and region_pixel_std_ratio over the whole region;
    the transplant rates: the region of the donors (cycled) pasted onto the references at the same place, against
    a random same-size region pasted at its own place; and the erasure rates: how many donors the model still calls
    the class with the region erased, against the random region erased instead (pasting shows the region suffices,
    erasing that these images need it). With pixels_decide_above, a ratio above it (or unmeasured) ends there: for
    a finding without masks the pixels have then decided (the place is likely the object) and the model's forward
    passes would change nothing. reference_predictions: the sweep's predicted class of each reference, which
    spares running the model on them again. border: a frame's band (`metrics.border_band`), the place instead of
    the region (one of its sides), its control the same band just inside it. pixels: the pixel figures where they
    were measured already (`pixel_figures` on the thumbs)."""
    height, width = donors.shape[-2:]
    mask = place_mask(region, height, width, border)
    figures = pixel_figures(donors, references, region, window, border) if pixels is None else dict(pixels)
    if pixels_decided(figures, pixels_decide_above):
        return figures
    was_training = model.training
    model.eval()
    try:
        predict = lambda x: model(x.to(device)).argmax(dim=1).cpu()  # noqa: E731
        control = (random_box_like(mask, np.random.default_rng(seed)) if border is None
                   else border_mask(border, height, width, inset=1))
        figures.update(
            erased_rate=float((predict(erase(donors, mask)) == target).float().mean()),
            erased_control_rate=float((predict(erase(donors, control)) == target).float().mean()),
        )
        called = predict(references) if reference_predictions is None else reference_predictions
        recipients = references[called != target]
        if len(recipients) == 0:
            return figures
        paired = donors[torch.arange(len(recipients)) % len(donors)]
        pasted = torch.where(mask, paired, recipients)
        pasted_control = torch.where(control, paired, recipients)
        figures.update(
            transplant_rate=float((predict(pasted) == target).float().mean()),
            transplant_control_rate=float((predict(pasted_control) == target).float().mean()),
            transplant_n=len(recipients),
        )
    finally:
        model.train(was_training)
    return figures


class Pixels:
    """The images a check compares pixel by pixel, as model-input tensors: from the sweep's thumbs.npy (no file
    decoded; `rows`: dataset index -> its records row) when the run kept them, else decoded from the files."""

    def __init__(self, dataset: AuditDataset, thumbs: np.ndarray | None, rows: dict[int, int]):
        self.dataset, self.thumbs, self.rows = dataset, thumbs, rows
        if thumbs is not None:
            channels = thumbs.shape[1]
            self.mean = torch.tensor(dataset.cfg.mean[:channels]).view(1, -1, 1, 1)
            self.std = torch.tensor(dataset.cfg.std[:channels]).view(1, -1, 1, 1)

    def usable(self, indices: list[int]) -> list[int]:
        """The indices that can be read (with thumbs: those the sweep audited)."""
        return indices if self.thumbs is None else [i for i in indices if i in self.rows]

    def read(self, indices: list[int]) -> torch.Tensor | None:
        """The images stacked; None for fewer than two (or, decoded, of mixed sizes)."""
        if self.thumbs is None:
            return stacked_images(self.dataset, indices)
        if len(indices) < 2:
            return None
        count(thumbs_read=len(indices))
        pixels = torch.from_numpy(np.asarray(self.thumbs[[self.rows[i] for i in indices]])).float() / 255
        return (pixels - self.mean) / self.std


def reference_indices(labels: np.ndarray, target: int, cfg: FindingsConfig) -> list[int]:
    """Dataset indices of a seeded sample of other classes' images (`labels`: every sample's class index)."""
    others = np.flatnonzero(labels != target)
    rng = np.random.default_rng([cfg.seed, target])
    chosen = rng.choice(len(others), size=min(cfg.place_check_images, len(others)), replace=False)
    return [int(others[i]) for i in sorted(chosen)]


References = tuple[torch.Tensor | None, torch.Tensor | None]  # other classes' images, the sweep's predictions


def other_class_images(dataset: AuditDataset, target: int, cfg: FindingsConfig, labels: np.ndarray | None = None,
                       predictions: dict[int, int] | None = None) -> References:
    """A seeded sample of other classes' images, decoded: the class's yardstick, whatever other findings there are;
    with `predictions` (dataset index -> the sweep's predicted class), only images the sweep audited, and their
    predictions beside them."""
    labels = np.array([s.label for s in dataset.samples]) if labels is None else labels
    indices = reference_indices(labels, target, cfg)
    if predictions is None:
        return stacked_images(dataset, indices), None
    indices = [i for i in indices if i in predictions]
    return stacked_images(dataset, indices), torch.tensor([predictions[i] for i in indices], dtype=torch.long)


def place_test_cost(donors: int, references: list[int], target: int, predictions: dict[int, int] | None) -> int:
    """Images one place test runs through the model (`place_figures`): its donors erased at the place and at the
    control, and the other classes' images the sweep did not call the class pasted with both; without the sweep's
    predictions those images are run once more to find them."""
    if predictions is None:
        return 2 * donors + 3 * len(references)
    return 2 * donors + 2 * sum(1 for i in references if i in predictions and predictions[i] != target)


def check_places(findings: list[Finding], model, dataset: AuditDataset, classes: list[str], device,
                 cfg: FindingsConfig, references_of: dict[int, References] | None = None,
                 predictions: dict[int, int] | None = None, thumbs: Pixels | None = None,
                 forwards: int | None = None, notes: list[str] | None = None) -> list[Finding]:
    """Every place finding with its pixel, transplant and erasure figures folded in (`with_place_evidence`), for
    the findings of at most `check_max_classes` classes (most severe first), tested most severe first while their
    images run through the model stay within `forwards` (the run's allowance, `auditor.budget.share_of_run`; the
    first test always runs); the others, where masks did not check them, are kept at low, and `notes` says how
    many. references_of: a dict that keeps each class's other-class images once read, for the repeated-mark search;
    predictions: the sweep's, by dataset index (`other_class_images`); thumbs: the sweep's thumbs (a `Pixels` on
    thumbs.npy), where the pixel figures are measured, so that a finding the pixels decide decodes no file (a thumb
    is the model's input, area-pooled: the pixels keep their contrasts)."""
    wanted = [f for f in findings if needs_place_check(f)]
    if not wanted:
        return findings
    position = positions(dataset.samples)
    labels = np.array([s.label for s in dataset.samples])  # once, not once per class checked
    index = {name: i for i, name in enumerate(classes)}
    checked = set(classes_in_budget([index[f.classes[0]] for f in wanted if f.classes[0] in index], len(classes),
                                    cfg.check_max_classes, cfg.seed, fill=False))
    references_of = {} if references_of is None else references_of  # read once per class, whatever reads it
    small_references_of: dict[int, torch.Tensor | None] = {}  # their thumbs, likewise
    out: list[Finding | None] = list(findings)  # None: dropped (`worth_reporting`)
    spent = over_budget = 0
    by_severity = sorted(range(len(findings)), key=lambda n: SEVERITIES.index(findings[n].severity))
    with stage("place_check_s"):
        for n in by_severity:
            f = findings[n]
            target = index.get(f.classes[0])
            if not needs_place_check(f) or target is None:
                continue
            if target not in checked:  # over the run's budget: without masks, nothing but the maps speaks for it
                out[n] = f if masks_checked(f) else dataclasses.replace(f, severity="low")
                continue
            decide = None if masks_checked(f) else cfg.place_max_pixel_std_ratio
            donor_indices = [position[s] for s in f.samples if s in position]
            border = f.metrics.get("border_band")
            pixels = None
            if thumbs is not None and thumbs.thumbs is not None:
                small = thumbs.read(thumbs.usable(donor_indices))
                if target not in small_references_of:
                    small_references_of[target] = thumbs.read(thumbs.usable(reference_indices(labels, target, cfg)))
                small_references = small_references_of[target]
                if small is not None and small_references is not None:
                    pixels = pixel_figures(small, small_references, f.region, cfg.place_pixel_window, border)
                    if pixels_decided(pixels, decide):  # the place is likely the object: no file to decode
                        judged = with_place_evidence(f, pixels, cfg)
                        out[n] = judged if worth_reporting(judged, cfg) else None
                        continue
            cost = place_test_cost(len(donor_indices), reference_indices(labels, target, cfg), target, predictions)
            if forwards is not None and spent and spent + cost > forwards:  # over the run's forward passes
                over_budget += 1
                out[n] = f if masks_checked(f) else dataclasses.replace(f, severity="low")
                continue
            spent += cost
            if target not in references_of:
                references_of[target] = other_class_images(dataset, target, cfg, labels, predictions)
            references, called = references_of[target]
            donors = stacked_images(dataset, donor_indices)
            if donors is None or references is None or donors.shape[1:] != references.shape[1:]:
                continue
            figures = place_figures(model, donors, references, f.region, target, device, cfg.seed, decide,
                                    cfg.place_pixel_window, called, border, pixels)
            judged = with_place_evidence(f, figures, cfg)
            out[n] = judged if worth_reporting(judged, cfg) else None
    if over_budget and notes is not None:
        notes.append(f"Place check: {over_budget} place finding(s) not tested on the model, the run's forward "
                     f"passes for it ({forwards}: auditor.budget.RUN_SHARE) spent on the more severe ones; "
                     "without masks they stay low, with masks they keep the maps' severity.")
    return [f for f in out if f is not None]
