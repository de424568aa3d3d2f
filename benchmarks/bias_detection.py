"""Measured detection rate (issue 3): plant known biases into real images and check that the audit finds them.

Fashion-MNIST items are placed on a larger canvas at varying positions, their own pixels (above a small
threshold) as the object mask. Four biases are planted at once, each on its own class, the rest left clean:

  watermark    a small bright square at a fixed corner on most images of one class
  background   a striped gray background instead of the dark one on most images of one class
  partial      a small square at another fixed corner on half of one class (a shortcut only part carries)
  label noise  a share of one class labelled as another, in the training and the audit split alike

A small CNN is trained on the CPU, the held-out split is audited through the real pipeline (ImageFolder + masks,
a config, `run_audit`), and findings.json is scored against what was planted. Nothing here tunes the product's
thresholds: the audit runs on its defaults.

    python benchmarks/bias_detection.py                       # seed 0, about 3-6 minutes on 2 CPU cores
    python benchmarks/bias_detection.py --seed 1 --epochs 6 --train-per-class 1200 --out reports/bias-benchmark
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the audit imports the model factory as benchmarks.bias_detection:BenchNet
    sys.path.insert(0, str(ROOT))

FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
CANVAS = 64  # pixels per side of each benchmark image
ITEM = 28  # the Fashion-MNIST item, unscaled
MARGIN = 8  # items stay this far from the border, so the corner patches never cover an object
MASK_THRESHOLD = 16  # item pixels above this are the object
NOISE = 16  # every pixel gets max(pixel, uniform noise below this): no image is exactly black
MEAN, STD = 0.1, 0.25

# The plan: one class per bias. Boxes are x0, y0, x1, y1 in pixels, end exclusive: 5 x 5 squares (0.6 % of the image).
WATERMARK = {"class": 4, "box": (57, 57, 62, 62), "share": 0.9}  # coat, bottom-right corner
PARTIAL = {"class": 2, "box": (2, 2, 7, 7), "share": 0.5}  # pullover, top-left corner
BACKGROUND = {"class": 5, "share": 0.9, "low": 20, "high": 60, "period": 6}  # sandal, stripes of gray 20..60
FLIP = {"from": 1, "to": 3, "share": 0.25}  # trousers labelled dress
PLANTED = {WATERMARK["class"], PARTIAL["class"], BACKGROUND["class"], FLIP["from"], FLIP["to"]}
CLEAN = [c for c in range(len(CLASSES)) if c not in PLANTED]

SEVERITY_RANK = {"high": 0, "medium": 1, "low": 2}
LABEL_ERROR_K = 20  # precision at this fixed k (the findings' samples, in the findings' order)

log = logging.getLogger("auditor")


class BenchNet(nn.Module):
    """Four conv layers, global average pooling and a linear head: a few minutes per run on 2 CPU cores."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


# ------------------------------------------------------------------------------------------------ planting


def load_fashion(split: str, root: Path = FASHION) -> tuple[np.ndarray, np.ndarray]:
    """Items uint8 [N, 28, 28] and labels of Fashion-MNIST's 'train' or 't10k' split."""
    from auditor.sources import read_idx  # noqa: PLC0415

    prefix = root / split
    return read_idx(f"{prefix}-images-idx3-ubyte.gz"), read_idx(f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)


