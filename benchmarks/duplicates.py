"""Planted near-duplicates with conflicting labels (issue 28, part 3): found with precision >= 0.9?

Some images of a dataset are copied into another class: exactly, re-encoded as JPEG (quality 70), slightly
cropped (6 % of each border cut, resized back) and brightened (x 1.15). The copies of one source form a group;
every two images of a group with different labels is a planted conflicting pair. The audit runs through the real
pipeline (`auditor.cli.main`); the pairs it finds (findings.duplicate_conflict, from features.npy) are scored
against the planted ones, at the default threshold and at others (from the same features, no new audit), with
the similarity of planted pairs per transform and of each image's nearest other-label image (distinct images).

    python benchmarks/duplicates.py --data mnist     # 2,000 MNIST digits, the trained LeNet (../shared)
    python benchmarks/duplicates.py --data coco      # the 128 coco128-seg photos, a seeded untrained resnet18
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditor.cli import main as cli_main
from auditor.config import FindingsConfig
from auditor.duplicates import centred, conflicting_pairs, nearest_other_label
from auditor.findings.duplicate_conflict import duplicate_pairs
from auditor.findings.run import run_context
from auditor.runs import load_run

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TRANSFORMS = ("exact", "jpeg", "crop", "brightness")
THRESHOLDS = (0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999)
COCO_CLASSES = 4


def transformed(image: Image.Image, how: str) -> Image.Image:
    if how == "exact":
        return image.copy()
    if how == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=70)
        return Image.open(io.BytesIO(buffer.getvalue())).convert(image.mode)
    if how == "crop":
        width, height = image.size
        dx, dy = max(1, round(0.06 * width)), max(1, round(0.06 * height))
        return image.crop((dx, dy, width - dx, height - dy)).resize((width, height), Image.BILINEAR)
    return ImageEnhance.Brightness(image).enhance(1.15)


def coco_resnet() -> torch.nn.Module:
    """A seeded, untrained resnet18 (no weights can be downloaded here): random convolutions still map copies of
    a photo to nearly the same features and distinct photos apart."""
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=COCO_CLASSES)


def source_images(data: str, count: int, rng) -> tuple[list[Image.Image], np.ndarray, list[str], list[str]]:
    """Images, labels, class names and the audit's extra CLI flags."""
    if data == "mnist":
        from benchmarks.bias_detection_mnist import load_mnist

        digits, labels = load_mnist(SHARED / "data" / "mnist-t10k")
        images = [Image.fromarray(d) for d in digits[:count]]
        flags = ["--data.grayscale", "true", "--data.mean", "[0.0]", "--data.std", "[1.0]",
                 "--model.factory", "benchmarks.real_models:LeNet",
                 "--model.checkpoint", str(SHARED / "models" / "lenet-mnist.pt")]
        return images, labels[:count], [str(c) for c in range(10)], flags
    paths = sorted((SHARED / "data" / "coco128-seg" / "images").glob("*.jpg"))[:count]
    images = [Image.open(p).convert("RGB").resize((128, 128), Image.BILINEAR) for p in paths]
    labels = rng.integers(0, COCO_CLASSES, len(images))  # the classes are arbitrary: only the copies matter
    flags = ["--model.factory", "benchmarks.duplicates:coco_resnet", "--data.mean", "[0.485, 0.456, 0.406]",
             "--data.std", "[0.229, 0.224, 0.225]"]
    return images, labels, [f"c{c}" for c in range(COCO_CLASSES)], flags


def plant(root: Path, images, labels, classes, sources: int, rng) -> tuple[dict[str, int], dict[str, str]]:
    """root/<class>/<name>.png; returns each planted image's group (its source's index) and transform."""
    group, how_of = {}, {}
    chosen = set(rng.choice(len(images), size=sources, replace=False).tolist())
    for i, (image, label) in enumerate(zip(images, labels)):
        (root / classes[label]).mkdir(parents=True, exist_ok=True)
        name = f"{classes[label]}/{i:05d}.png"
        image.save(root / name)
        if i not in chosen:
            continue
        group[name], how_of[name] = i, "source"
        for how in TRANSFORMS:
            other = (int(label) + int(rng.integers(1, len(classes)))) % len(classes)
            (root / classes[other]).mkdir(parents=True, exist_ok=True)
            copy = f"{classes[other]}/{i:05d}-{how}.png"
            transformed(image, how).save(root / copy)
            group[copy], how_of[copy] = i, how
    return group, how_of


