"""Write a small, realistic run directory without a model, so report and diff tests need no sweep.

Four shape classes on dark noisy backgrounds. One class ("triangle" by default) carries a white watermark in
the top-left corner and its true-class maps look there instead of at the shape: the shortcut the report
must make visible. One class has a hostile name, so every page that shows class names is an escaping test.
Records, metrics and aggregates are computed from the maps and masks written, so they are consistent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from auditor.config import Config, DataConfig, ModelConfig
from auditor.findings import SEVERITIES
from auditor.runs import RECORD_COLUMNS, save_npy_atomic, save_parquet_atomic, write_json

HOSTILE = "<img src=x onerror=alert(1)>"
CLASSES = ["circle", "square", HOSTILE, "triangle"]
SHORTCUT_CLASS = 3  # index of the class recognised by its corner watermark
CONFUSED_WITH = {0: 2, 2: 0, 1: 3, 3: 1}  # where a wrong prediction goes
CORNER = [0.0, 0.0, 0.25, 0.25]  # x0, y0, x1, y1 as fractions of the image


def shape_masks(shapes: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, px: int) -> np.ndarray:
    """Boolean object masks [N, px, px] for shape ids 0 disk, 1 square, 2 plus, 3 triangle (centres in pixels)."""
    y, x = np.mgrid[0:px, 0:px].astype(np.float32) + 0.5
    dx, dy, r = x - cx[:, None, None], y - cy[:, None, None], radius[:, None, None]
    disk = dx**2 + dy**2 <= r**2
    square = (np.abs(dx) <= 0.8 * r) & (np.abs(dy) <= 0.8 * r)
    plus = ((np.abs(dx) <= 0.35 * r) & (np.abs(dy) <= r)) | ((np.abs(dy) <= 0.35 * r) & (np.abs(dx) <= r))
    triangle = (dy <= 0.8 * r) & (np.abs(dx) <= (dy + r) / 1.6)
    choice = (shapes % 4)[:, None, None]
    return np.where(choice == 0, disk, np.where(choice == 1, square, np.where(choice == 2, plus, triangle)))


def gaussian_maps(cx: np.ndarray, cy: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Maps [N, size, size] peaking at (cx, cy) given in map cells, scaled to max 1 as the sweep stores them."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    maps = np.exp(-((x - cx[:, None, None]) ** 2 + (y - cy[:, None, None]) ** 2) / (2 * sigma**2))
    return maps / maps.max(axis=(1, 2), keepdims=True)


def attention_metrics(maps: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Energy in mask, pointing hit and IoU of maps [N, S, S] against mask coverage [N, S, S]."""
    energy = (maps * masks).sum(axis=(1, 2)) / np.maximum(maps.sum(axis=(1, 2)), 1e-12)
    peak = maps.reshape(len(maps), -1).argmax(axis=1)
    pointing = masks.reshape(len(masks), -1)[np.arange(len(masks)), peak] >= 0.5
    hot, inside = maps >= 0.5, masks >= 0.5
    iou = (hot & inside).sum(axis=(1, 2)) / np.maximum((hot | inside).sum(axis=(1, 2)), 1)
    return {"energy_in_mask": energy, "pointing_hit": pointing.astype(float), "iou": iou}


