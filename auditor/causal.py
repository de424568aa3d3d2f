"""The causal check (issue 3, rule 4): run the model again with the object, or the flagged region, erased.

A heatmap only correlates attention with a region; if the class is still predicted once its object is gone, or
is lost once the flagged region is gone, the model demonstrably uses that region. A flagged region is erased with
the dataset mean (0 in normalised images), the usual occlusion baseline. An object is erased over the square
around it (`object_boxes`) with the image's own background tiled in (`background_fill`, Xiao et al.'s Only-BG-T):
a grey square on a green meadow is no meadow, and a model that names the class from the meadow would be credited
with nothing. A class recognised from its object and its background together survives erasing the object alone
(nothing is left to recognise), so the check also pastes each object onto other images' backgrounds
(`mixed_backgrounds`).
The run directory stores the result as causal.csv; `auditor.findings.run.apply_causal` folds it into the class
findings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from auditor.data import positions
from auditor.findings import Finding, scope_of
from auditor.findings.run import apply_causal  # noqa: F401 - the verdict on this check, re-exported
from auditor.runs import write_atomic
from auditor.timing import stage


def erase(images: torch.Tensor, masks: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Copy of images [B, C, H, W] with fill where masks ([B, H, W] or one [H, W] for all) is True."""
    return images.masked_fill(masks.to(device=images.device, dtype=torch.bool).unsqueeze(-3), fill)


def background_fill(images: torch.Tensor, squares: torch.Tensor) -> torch.Tensor:
    """Copy of images [B, C, H, W] with each square ([B, H, W], `object_boxes`) filled with the image's own pixels
    from beside it: the image shifted by the square's side, up, down, left or right (wrapping), whichever brings in
    the fewest square pixels; a pixel that would still come from inside the square gets the mean (0). Tiling the
    background, as Only-BG-T of Xiao et al. (ICLR 2021) does, keeps what the background looks like."""
    out = images.clone()
    top, bottom, left, right, found = extents(squares)
    for i in torch.nonzero(found).flatten().tolist():
        height, width = int(bottom[i] - top[i]), int(right[i] - left[i])
        square = squares[i].to(images.device)
        shifts = [(height, 0), (-height, 0), (0, width), (0, -width)]
        inside = [int((torch.roll(square, shift, dims=(0, 1)) & square).sum()) for shift in shifts]
        shift = shifts[inside.index(min(inside))]
        tiled = torch.roll(images[i], shift, dims=(1, 2))
        tiled = tiled.masked_fill(torch.roll(square, shift, dims=(0, 1)).unsqueeze(0), 0.0)
        out[i] = torch.where(square.unsqueeze(0), tiled, images[i])
    return out


