"""The causal check (issue 3, rule 4): run the model again with the object, or the flagged region, erased.

A heatmap only correlates attention with a region; if the class is still predicted once its object is gone, or
is lost once the flagged region is gone, the model demonstrably uses that region. Erasing writes the dataset
mean (0 in normalised images), the usual occlusion baseline. The run directory stores the result as causal.csv;
`auditor.findings.write_findings` folds it into the class findings with `apply_causal`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import torch

from auditor.config import FindingsConfig
from auditor.findings import CLASS_KINDS, Finding, metrics, number
from auditor.runs import write_atomic


def erase(images: torch.Tensor, masks: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Copy of images [B, C, H, W] with fill where masks ([B, H, W] or one [H, W] for all) is True."""
    return images.masked_fill(masks.to(device=images.device, dtype=torch.bool).unsqueeze(-3), fill)


def region_mask(region, height: int, width: int) -> torch.Tensor:
    """bool [H, W], True on every pixel the normalised box [x0, y0, x1, y1] touches (erasing errs wide)."""
    x0, y0, x1, y1 = region
    rows = slice(math.floor(round(y0 * height, 6)), math.ceil(round(y1 * height, 6)))
    cols = slice(math.floor(round(x0 * width, 6)), math.ceil(round(x1 * width, 6)))
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[rows, cols] = True
    return mask


def causal_check(
    model: torch.nn.Module, batches: Iterable[dict], classes: list[str], regions: dict[int, list[float]], device
) -> pd.DataFrame:
    """Accuracy per class on the images as they are, with the object erased, and with the class's region erased.

    One row per class seen: class, n, accuracy, n_masked, background_only_accuracy (NaN without masked images),
    background_only_baseline (how often *other* classes' object-erased images are called this class: a model
    that names one class for any empty image would otherwise look as if it recognised that class from
    background), n_region, shortcut_removed_accuracy (NaN where the class has no region) and region.
    """
    k = len(classes)
    n, correct = torch.zeros(k, dtype=torch.long), torch.zeros(k, dtype=torch.long)
    background = torch.zeros(k, k, dtype=torch.long)  # [true, predicted] with the object erased
    n_region, region_correct = torch.zeros(k, dtype=torch.long), torch.zeros(k, dtype=torch.long)
    boxes: dict[tuple[int, int, int], torch.Tensor] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:  # auditor.data.collate has already dropped undecodable images
                images = batch["image"].to(device)
                labels = batch["label"].long()
                if len(labels) == 0:
                    continue
                predicted = model(images).argmax(dim=1).cpu()
                n += torch.bincount(labels, minlength=k)
                correct += torch.bincount(labels[predicted == labels], minlength=k)

                has_mask = batch["has_mask"].bool()
                if has_mask.any():
                    erased = erase(images[has_mask], batch["mask"].to(device)[has_mask])
                    guess = model(erased).argmax(dim=1).cpu()
                    background += torch.bincount(labels[has_mask] * k + guess, minlength=k * k).view(k, k)

                flagged = torch.tensor([int(label) in regions for label in labels], dtype=torch.bool)
                if flagged.any():
                    height, width = images.shape[-2:]
                    masks = torch.stack([
                        boxes.setdefault((int(label), height, width), region_mask(regions[int(label)], height, width))
                        for label in labels[flagged]
                    ])  # fmt: skip
                    guess = model(erase(images[flagged], masks)).argmax(dim=1).cpu()
                    n_region += torch.bincount(labels[flagged], minlength=k)
                    region_correct += torch.bincount(labels[flagged][guess == labels[flagged]], minlength=k)
    finally:
        model.train(was_training)

    n_masked = background.sum(dim=1)
    called = background.sum(dim=0) - background.diagonal()  # other classes' erased images called this class
    rows = []
    for c in range(k):
        if n[c] == 0:
            continue
        others_masked = int(n_masked.sum() - n_masked[c])
        rows.append({
            "class": classes[c],
            "n": int(n[c]),
            "accuracy": float(correct[c] / n[c]),
            "n_masked": int(n_masked[c]),
            "background_only_accuracy": float(background[c, c] / n_masked[c]) if n_masked[c] else math.nan,
            "background_only_baseline": float(called[c]) / others_masked if others_masked else math.nan,
            "n_region": int(n_region[c]),
            "shortcut_removed_accuracy": float(region_correct[c] / n_region[c]) if n_region[c] else math.nan,
            "region": json.dumps(list(regions[c])) if c in regions else "",
        })  # fmt: skip
    return pd.DataFrame(rows)