def write_synthetic_run(
    run_dir: str | Path,
    n_images: int = 48,
    map_size: int = 8,
    image_px: int = 32,
    write_images: bool = True,
    distinct_images: int | None = None,
    shortcut: bool = True,
    p_correct: float = 0.75,
    classes: list[str] | None = None,
    with_findings: bool = True,
    with_causal: bool = True,
    seed: int = 0,
) -> Path:
    """Write RUN_DIR with every file of the run-directory contract; images go to RUN_DIR/../images.

    distinct_images: write only that many PNGs and let the other rows reuse them (row i shows image
    i % distinct_images; keep it a multiple of the class count so labels match): large runs stay fast to write.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    classes = list(classes or CLASSES)
    k = len(classes)
    rng = np.random.default_rng(seed)
    n = n_images
    cell = image_px / map_size  # image pixels per map cell

    labels = np.arange(n) % k
    radius = rng.uniform(0.16, 0.24, n) * image_px
    cx = rng.uniform(0.4, 0.7, n) * image_px  # objects stay clear of the top-left corner
    cy = rng.uniform(0.4, 0.7, n) * image_px
    sub = 4 if n <= 10_000 else 2  # sub-cells per map cell and side, for the mask's coverage
    fine = shape_masks(labels, cx / cell * sub, cy / cell * sub, radius / cell * sub, map_size * sub)
    masks = fine.reshape(n, map_size, sub, map_size, sub).mean(axis=(2, 4)).astype(np.float32)
    has_mask = rng.random(n) > 0.1
    masks[~has_mask] = 0.0

    correct = rng.random(n) < p_correct
    preds = np.where(correct, labels, np.vectorize(lambda c: CONFUSED_WITH.get(c, (c + 1) % k) % k)(labels))
    correct = preds == labels
    on_object = gaussian_maps(cx / cell, cy / cell, map_size, sigma=map_size / 8)
    corner = gaussian_maps(np.full(n, 0.5), np.full(n, 0.5), map_size, sigma=map_size / 10)
    elsewhere = gaussian_maps(rng.uniform(0, map_size, n), rng.uniform(0, map_size, n), map_size, map_size / 6)
    shortcut_rows = (labels == SHORTCUT_CLASS) if shortcut else np.zeros(n, bool)
    true_maps = np.where(shortcut_rows[:, None, None], corner, on_object)
    pred_maps = np.where(correct[:, None, None], true_maps, elsewhere)
    maps = np.stack([pred_maps, true_maps], axis=1).astype(np.float16)

    p_pred = np.where(correct, rng.uniform(0.6, 1.0, n), rng.uniform(0.35, 0.95, n))
    p_true = np.where(correct, p_pred, rng.uniform(0.02, 0.3, n))
    records = {
        "row": np.arange(n),
        "id": [f"img{i:05d}" for i in range(n)],
        "path": [
            str(run_dir.parent / "images" / f"class{label}" / f"img{i % (distinct_images or n):05d}.png")
            for i, label in enumerate(labels)
        ],
        "label": [classes[c] for c in labels],
        "label_idx": labels,
        "pred": [classes[c] for c in preds],
        "pred_idx": preds,
        "p_true": p_true,
        "p_pred": p_pred,
        "margin": np.where(correct, 2 * p_pred - 1, p_true - p_pred),
        "loss": -np.log(p_true),
        "correct": correct,
        "has_mask": has_mask,
        "mask_area": np.where(has_mask, masks.mean(axis=(1, 2)), np.nan),
    }
    for kind, kind_maps in (("pred", pred_maps), ("true", true_maps)):
        for name, values in attention_metrics(kind_maps, masks).items():
            records[f"{kind}_{name}"] = np.where(has_mask, values, np.nan)
        records[f"{kind}_cam_max"] = rng.uniform(0.5, 5.0, n)
    frame = pd.DataFrame(records)[list(RECORD_COLUMNS)]

    if write_images:
        m = distinct_images or n
        object_px = shape_masks(labels[:m], cx[:m], cy[:m], radius[:m], image_px)
        _write_images(frame.head(m), labels[:m], object_px, labels[:m] == SHORTCUT_CLASS, image_px, rng)
    save_parquet_atomic(run_dir / "records.parquet", frame)
    save_npy_atomic(run_dir / "maps.npy", maps)
    save_npy_atomic(run_dir / "masks.npy", masks.astype(np.float16))

    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, preds), 1)
    pd.DataFrame(confusion, index=classes, columns=classes).to_csv(run_dir / "confusion.csv")
    support, predicted, hits = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    precision, recall = hits / np.maximum(predicted, 1), hits / np.maximum(support, 1)
    per_class = pd.DataFrame(
        {
            "class": classes,
            "support": support,
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / np.maximum(precision + recall, 1e-12),
        }
    )
    per_class.to_csv(run_dir / "per_class.csv", index=False)
    pairs = [
        {
            "true": classes[i],
            "pred": classes[j],
            "count": int(confusion[i, j]),
            "rate": confusion[i, j] / support[i],
            "ids": frame["id"][(labels == i) & (preds == j)].head(20).tolist(),
        }
        for i, j in zip(*np.nonzero(confusion), strict=True)
        if i != j
    ]
    pairs = sorted(pairs, key=lambda p: (-p["count"], -p["rate"]))
    write_json(run_dir / "confused_pairs.json", pairs)

    skipped = pd.DataFrame(
        {
            "id": ["bad001", "bad002", "nomask003"],
            "path": ["images/bad001.png", "images/<b>bad002</b>.png", "images/nomask003.png"],
            "reason": ["unreadable image", "unreadable image", "missing mask"],
        }
    )
    skipped.to_csv(run_dir / "skipped.csv", index=False)
    write_json(
        run_dir / "summary.json",
        {
            "n_images": n,
            "n_skipped": len(skipped),
            "accuracy": float(correct.mean()),
            "n_classes": k,
            "skipped_reasons": skipped["reason"].value_counts().to_dict(),
            "per_class": {str(row.pop("class")): row for row in per_class.to_dict("records")},  # as pipeline.py writes
            "top_confused_pairs": [{key: v for key, v in p.items() if key != "ids"} for p in pairs[:10]],
        },
    )
    config = Config(
        model=ModelConfig(arch="resnet18", checkpoint="checkpoints/shapes.pt"),
        data=DataConfig(root=str(run_dir.parent / "images")),
    )
    config.sweep.map_size = map_size
    write_json(
        run_dir / "manifest.json",
        {
            "config": config.to_dict(),
            "classes": classes,
            "device": "cpu",
            "created": "2024-05-01T12:00:00+00:00",
            "fingerprints": {"model": f"model{seed:04d}" + "ab" * 28, "data": "d" * 64},
            "versions": {"auditor": "0.1.0", "torch": "2.4.0", "python": "3.11.7"},
            "timings": {"sweep_s": 12.5, "total_s": 14.0},
            "methods": ["gradcam"],
        },
    )
    if with_findings:
        write_json(run_dir / "findings.json", _findings(frame, classes, labels, preds, shortcut))
    if with_causal:
        _write_causal(run_dir, classes, labels, correct, shortcut)
    return run_dir


def _write_images(frame, labels, object_px, watermarked, px, rng) -> None:
    palette = np.array([[230, 120, 60], [90, 170, 230], [120, 210, 120], [220, 200, 80]], dtype=np.float32)
    for i, path in enumerate(frame["path"]):
        image = rng.normal(35, 10, (px, px, 3))
        image[object_px[i]] = palette[labels[i] % 4] + rng.normal(0, 8, (int(object_px[i].sum()), 3))
        if watermarked[i]:
            image[1 : px // 6 + 1, 1 : px // 6 + 1] = 255
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)


def _findings(frame, classes, labels, preds, shortcut) -> dict:
    """Findings in the shape auditor.findings writes (kinds, {"true","pred"} pairs, [x0, y0, x1, y1] regions)."""
    findings = []
    if shortcut:
        of_class = labels == SHORTCUT_CLASS
        measured = frame["pred_energy_in_mask"][of_class & frame["correct"]].dropna()
        energy = float(measured.mean()) if len(measured) else 0.0
        findings.append(
            {
                "id": "",
                "kind": "spatial_shortcut",
                "severity": "high",
                "classes": [classes[SHORTCUT_CLASS]],
                "pair": None,
                "region": CORNER,
                "samples": frame["id"][of_class].head(6).tolist(),
                "metrics": {
                    "n": int(of_class.sum()),
                    "energy_in_mask": round(energy, 4),
                    "region_share": 0.81,
                    "background_only_accuracy": 0.92,
                    "shortcut_removed_accuracy": 0.3,
                },
                "message": f"Class {classes[SHORTCUT_CLASS]!r} is recognised by the top-left corner, not its object: "
                f"only {energy:.0%} of the attention of its correct predictions falls on the object.",
            }
        )
    a, b = 0, 2
    group = (labels == a) & (preds == b)
    findings.append(
        {
            "id": "",
            "kind": "context_confusion",
            "severity": "medium",
            "classes": [classes[a], classes[b]],
            "pair": {"true": classes[a], "pred": classes[b]},
            "region": None,
            "samples": frame["id"][group].tolist(),
            "metrics": {"n": int(group.sum()), "rate": round(float(group.sum() / max(1, (labels == a).sum())), 4)},
            "message": f"{int(group.sum())} images of {classes[a]!r} are predicted {classes[b]!r} from context.",
        }
    )
    findings.append(
        {
            "id": "",
            "kind": "background_reliance",
            "severity": "low",
            "classes": [classes[1]],
            "pair": None,
            "region": None,
            "samples": [],
            "metrics": {"object_score": 0.21},
            "message": f"Class {classes[1]!r} is recognised partly outside its object.",
        }
    )
    for i, finding in enumerate(findings, start=1):
        finding["id"] = f"F{i:03d}"
    return {"schema_version": 1, "findings": findings, "notes": ["strategy_cluster: too few images per class to judge"]}


def _write_causal(run_dir, classes, labels, correct, shortcut) -> None:
    """causal.csv in the shape auditor.causal writes."""
    rows = []
    for i, name in enumerate(classes):
        of_class = labels == i
        accuracy = float(correct[of_class].mean()) if of_class.any() else float("nan")
        is_shortcut = shortcut and i == SHORTCUT_CLASS
        rows.append(
            {
                "class": name,
                "n": int(of_class.sum()),
                "accuracy": accuracy,
                "n_masked": int(of_class.sum()),
                "background_only_accuracy": 0.92 if is_shortcut else 0.1,
                "background_only_baseline": 0.05,
                "n_region": int(of_class.sum()) if is_shortcut else 0,
                "shortcut_removed_accuracy": 0.3 if is_shortcut else float("nan"),
                "region": json.dumps(CORNER) if is_shortcut else "",
                "n_mixed": int(of_class.sum()),
                "mixed_same_accuracy": 0.95,
                "mixed_rand_accuracy": 0.15 if is_shortcut else 0.85,
            }
        )
    pd.DataFrame(rows).to_csv(run_dir / "causal.csv", index=False)


def write_many_class_run(run_dir: str | Path, n_classes: int = 1000, per_class: int = 2, n_low: int = 625) -> Path:
    """A run at the user's scale: N_CLASSES classes (one hostile), the three findings above, one run-wide
    model_health finding and N_LOW low findings on distinct classes, as a 1,000-class audit raises them."""
    classes = [f"class{i:04d}" for i in range(n_classes - 1)] + [HOSTILE]
    run_dir = write_synthetic_run(
        run_dir, n_images=per_class * n_classes, distinct_images=n_classes, classes=classes, with_causal=False
    )
    doc = json.loads((run_dir / "findings.json").read_text())
    health = {
        "kind": "model_health", "severity": "medium", "classes": [classes[5]], "pair": None, "region": None,
        "samples": [], "metrics": {"skill": 0.2, "dead_classes": 40, "top_pred": 5},
        "message": "The model looks suspect: it names 40 of its classes for almost none of their images.",
    }  # fmt: skip
    lows = [
        {
            "kind": "background_reliance",
            "severity": "low",
            "classes": [classes[c]],
            "pair": None,
            "region": None,
            "samples": [f"img{c + n_classes * s:05d}" for s in range(per_class)],
            "metrics": {"object_score": 0.3},
            "message": f"Class {classes[c]!r} is recognised partly outside its object.",
        }
        for c in range(10, 10 + n_low)
    ]
    findings = sorted([health, *doc["findings"], *lows], key=lambda f: SEVERITIES.index(f["severity"]))
    doc["findings"] = [{**f, "id": f"F{i:03d}"} for i, f in enumerate(findings, start=1)]
    write_json(run_dir / "findings.json", doc)
    return run_dir