def extents(masks: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each mask's bounding box as top, bottom, left, right (end exclusive), [B] each, and whether it has any
    pixel (an empty mask's box is 0-wide)."""
    masks = masks.bool()
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # [B, H], [B, W]

    def first_and_past_last(hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return hit.float().argmax(dim=1), hit.shape[1] - hit.flip(1).float().argmax(dim=1)

    (top, bottom), (left, right) = first_and_past_last(rows), first_and_past_last(cols)
    return top, bottom, left, right, rows.any(dim=1)


def filled_boxes(top, bottom, left, right, height: int, width: int) -> torch.Tensor:
    """bool [B, H, W], True inside rows [top, bottom) and columns [left, right) of each image."""
    r, c = torch.arange(height, device=top.device), torch.arange(width, device=top.device)
    in_rows = (r[None] >= top[:, None]) & (r[None] < bottom[:, None])
    in_cols = (c[None] >= left[:, None]) & (c[None] < right[:, None])
    return in_rows[:, :, None] & in_cols[:, None, :]


def object_boxes(masks: torch.Tensor) -> torch.Tensor:
    """bool [B, H, W]: for each mask, the square around its bounding box (the shorter side widened about the
    centre, kept inside the image), filled. The check erases that square, not the mask: a hole cut to the
    object's outline still shows its shape (a shirt's silhouette names the shirt), and one cut to its bounding
    box still shows its proportions (a flat box names the sneaker); either way the model would be credited with
    recognising the class from its background."""
    height, width = masks.shape[-2:]
    top, bottom, left, right, found = extents(masks)
    side = torch.maximum(bottom - top, right - left)

    def widened(start: torch.Tensor, stop: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        length = side.clamp(max=size)
        begin = (start - torch.div(length - (stop - start), 2, rounding_mode="floor")).clamp(0)
        begin = torch.minimum(begin, size - length)
        return begin, begin + length

    (top, bottom), (left, right) = widened(top, bottom, height), widened(left, right, width)
    return filled_boxes(top, bottom, left, right, height, width) & found[:, None, None]


def region_mask(region, height: int, width: int) -> torch.Tensor:
    """bool [H, W], True on every pixel the normalised box [x0, y0, x1, y1] touches (erasing errs wide)."""
    x0, y0, x1, y1 = region
    rows = slice(math.floor(round(y0 * height, 6)), math.ceil(round(y1 * height, 6)))
    cols = slice(math.floor(round(x0 * width, 6)), math.ceil(round(x1 * width, 6)))
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[rows, cols] = True
    return mask


def border_mask(band: float, height: int, width: int, inset: int = 0) -> torch.Tensor:
    """bool [H, W], True on the image's border band, `band` of the shorter side wide (a frame's place, see
    `findings.places.around_the_border`), moved `inset` band widths inward: inset 1 is the same shape just
    inside the frame, its control."""
    side = max(1, math.ceil(band * min(height, width)))
    a, b = inset * side, (inset + 1) * side
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[a : height - a, a : width - a] = True
    mask[b : height - b, b : width - b] = False
    return mask


def causal_indices(samples, wanted: set[int], cap: int, seed: int = 0) -> list[int]:
    """Dataset indices of the wanted classes' images, at most `cap` in all, in dataset order.

    The cap is spread evenly over the classes (a class with fewer images leaves its share to the others), and
    each class contributes a seeded random sample of its images, so a capped check still sees every class and
    reads no more images than it needs.
    """
    by_class: dict[int, list[int]] = {}
    for i, sample in enumerate(samples):
        if sample.label in wanted:
            by_class.setdefault(sample.label, []).append(i)
    if sum(map(len, by_class.values())) <= cap:
        return sorted(i for members in by_class.values() for i in members)
    rng = np.random.default_rng(seed)
    shuffled = [list(rng.permutation(by_class[c])) for c in sorted(by_class)]
    chosen: list[int] = []
    for rank in range(max(map(len, shuffled))):  # round robin: every class's first, then every class's second ...
        for members in shuffled:
            if rank < len(members) and len(chosen) < cap:
                chosen.append(int(members[rank]))
    return sorted(chosen)


def random_boxes(regions: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """bool [B, H, W]: for each region ([B, H, W] boxes), a box of the same size at a random place."""
    height, width = regions.shape[-2:]
    top, bottom, left, right, _ = extents(regions)
    sizes = list(zip((bottom - top).tolist(), (right - left).tolist()))
    places = [
        (int(torch.randint(0, height - h + 1, (1,), generator=generator)),
         int(torch.randint(0, width - w + 1, (1,), generator=generator)))
        for h, w in sizes
    ]  # fmt: skip  # drawn image by image, top then left
    new_top, new_left = (torch.tensor(v, dtype=torch.long) for v in zip(*places))
    heights, widths = (torch.tensor(v, dtype=torch.long) for v in zip(*sizes))
    return filled_boxes(new_top, new_top + heights, new_left, new_left + widths, height, width)


def mixed_backgrounds(
    model: torch.nn.Module, pool: Mapping[int, tuple[torch.Tensor, torch.Tensor]], device, generator: torch.Generator,
    batch_size: int = 64,
) -> dict[int, tuple[int, float, float]]:
    """Class index -> (n, accuracy on its own class's backgrounds, accuracy on other classes' backgrounds).

    Mixed-Same and Mixed-Rand of Xiao et al., "Noise or Signal: The Role of Image Backgrounds in Object
    Recognition" (ICLR 2021): each pooled object, cut to its mask, is pasted at its own place onto the background
    of another image of its class and of an image of another class, each background with its own object tiled
    over (`background_fill`) so that no second object shows and no grey hole does either. The gap between the
    two is what the class loses when its backgrounds change. `pool` holds, per class, images [n, C, H, W] and
    masks [n, H, W]; a class needs two images, and some other class one, to be measured.
    """
    donors = {c: background_fill(images, object_boxes(masks)) for c, (images, masks) in pool.items()}
    out = {}
    for c, (images, masks) in pool.items():
        others = [donors[o] for o in pool if o != c]
        n = len(images)
        if n < 2 or not others:
            continue
        others = torch.cat(others)
        shift = torch.randint(1, n, (n,), generator=generator)  # another image of the class, never itself
        same = donors[c][(torch.arange(n) + shift) % n]
        rand = others[torch.randint(0, len(others), (n,), generator=generator)]
        correct = []
        for backgrounds in (same, rand):
            hits = 0
            for start in range(0, n, batch_size):
                part = slice(start, start + batch_size)
                pasted = torch.where(masks[part, None], images[part], backgrounds[part]).float()
                hits += int((model(pasted.to(device)).argmax(dim=1).cpu() == c).sum())
            correct.append(hits / n)
        out[c] = (n, correct[0], correct[1])
    return out


def background_only(erased: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, from the [true, called] counts of object-erased images: the share still called its class, and
    the baseline, the share called it of the other classes' erased images that no longer name their own class
    (NaN where there are none). A model that names one class for any empty image would otherwise look as if it
    recognised that class from background; an erased image still named by its own class's cue is not empty, and
    counting it would make empty images look rarer than they are."""
    erased = erased.double()
    kept = erased.diagonal()
    n, emptied = erased.sum(dim=1), erased.sum(dim=1) - kept
    called = erased.sum(dim=0) - kept  # other classes' erased images called this class
    others = emptied.sum() - emptied
    nan = torch.tensor(math.nan, dtype=torch.float64)
    accuracy = torch.where(n > 0, kept / n.clamp(min=1), nan)
    return accuracy, torch.where(others > 0, called / others.clamp(min=1), nan)


@stage("causal_check_s")
def causal_check(
    model: torch.nn.Module, batches: Iterable[dict], classes: list[str], regions: dict[int, list[float]], device,
    predictions: Mapping[int, int] | None = None, seed: int = 0, mixed_per_class: int = 128,
    bands: Mapping[int, float] | None = None,
) -> pd.DataFrame:
    """Accuracy per class on the images as they are, with the object erased, and with the class's region erased.

    `predictions` (dataset index -> predicted class, the sweep's records: `sweep_predictions`) spare the forward
    of the images as they are, which the sweep already ran: the check then runs the model on erased images only.

    One row per class seen: class, n, accuracy, n_masked, background_only_accuracy (NaN without masked images),
    background_only_baseline (`background_only`), n_region, shortcut_removed_accuracy (NaN where the class has no
    region),
    region_control_accuracy (the same images with a random region of the same size erased instead: erasing a
    large region costs any class accuracy, so only a drop beyond this control shows the region is used; seeded),
    region, border_band, and n_mixed, mixed_same_accuracy, mixed_rand_accuracy (`mixed_backgrounds` on up to
    `mixed_per_class` masked images per class, kept on the CPU in float16; NaN where not measured).

    bands: class index -> a frame's band (`metrics.border_band`, `bands_from_findings`): that class's whole
    border band is erased instead of its region (one side of the frame), its control the band just inside it.
    """
    bands = bands or {}
    k = len(classes)
    n, correct = torch.zeros(k, dtype=torch.long), torch.zeros(k, dtype=torch.long)
    background = torch.zeros(k, k, dtype=torch.long)  # [true, predicted] with the object erased
    n_region, region_correct = torch.zeros(k, dtype=torch.long), torch.zeros(k, dtype=torch.long)
    control_correct = torch.zeros(k, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    boxes: dict[tuple[int, int, int], torch.Tensor] = {}
    pooled: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # class -> (image, mask) for mixed_backgrounds
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:  # auditor.data.collate has already dropped undecodable images
                images = batch["image"].to(device)
                labels = batch["label"].long()
                if len(labels) == 0:
                    continue
                if predictions is None:
                    predicted = model(images).argmax(dim=1).cpu()
                else:
                    predicted = torch.tensor([predictions[int(i)] for i in batch["index"]], dtype=torch.long)
                n += torch.bincount(labels, minlength=k)
                correct += torch.bincount(labels[predicted == labels], minlength=k)

                has_mask = batch["has_mask"].bool()
                if has_mask.any():
                    erased = background_fill(images[has_mask], object_boxes(batch["mask"].to(device)[has_mask]))
                    guess = model(erased).argmax(dim=1).cpu()
                    background += torch.bincount(labels[has_mask] * k + guess, minlength=k * k).view(k, k)
                    for image, mask, label in zip(images[has_mask], batch["mask"][has_mask], labels[has_mask]):
                        if len(pooled.setdefault(int(label), [])) < mixed_per_class:
                            pooled[int(label)].append((image.to("cpu", torch.float16), mask.bool().cpu()))

                flagged = torch.tensor([int(label) in regions for label in labels], dtype=torch.bool)
                if flagged.any():
                    height, width = images.shape[-2:]
                    masks = torch.stack([
                        boxes.setdefault((int(label), height, width), class_place(regions, bands, int(label), height,
                                                                                  width))
                        for label in labels[flagged]
                    ])  # fmt: skip
                    guess = model(erase(images[flagged], masks)).argmax(dim=1).cpu()
                    n_region += torch.bincount(labels[flagged], minlength=k)
                    region_correct += torch.bincount(labels[flagged][guess == labels[flagged]], minlength=k)
                    controls = random_boxes(masks, generator)
                    for row, label in enumerate(labels[flagged].tolist()):
                        if label in bands:  # a frame's control: the same band just inside it
                            controls[row] = border_mask(bands[label], height, width, inset=1)
                    guess = model(erase(images[flagged], controls)).argmax(dim=1).cpu()
                    control_correct += torch.bincount(labels[flagged][guess == labels[flagged]], minlength=k)
            pool = {
                c: (torch.stack([image for image, _ in members]), torch.stack([mask for _, mask in members]))
                for c, members in pooled.items() if members
            }
            mixed = mixed_backgrounds(model, pool, device, generator)
    finally:
        model.train(was_training)

    n_masked = background.sum(dim=1)
    background_accuracy, baseline = background_only(background)
    rows = []
    for c in range(k):
        if n[c] == 0:
            continue
        rows.append({
            "class": classes[c],
            "n": int(n[c]),
            "accuracy": float(correct[c] / n[c]),
            "n_masked": int(n_masked[c]),
            "background_only_accuracy": float(background_accuracy[c]),
            "background_only_baseline": float(baseline[c]),
            "n_region": int(n_region[c]),
            "shortcut_removed_accuracy": float(region_correct[c] / n_region[c]) if n_region[c] else math.nan,
            "region_control_accuracy": float(control_correct[c] / n_region[c]) if n_region[c] else math.nan,
            "region": json.dumps(list(regions[c])) if c in regions else "",
            "border_band": float(bands[c]) if c in bands and c in regions else math.nan,
            "n_mixed": mixed[c][0] if c in mixed else 0,
            "mixed_same_accuracy": mixed[c][1] if c in mixed else math.nan,
            "mixed_rand_accuracy": mixed[c][2] if c in mixed else math.nan,
        })  # fmt: skip
    return pd.DataFrame(rows)


def sweep_predictions(records: pd.DataFrame, samples) -> dict[int, int]:
    """Dataset index -> the sweep's predicted class index, from the records (by sample id)."""
    position = positions(samples)
    return {position[str(i)]: int(p) for i, p in zip(records["id"], records["pred_idx"]) if str(i) in position}


def class_place(regions: Mapping[int, list[float]], bands: Mapping[int, float], label: int, height: int,
                width: int) -> torch.Tensor:
    """bool [H, W]: the class's frame band where it has one, else its region."""
    if label in bands:
        return border_mask(bands[label], height, width)
    return region_mask(regions[label], height, width)


def _place_findings(findings, classes: list[str]) -> dict[int, Finding]:
    """Class index -> that class's most severe class-level finding with a region (findings most severe first;
    Finding objects or the dicts of findings.json)."""
    index = {name: i for i, name in enumerate(classes)}
    chosen: dict[int, Finding] = {}
    for f in findings:
        f = f if isinstance(f, Finding) else Finding(**f)
        if scope_of(f.kind) == "class" and f.region is not None and f.classes[0] in index:
            chosen.setdefault(index[f.classes[0]], f)
    return chosen


def regions_from_findings(findings, classes: list[str]) -> dict[int, list[float]]:
    """Class index -> the region of that class's most severe class-level finding that has one."""
    return {c: list(f.region) for c, f in _place_findings(findings, classes).items()}


def bands_from_findings(findings, classes: list[str]) -> dict[int, float]:
    """Class index -> the border band of the finding `regions_from_findings` chose, where it is a frame."""
    return {c: float(f.metrics["border_band"]) for c, f in _place_findings(findings, classes).items()
            if f.metrics.get("border_band")}


def write_causal(run_dir: str | Path, causal: pd.DataFrame) -> None:
    """Store the check as RUN_DIR/causal.csv, atomically, where write_findings picks it up."""
    write_atomic(Path(run_dir) / "causal.csv", causal.to_csv(index=False))