def regions_from_findings(findings, classes: list[str]) -> dict[int, list[float]]:
    """Class index -> the region of that class's most severe class-level finding that has one.

    Accepts Finding objects or the dicts of findings.json (both ordered most severe first).
    """
    index = {name: i for i, name in enumerate(classes)}
    regions: dict[int, list[float]] = {}
    for f in findings:
        f = f if isinstance(f, Finding) else Finding(**f)
        if f.kind in CLASS_KINDS and f.region is not None and f.classes[0] in index:
            regions.setdefault(index[f.classes[0]], list(f.region))
    return regions


def apply_causal(findings: list[Finding], causal: pd.DataFrame, cfg: FindingsConfig) -> list[Finding]:
    """Fold the causal check into the class-level findings: the heatmaps correlate, this tests.

    Each class finding gets background_only_accuracy (with its baseline) and, where the check erased the same
    region, shortcut_removed_accuracy. It becomes high when the class is still recognised with its object
    erased (above the baseline by cfg.causal_min_background_accuracy) or loses cfg.causal_min_shortcut_drop of
    its accuracy without the region; a whole-class finding (background_reliance, spatial_shortcut) becomes low
    when every test it had shows no effect. A class recognised without its object that no heatmap rule flagged
    gets a recognised_without_object finding. Returns new, renumbered findings.
    """
    by_class = {str(row["class"]): row for row in causal.to_dict("records")}
    out = [_with_causal(f, by_class.get(f.classes[0]), cfg) if f.kind in CLASS_KINDS else f for f in findings]
    flagged = {f.classes[0] for f in findings if f.kind in CLASS_KINDS}
    for name, row in by_class.items():
        effect = _background_effect(row)
        if name in flagged or not effect >= cfg.causal_min_background_accuracy:
            continue
        accuracy, baseline = row["background_only_accuracy"], row["background_only_accuracy"] - effect
        out.append(Finding(
            kind="recognised_without_object", severity="high", classes=[name],
            metrics=metrics(
                n=row["n_masked"], accuracy=row["accuracy"], background_only_accuracy=accuracy,
                background_only_baseline=baseline,
            ),
            message=(
                f"Class {name!r} is still predicted for {accuracy:.0%} of its images once the object is erased "
                f"(other classes' erased images: {baseline:.0%}), so inspect what its images share besides the object."
            ),
        ))  # fmt: skip
    return number(out)


def _with_causal(f: Finding, row: dict | None, cfg: FindingsConfig) -> Finding:
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
    removed = row.get("shortcut_removed_accuracy")
    if f.region is not None and _finite(removed) and _same_region(row.get("region"), f.region):
        tests += 1
        extra["shortcut_removed_accuracy"] = removed
        drop = row["accuracy"] - removed
        if drop >= cfg.causal_min_shortcut_drop:
            confirmed.append(f"erasing the region drops its accuracy from {row['accuracy']:.0%} to {removed:.0%}")
        elif drop <= cfg.causal_max_refuted:
            refuted.append(f"erasing the region leaves its accuracy at {removed:.0%}")
    severity, message = f.severity, f.message
    if confirmed:
        severity, message = "high", f"{f.message.rstrip('.')}; confirmed: {' and '.join(confirmed)}."
    elif tests and len(refuted) == tests and f.kind != "strategy_cluster":  # a cluster is diluted in class figures
        severity, message = "low", f"{f.message.rstrip('.')}; not confirmed: {' and '.join(refuted)}."
    return dataclasses.replace(f, severity=severity, metrics={**f.metrics, **metrics(**extra)}, message=message)


def _background_effect(row: dict) -> float:
    """Object-erased accuracy above the baseline of other classes' erased images (NaN when not measured)."""
    background, baseline = row.get("background_only_accuracy"), row.get("background_only_baseline")
    if not _finite(background):
        return math.nan
    return background - (baseline if _finite(baseline) else 0.0)


def write_causal(run_dir: str | Path, causal: pd.DataFrame) -> None:
    """Store the check as RUN_DIR/causal.csv, atomically, where write_findings picks it up."""
    write_atomic(Path(run_dir) / "causal.csv", causal.to_csv(index=False))


def _same_region(stored, region) -> bool:
    if not isinstance(stored, str) or not stored:
        return False
    return all(abs(a - b) < 1e-6 for a, b in zip(json.loads(stored), region))


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and math.isfinite(value)