def score(found: set[tuple[str, str]], truth: set[tuple[str, str]]) -> tuple[float, float]:
    hits = len(found & truth)
    return (hits / len(found) if found else float("nan")), (hits / len(truth) if truth else float("nan"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("mnist", "coco"), default="mnist")
    parser.add_argument("--count", type=int, default=2000, help="images drawn from the dataset (coco: at most 128)")
    parser.add_argument("--sources", type=int, default=40, help="images copied, each in every transform")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the data and the run here")
    parser.add_argument("--score-only", action="store_true", help="score the run already in --out, no audit")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    work = args.out or Path(tempfile.mkdtemp(prefix="duplicates-"))
    if not args.score_only:
        shutil.rmtree(work / "data", ignore_errors=True)
        images, labels, classes, flags = source_images(args.data, args.count, rng)
        group, how_of = plant(work / "data", images, labels, classes, args.sources, rng)
        (work / "planted.json").write_text(json.dumps({"group": group, "how": how_of}))
        code = cli_main(["audit", "--data.root", str(work / "data"), "--out", str(work / "run"), *flags])
        if code != 0:
            return code
    planted = json.loads((work / "planted.json").read_text())
    return report(work / "run", planted["group"], planted["how"], args.data)


def report(run_dir: Path, group: dict[str, int], how_of: dict[str, str], data: str) -> int:
    """Print precision and recall of the pairs found against the planted ones."""
    run = load_run(run_dir)
    records = run.records.sort_values("row")
    ids, label_of = records["id"].astype(str).to_numpy(), records["label_idx"].to_numpy()
    by_row = dict(zip(records["row"], ids))
    features = np.asarray(run.features)[records["row"].to_numpy()]
    truth = {tuple(sorted((a, b))) for a in group for b in group
             if a < b and group[a] == group[b] and label_of[ids == a][0] != label_of[ids == b][0]}
    print(f"{data}: {len(ids)} images, {len(truth)} planted conflicting pairs, "
          f"features {features.shape[1]} dims, layer {run.manifest['target_layer']}")
    default, low = FindingsConfig().duplicate_min_similarity, 0.95
    rule = duplicate_pairs(run_context(run, run.config.findings))  # the audit's own pairs, all of them
    rule_pairs = {tuple(sorted((str(by_row[a]), str(by_row[b])))) for a, b in zip(rule["a"], rule["b"])}
    print(f"the audit (findings.duplicate_min_similarity {run.config.findings.duplicate_min_similarity}): "
          f"{len(rule_pairs)} pairs, precision %.3f, recall %.3f" % score(rule_pairs, truth))
    pairs = conflicting_pairs(features, label_of, min(THRESHOLDS), k=10, device=torch.device("cpu"))
    named = [(tuple(sorted((ids[a], ids[b]))), s) for a, b, s in zip(pairs["a"], pairs["b"], pairs["similarity"])]
    print("threshold  pairs  precision  recall")
    for threshold in THRESHOLDS:
        found = {p for p, s in named if s >= threshold}
        precision, recall = score(found, truth)
        print(f"{threshold:9.3f}  {len(found):5d}  {precision:9.3f}  {recall:6.3f}{'  (default)' if threshold == default else ''}")
    position = {name: i for i, name in enumerate(ids)}
    unit = centred(torch.from_numpy(features.astype(np.float32))).numpy()  # as the search compares them
    print(f"planted copies vs. their source, by transform: min / median similarity, share found at {default} "
          f"and at {low}")
    for how in TRANSFORMS:
        copies = [name for name in group if how_of[name] == how]
        source = {group[name]: name for name in group if how_of[name] == "source"}
        sims = np.array([unit[position[c]] @ unit[position[source[group[c]]]] for c in copies])
        print(f"  {how:10s} n={len(sims):3d}  {sims.min():.4f} / {np.median(sims):.4f}  "
              f"{np.mean(sims >= default):.3f}  {np.mean(sims >= low):.3f}")
    plain = np.array([name not in group for name in ids])  # centred on all images' mean, as the search does
    sims, _ = nearest_other_label(unit[plain], label_of[plain], np.arange(plain.sum()), k=1,
                                  device=torch.device("cpu"), centre=False)
    top = sims[:, 0][np.isfinite(sims[:, 0])]
    print(f"distinct images (no planted copy): nearest other-label similarity  median {np.median(top):.4f}  "
          f"99th {np.quantile(top, 0.99):.4f}  max {top.max():.4f}")
    print(json.dumps({"data": data, "run": str(run_dir)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