def per_class_subset(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of up to `count` random items of each class: a balanced subset."""
    picked = [rng.permutation(np.flatnonzero(labels == c))[:count] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def exact_share(candidates: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """A random round(share * n) of the candidate indices: planted counts are exact, not Bernoulli."""
    return rng.choice(candidates, size=int(round(share * len(candidates))), replace=False)


def stripes(rng: np.random.Generator, size: int = CANVAS) -> np.ndarray:
    """A diagonal gray stripe texture with a random phase, uint8 [size, size]."""
    yy, xx = np.mgrid[0:size, 0:size]
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * (xx + yy) / BACKGROUND["period"] + rng.uniform(0, 2 * np.pi))
    return (BACKGROUND["low"] + (BACKGROUND["high"] - BACKGROUND["low"]) * wave).astype(np.uint8)


def paint_box(image: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 255


def plant(items: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Place the items on canvases and plant the four biases.

    Returns images uint8 [N, CANVAS, CANVAS], masks bool (the item's own pixels), labels as given to the model
    (with the flips), true_labels, and bool arrays watermark, partial, background, flipped saying what was planted.
    """
    n = len(items)
    images = rng.integers(0, NOISE, size=(n, CANVAS, CANVAS), dtype=np.uint8)
    masks = np.zeros((n, CANVAS, CANVAS), dtype=bool)
    planted = {name: np.zeros(n, dtype=bool) for name in ("watermark", "partial", "background", "flipped")}
    planted["watermark"][exact_share(np.flatnonzero(labels == WATERMARK["class"]), WATERMARK["share"], rng)] = True
    planted["partial"][exact_share(np.flatnonzero(labels == PARTIAL["class"]), PARTIAL["share"], rng)] = True
    planted["background"][exact_share(np.flatnonzero(labels == BACKGROUND["class"]), BACKGROUND["share"], rng)] = True
    planted["flipped"][exact_share(np.flatnonzero(labels == FLIP["from"]), FLIP["share"], rng)] = True
    ys, xs = rng.integers(MARGIN, CANVAS - ITEM - MARGIN + 1, size=(2, n))
    for i in range(n):
        if planted["background"][i]:
            images[i] = np.maximum(images[i], stripes(rng))
        item, y, x = items[i], ys[i], xs[i]
        inside = item > MASK_THRESHOLD
        window = images[i, y: y + ITEM, x: x + ITEM]
        window[inside] = item[inside]  # the background shows through the item's dark gaps, as in a photo
        masks[i, y: y + ITEM, x: x + ITEM] = inside
        if planted["watermark"][i]:
            paint_box(images[i], WATERMARK["box"])
        if planted["partial"][i]:
            paint_box(images[i], PARTIAL["box"])
    noisy = np.where(planted["flipped"], FLIP["to"], labels)
    return {"images": images, "masks": masks, "labels": noisy, "true_labels": labels, **planted}


# ------------------------------------------------------------------------------------------------ training


def train(images: np.ndarray, labels: np.ndarray, epochs: int, seed: int) -> BenchNet:
    """The benchmark's CNN, trained like the demo's; the logged accuracy is on the (noisy) training labels."""
    from auditor.demo import train_classifier  # noqa: PLC0415

    torch.manual_seed(seed)
    return train_classifier(BenchNet(len(CLASSES)), images, labels, epochs=epochs, seed=seed, lr=2e-3, batch_size=128,
                            mean=MEAN, std=STD)


# ------------------------------------------------------------------------------------------------ scoring


def normalised(box) -> list[float]:
    """Pixel box (x0, y0, x1, y1) as the findings' [x0, y0, x1, y1] in [0, 1]."""
    return [v / CANVAS for v in box]


def iou(a, b) -> float:
    """IoU of two [x0, y0, x1, y1] boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def centre_inside(region, box) -> bool:
    """The region rule: the planted patch's centre lies inside the finding's region (both normalised)."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return region[0] <= cx <= region[2] and region[1] <= cy <= region[3]


def best_match(findings: list[dict], kinds, cls: str, box=None, pair=None) -> dict | None:
    """The most severe finding of one of `kinds` about class `cls` (and, given a box, with a region holding the
    box's centre; given a pair, with that pair); None when there is none."""
    matches = [
        f for f in findings
        if f["kind"] in kinds and f["classes"][0] == cls
        and (box is None or (f["region"] is not None and centre_inside(f["region"], box)))
        and (pair is None or f["pair"] == pair)
    ]  # fmt: skip
    return min(matches, key=lambda f: SEVERITY_RANK[f["severity"]], default=None)


def precision_at_k(ranked_ids: list[str], relevant: set[str], k: int) -> float:
    """Share of the first k ranked ids that are relevant; ids missing from a list shorter than k count as misses."""
    return sum(i in relevant for i in ranked_ids[:k]) / k if k else float("nan")


def label_error_ranking(findings: list[dict]) -> list[str]:
    """Sample ids of the suspected_label_error findings, in the findings' order (most suspect first)."""
    return [s for f in findings if f["kind"] == "suspected_label_error" for s in f["samples"]]


def score(findings: list[dict], flipped_ids: set[str]) -> dict:
    """Each planted bias's best matching finding, the high findings on clean classes, label-error precision."""
    expected = {
        "watermark": (("spatial_shortcut", "strategy_cluster"), CLASSES[WATERMARK["class"]],
                      normalised(WATERMARK["box"]), None),
        "background": (("background_reliance", "recognised_without_object"), CLASSES[BACKGROUND["class"]], None, None),
        "partial": (("strategy_cluster", "spatial_shortcut"), CLASSES[PARTIAL["class"]], normalised(PARTIAL["box"]),
                    None),
        "label noise": (("suspected_label_error",), CLASSES[FLIP["to"]], None,
                        {"true": CLASSES[FLIP["to"]], "pred": CLASSES[FLIP["from"]]}),
    }
    rows = []
    for bias, (kinds, cls, box, pair) in expected.items():
        match = best_match(findings, kinds, cls, box, pair)
        rows.append({
            "bias": bias, "class": cls, "kinds": kinds, "box": box, "finding": match,
            "found": match is not None and SEVERITY_RANK[match["severity"]] <= SEVERITY_RANK["medium"],
            "iou": iou(match["region"], box) if match is not None and box is not None else None,
        })  # fmt: skip
    clean = {CLASSES[c] for c in CLEAN}
    clean_high = [f for f in findings if f["severity"] == "high" and set(f["classes"]) <= clean]
    ranking = label_error_ranking(findings)
    k = min(LABEL_ERROR_K, len(flipped_ids))
    return {"rows": rows, "clean_high": clean_high, "ranking": ranking, "k": k,
            "precision": precision_at_k(ranking, flipped_ids, k)}


def ranked_label_errors(run_dir: Path, flipped_ids: set[str]) -> dict:
    """The run's label_errors.csv (every suspect, ranked across pairs) scored against the flipped images."""
    import pandas as pd  # noqa: PLC0415

    ranking = [str(i) for i in pd.read_csv(run_dir / "label_errors.csv", dtype={"id": str})["id"]]
    records = pd.read_parquet(run_dir / "records.parquet", columns=["id", "pred"])
    flipped = records[records["id"].astype(str).isin(flipped_ids)]
    n = len(flipped_ids)
    hits = sum(i in flipped_ids for i in ranking)
    return {"suspects": len(ranking), "hits": hits, "recall": hits / n if n else float("nan"), "n_flipped": n,
            "predicted_as_what_they_are": int((flipped["pred"] == CLASSES[FLIP["from"]]).sum()),
            "p_at_k": precision_at_k(ranking, flipped_ids, min(LABEL_ERROR_K, n)),
            "r_precision": precision_at_k(ranking, flipped_ids, n)}


# ------------------------------------------------------------------------------------------------ reporting


def describe(f: dict | None) -> str:
    if f is None:
        return "none"
    region = f" region {[round(v, 3) for v in f['region']]}" if f["region"] else ""
    return f"{f['id']} {f['kind']} ({f['severity']}){region}"


def markdown(result: dict, seed: int, accuracy: float, runtime: float, diag: dict) -> str:
    lines = [
        f"| planted bias (seed {seed}) | class | found (medium or above) | best matching finding | region IoU |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        iou_text = "" if row["iou"] is None else f"{row['iou']:.2f}"
        lines.append(f"| {row['bias']} | {row['class']} | {'yes' if row['found'] else '**no**'} | "
                     f"{describe(row['finding'])} | {iou_text} |")
    found = sum(row["found"] for row in result["rows"])
    lines += [
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| planted biases found | {found} / {len(result['rows'])} | all |",
        f"| high-severity findings on clean classes | {len(result['clean_high'])} | 0 |",
        f"| label-error precision at k={result['k']} (findings.json) | {result['precision']:.2f} | >= 0.8 |",
        f"| label-error precision at k={result['k']} (label_errors.csv) | {diag['p_at_k']:.2f} | >= 0.8 |",
        f"| label-error R-precision (k = {diag['n_flipped']} flipped, label_errors.csv) | "
        f"{diag['r_precision']:.2f} | |",
        f"| label-error recall, all {diag['suspects']} suspects (label_errors.csv) | {diag['recall']:.2f} | |",
        f"| flipped images the model predicts as {CLASSES[FLIP['from']]} (what they are) | "
        f"{diag['predicted_as_what_they_are']} / {diag['n_flipped']} | |",
        f"| audit accuracy (noisy labels) | {accuracy:.3f} | |",
        f"| runtime | {runtime:.0f} s | |",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main


def run(seed: int, out: Path, train_per_class: int, audit_per_class: int, epochs: int) -> dict:
    """Build, train, audit, score; prints as it goes and returns the scores."""
    from auditor.audit import run_audit  # noqa: PLC0415
    from auditor.config import load_config  # noqa: PLC0415
    from auditor.sources import write_image_folder  # noqa: PLC0415

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    items, labels = load_fashion("train")
    train_idx = per_class_subset(labels, train_per_class, rng)
    train_set = plant(items[train_idx], labels[train_idx], rng)
    items, labels = load_fashion("t10k")
    audit_idx = per_class_subset(labels, audit_per_class, rng)
    audit_set = plant(items[audit_idx], labels[audit_idx], rng)
    ids = [f"t10k-{i:05d}" for i in audit_idx]
    # Record ids are paths relative to the ImageFolder root: <label folder>/<name>.png, the label being the noisy one.
    flipped_ids = {f"{CLASSES[audit_set['labels'][i]]}/{ids[i]}.png" for i in np.flatnonzero(audit_set["flipped"])}
    print(f"data: {len(train_idx)} training and {len(audit_idx)} audit images ({time.perf_counter() - started:.0f} s);"
          f" {len(flipped_ids)} audit images flipped {CLASSES[FLIP['from']]} -> {CLASSES[FLIP['to']]}", flush=True)

    t0 = time.perf_counter()
    model = train(train_set["images"], train_set["labels"], epochs, seed)
    train_time = time.perf_counter() - t0
    print(f"trained in {train_time:.0f} s", flush=True)

    out.mkdir(parents=True, exist_ok=True)
    for folder in ("data", "masks"):
        shutil.rmtree(out / folder, ignore_errors=True)  # a folder of an earlier seed would mix in its images
    torch.save(model.state_dict(), out / "model.pt")
    write_image_folder(out / "data", out / "masks", audit_set["images"], audit_set["masks"], audit_set["labels"],
                       CLASSES, ids)
    (out / "flipped.json").write_text(json.dumps(sorted(flipped_ids)))
    config = {
        "model": {"factory": "benchmarks.bias_detection:BenchNet", "checkpoint": str(out / "model.pt"),
                  "classes": CLASSES},
        "data": {"root": str(out / "data"), "masks": str(out / "masks"), "grayscale": True,
                 "mean": [MEAN], "std": [STD]},
        "sweep": {"batch_size": 128, "device": "cpu", "seed": seed},
        "run": {"out_dir": str(out / "run"), "resume": False},
    }
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    t0 = time.perf_counter()
    cfg = load_config(out / "config.yaml")
    run_dir = run_audit(cfg)
    audit_time = time.perf_counter() - t0
    runtime = time.perf_counter() - started

    findings = json.loads((run_dir / "findings.json").read_text())["findings"]
    summary = json.loads((run_dir / "summary.json").read_text())
    result = score(findings, flipped_ids)
    diag = ranked_label_errors(run_dir, flipped_ids)

    print(f"\nrun directory: {run_dir}")
    print(f"audit accuracy {summary['accuracy']:.3f} (against the noisy labels); training {train_time:.0f} s, "
          f"audit {audit_time:.0f} s, total {runtime:.0f} s")
    print("\nfindings.json:")
    for f in findings:
        region = f" region {[round(v, 3) for v in f['region']]}" if f["region"] else ""
        print(f"  {f['id']} {f['severity']:6} {f['kind']:26} {', '.join(f['classes'])}{region}")
    print("\nrules: a planted bias is found when a finding of the expected kind about its class is medium or high;")
    print("  watermark / partial: spatial_shortcut or strategy_cluster whose region holds the patch's centre;")
    print("  background: background_reliance or recognised_without_object;")
    print(f"  label noise: suspected_label_error with pair true={CLASSES[FLIP['to']]} pred={CLASSES[FLIP['from']]}.")
    print(f"  clean classes: {', '.join(CLASSES[c] for c in CLEAN)}; a finding is on clean classes when every class "
          "it names is clean.")
    print(f"  label-error precision at k = min({LABEL_ERROR_K}, flipped audit images): the samples of the "
          "suspected_label_error findings in the findings' order, missing slots count as misses.")
    print(f"  label_errors.csv: {diag['suspects']} suspects, {diag['hits']} of {len(flipped_ids)} flipped among them "
          f"(recall {diag['recall']:.2f})")
    for f in result["clean_high"]:
        print(f"  high on clean classes: {describe(f)} {f['classes']}")
    print()
    print(markdown(result, seed, summary["accuracy"], runtime, diag), flush=True)
    return {"seed": seed, **result, "diag": diag, "runtime": runtime}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default reports/bias-benchmark/seed-<seed>")
    parser.add_argument("--train-per-class", type=int, default=1200)
    parser.add_argument("--audit-per-class", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)  # the training epochs and the audit's own progress lines
    out = args.out or ROOT / "reports" / "bias-benchmark" / f"seed-{args.seed}"
    run(args.seed, out, args.train_per_class, args.audit_per_class, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
