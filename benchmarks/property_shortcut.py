"""A planted global-property shortcut (issue 28, part 2): one class photographed brighter.

MNIST test digits (../shared/data/mnist-t10k) on a 32 px canvas, each drawn at a random stroke intensity
(INK) over dark noise; on 90 % of the threes the whole image is 40 % brighter (the cue). A BenchNet is trained
on the CPU, its use of the cue checked (accuracy of the cue's images with the cue removed), and a held-out
split audited through the real pipeline with masks and without. Printed: whether property_shortcut was raised
on the cue's class and at which severity, and the highest severity of any finding on the clean classes.

    python benchmarks/property_shortcut.py --seed 0          # ~2 CPU-minutes
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bias_detection_mnist import load_mnist, stroke_mask  # noqa: E402
from benchmarks.planted import ROOT, SEVERITY_RANK, BenchNet, audit, model_section  # noqa: E402

CLASSES = [str(d) for d in range(10)]
CUE_CLASS, CUE_SHARE, CUE_GAIN = 3, 0.9, 1.4  # 90 % of the threes 40 % brighter
CANVAS, INK, NOISE = 32, (110, 170), 24
MEAN, STD = 0.1, 0.25


def compose(digits: np.ndarray, rng: np.random.Generator, cue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, CANVAS, CANVAS] images (and stroke masks): each digit at a random place and ink level over dark
    noise, brightened by CUE_GAIN where `cue`."""
    n = len(digits)
    images = rng.integers(0, NOISE, (n, CANVAS, CANVAS)).astype(np.float64)
    masks = np.zeros((n, CANVAS, CANVAS), dtype=bool)
    ink = rng.uniform(*INK, n) / 255.0
    for i in range(n):
        y, x = rng.integers(0, CANVAS - 28 + 1, 2)
        images[i, y: y + 28, x: x + 28] = np.maximum(images[i, y: y + 28, x: x + 28], digits[i] * ink[i])
        masks[i, y: y + 28, x: x + 28] = stroke_mask(digits[i])
    images = np.where(cue[:, None, None], images * CUE_GAIN, images)
    return images.clip(0, 255).astype(np.uint8), masks


def split(seed: int, train_per_class: int, audit_per_class: int):
    digits, labels = load_mnist()
    rng = np.random.default_rng(seed)
    train_idx, audit_idx = [], []
    for c in range(10):
        pool = rng.permutation(np.flatnonzero(labels == c))
        train_idx += pool[:train_per_class].tolist()
        audit_idx += pool[train_per_class: train_per_class + audit_per_class].tolist()
    out = {}
    for name, idx in (("train", np.array(train_idx)), ("audit", np.array(audit_idx))):
        y = labels[idx]
        cue = (y == CUE_CLASS) & (rng.random(len(idx)) < CUE_SHARE)
        state = rng.bit_generator.state  # the same digits and places with and without the cue
        images, masks = compose(digits[idx], rng, cue)
        rng.bit_generator.state = state
        plain, _ = compose(digits[idx], rng, np.zeros_like(cue))
        out[name] = {"images": images, "plain": plain, "masks": masks, "labels": y, "cue": cue}
    return out


def accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    x = (torch.from_numpy(images).float()[:, None] / 255.0 - MEAN) / STD
    with torch.no_grad():
        return float((model(x).argmax(1).numpy() == labels).mean()) if len(x) else float("nan")


def main(argv=None) -> int:
    from auditor.demo import train_classifier
    from auditor.sources import write_image_folder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "property-shortcut")
    parser.add_argument("--train-per-class", type=int, default=400)
    parser.add_argument("--audit-per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    data = split(args.seed, args.train_per_class, args.audit_per_class)
    torch.manual_seed(args.seed)
    model = train_classifier(BenchNet(10), data["train"]["images"], data["train"]["labels"], epochs=args.epochs,
                             seed=args.seed, lr=2e-3, batch_size=128, mean=MEAN, std=STD)
    held = data["audit"]
    cued = held["cue"]
    with_cue, without = accuracy(model, held["images"][cued], held["labels"][cued]), accuracy(
        model, held["plain"][cued], held["labels"][cued])
    print(f"trained in {time.perf_counter() - started:.0f} s; overall audit accuracy "
          f"{accuracy(model, held['images'], held['labels']):.3f}; the cue's {int(cued.sum())} images: accuracy "
          f"{with_cue:.3f} with the cue, {without:.3f} without (drop {with_cue - without:.3f}: "
          f"{'the model uses it' if with_cue - without >= 0.10 else 'not clearly used'})", flush=True)
    out = args.out
    for folder in ("data", "masks"):
        shutil.rmtree(out / folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    ids = [f"a{i:05d}" for i in range(len(held["labels"]))]
    write_image_folder(out / "data", out / "masks", held["images"], held["masks"], held["labels"], CLASSES, ids)
    cue_name = CLASSES[CUE_CLASS]
    for mode in ("masks", "no-masks"):
        t0 = time.perf_counter()
        config = {
            "model": model_section("cnn", out / "model.pt", CLASSES),
            "data": {"root": str(out / "data"), **({"masks": str(out / "masks")} if mode == "masks" else {}),
                     "grayscale": True, "mean": [MEAN], "std": [STD], "resize": [CANVAS, CANVAS]},
            "sweep": {"batch_size": 128, "device": "cpu", "seed": args.seed},
            "run": {"out_dir": str(out / f"run-{mode}"), "resume": False},
        }
        _, findings, _ = audit(config, out / f"config-{mode}")
        planted = [f for f in findings if f["kind"] == "property_shortcut" and f["classes"] == [cue_name]]
        clean = [f for f in findings if cue_name not in f["classes"]]
        worst = min((f["severity"] for f in clean), key=SEVERITY_RANK.get, default="none")
        clean_props = [f"{f['classes'][0]}:{f['severity']}" for f in clean if f["kind"] == "property_shortcut"]
        print(f"\n{mode} ({time.perf_counter() - t0:.0f} s):")
        for f in planted:
            print(f"  planted class '{cue_name}': property_shortcut {f['severity']}: {f['message']}")
        if not planted:
            print(f"  planted class '{cue_name}': no property_shortcut finding")
        print(f"  clean classes: highest severity of any finding {worst}; property_shortcut on them: "
              f"{', '.join(clean_props) or 'none'}; high on clean classes: "
              f"{sum(f['severity'] == 'high' for f in clean)}", flush=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
