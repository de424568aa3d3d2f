"""Does the audit trust a model that does not work? (issue 11: a model-health check before any finding)

Two torchvision resnet18s that cannot classify are audited on real photos (../shared/data/coco128-seg, each
photo labelled by its largest object class, that class's polygons as the mask), keeping the 8 most frequent
classes, with masks and without:

  random     random weights (seeded), as built, nothing trained
  collapsed  the same weights with the classifier's bias of the most frequent class raised, so it wins almost
             always: its accuracy is that class's share (well above chance), yet the model is no classifier

For each audit it prints accuracy, the class predicted most and its share, summary.json's `model_health`
("absent" where this version does not write it) and the findings above low. The target: model_health broken and
no finding above low.

    python benchmarks/broken_model.py                      # 4 audits of 67 photos, ~1 minute
    python benchmarks/broken_model.py --masks no --json reports/broken.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.planted import (  # noqa: E402
    MODES, ROOT, audit_modes, common_arguments, health_table, quiet_logging, write_scores,
)

COCO = ROOT.parent / "shared" / "data" / "coco128-seg"
N_CLASSES = 8
COLLAPSE_BIAS = 100.0  # added to one class's logit: far above a random resnet18's logit spread at this input size
SIZE = [160, 160]  # photos resized to this (height, width), masks with them


def coco_manifests(out: Path) -> tuple[dict[str, Path], list[str]]:
    """Manifests of the photos of the N_CLASSES most frequent labels: one with the mask column, one without."""
    from auditor.sources import yolo_seg_manifest  # noqa: PLC0415

    if not COCO.is_dir():
        sys.exit(f"coco128-seg not found at {COCO}: this benchmark reads ../shared/data/coco128-seg.")
    table = pd.read_csv(yolo_seg_manifest(COCO, out / "coco"))
    counts = table["label"].value_counts()
    classes = sorted(counts.index, key=lambda name: (-counts[name], name))[:N_CLASSES]  # ties by name: reproducible
    kept = table[table["label"].isin(classes)]
    paths = {"masks": out / "coco" / "manifest-masks.csv", "no-masks": out / "coco" / "manifest-no-masks.csv"}
    kept.to_csv(paths["masks"], index=False)
    kept.drop(columns=["mask"]).to_csv(paths["no-masks"], index=False)
    return paths, classes


def broken_models(num_classes: int, seed: int, collapse_to: int) -> dict[str, dict]:
    """State dicts of a random-weight resnet18 and of the same net collapsed onto class `collapse_to`."""
    import torchvision  # noqa: PLC0415

    torch.manual_seed(seed)
    random = torchvision.models.resnet18(weights=None, num_classes=num_classes).state_dict()
    collapsed = {name: value.clone() for name, value in random.items()}
    collapsed["fc.bias"][collapse_to] += COLLAPSE_BIAS
    return {"random": random, "collapsed": collapsed}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser, "reports/broken-model")
    args = parser.parse_args(argv)
    quiet_logging()
    out = args.out or ROOT / "reports" / "broken-model"
    manifests, classes = coco_manifests(out)
    n = len(pd.read_csv(manifests["masks"]))
    print(f"coco128-seg: {n} photos of the {N_CLASSES} most frequent classes: {', '.join(classes)}")
    # Collapsed onto the majority class: accuracy alone cannot tell this model is broken.
    models = broken_models(len(classes), args.seed, collapse_to=0)
    result = {"benchmark": "broken-model", "seed": args.seed, "classes": classes, "collapsed_to": classes[0],
              "models": {}}
    for name, state in models.items():
        checkpoint = out / name / "model.pt"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, checkpoint)

        def config_for(mode: str, name=name, checkpoint=checkpoint) -> dict:
            return {
                "model": {"arch": "resnet18", "checkpoint": str(checkpoint), "classes": classes},
                "data": {"manifest": str(manifests[mode]), "resize": SIZE},
                "sweep": {"batch_size": 16, "device": "cpu", "seed": args.seed},
                "run": {"out_dir": str(out / name / f"run-{mode}"), "resume": False},
            }

        result["models"][name] = audit_modes(config_for, out / name, MODES[args.masks])
    print()
    rows = {f"{name}, {mode}": run for name, runs in result["models"].items() for mode, run in runs.items()}
    print(health_table(f"resnet18 on coco128-seg (seed {args.seed})", rows))
    print("\ntarget: model_health broken, no finding above low")
    write_scores(result, out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
