"""Which hole tells the class? The causal check's object erasure, three ways, on planted-bias benchmark runs.

The causal check asks whether a class is still recognised with its object erased. A hole cut to the object's
outline keeps its shape, and a bounding box keeps its proportions: both can name the class with no background
cue at all (a shirt's silhouette, a sneaker's flat box). This script erases the objects of a benchmark run's
audit images (the run's own model and masks, up to 100 images per class, as the causal check reads them) as

  mask     the mask's pixels
  box      the mask's bounding box
  square   the square around that box (`auditor.causal.object_boxes`, what the check uses)

and prints, per class, how often its erased images are still called that class against the baseline (other
classes' erased images called it) and their difference, the effect that the check calls "recognised without its
object" at 0.3 or more. Planted classes are marked: patch classes keep their patch when the object goes, the
background class keeps its background; every other class above 0.3 is a false alarm of that erasure.

    python benchmarks/bias_detection.py --seed 0 --out reports/bias-fashion-0   # first: a run to read
    python benchmarks/erasure.py reports/bias-fashion-0 [more run folders ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditor.pipeline import prepare  # noqa: E402
from auditor.causal import (  # noqa: E402
    background_only,
    causal_indices,
    erase,
    extents,
    filled_boxes,
    object_boxes,
)
from auditor.config import load_config  # noqa: E402
from auditor.sweep import make_loader  # noqa: E402

PER_CLASS = 100
MIN_EFFECT = 0.3  # findings.causal_min_background_accuracy


def bounding_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Each mask's bounding box, filled (the erasure before the square)."""
    top, bottom, left, right, found = extents(masks)
    return filled_boxes(top, bottom, left, right, *masks.shape[-2:]) & found[:, None, None]


HOLES = {"mask": lambda masks: masks, "box": bounding_boxes, "square": object_boxes}


def erased_confusions(run: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """[true, called] counts of the erased images, per way of erasing, for the run's masked images."""
    cfg = load_config(run / "config-masks" / "config.yaml")
    classes, samples, dataset, model, *_ = prepare(cfg)
    k = len(classes)
    indices = causal_indices(samples, set(range(k)), PER_CLASS * k, cfg.findings.seed)
    counts = {name: np.zeros((k, k)) for name in HOLES}
    with torch.no_grad():
        for batch in make_loader(dataset, indices, cfg, torch.device("cpu")):
            masked = batch["has_mask"].bool()
            masks, labels = batch["mask"][masked].bool(), batch["label"][masked].numpy()
            for name, hole in HOLES.items():
                called = model(erase(batch["image"][masked], hole(masks))).argmax(dim=1).numpy()
                np.add.at(counts[name], (labels, called), 1)
    return classes, counts


def effects(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class: erased accuracy, and its baseline, as the check has them (`auditor.causal.background_only`)."""
    accuracy, baseline = background_only(torch.from_numpy(counts))
    return accuracy.numpy(), baseline.numpy()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="output folders of bias_detection*.py (--out)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    for run in args.runs:
        classes, counts = erased_confusions(run)
        planted = set(_planted(run))
        print(f"\n{run}: erased accuracy / baseline / effect (* planted class)")
        print("| class | " + " | ".join(HOLES) + " |\n|---|" + "---|" * len(HOLES))
        cells = {name: effects(c) for name, c in counts.items()}
        for i, name in enumerate(classes):
            row = [f"{a[i]:.2f} / {b[i]:.2f} / **{a[i] - b[i]:.2f}**" if a[i] - b[i] >= MIN_EFFECT
                   else f"{a[i]:.2f} / {b[i]:.2f} / {a[i] - b[i]:.2f}" for a, b in cells.values()]
            print(f"| {name}{' *' if name in planted else ''} | " + " | ".join(row) + " |")
        for hole, (a, b) in cells.items():
            alarms = [c for i, c in enumerate(classes) if a[i] - b[i] >= MIN_EFFECT and c not in planted]
            print(f"{hole}: clean classes at effect >= {MIN_EFFECT}: {', '.join(alarms) or 'none'}")
    return 0


def _planted(run: Path) -> list[str]:
    """The planted classes, from the run's scores.json (every class not listed clean)."""
    scores = json.loads((run / "scores.json").read_text())
    return [c for c in scores["classes"] if c not in scores["clean"]]


if __name__ == "__main__":
    raise SystemExit(main())
