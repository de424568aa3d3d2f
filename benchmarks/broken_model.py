"""Does the audit trust a model that does not work? (issue 11: a model-health check before any finding)

Models that cannot classify are audited on real photos (../shared/data/coco128-seg, each photo labelled by its
largest object class, that class's polygons as the mask), keeping the 8 most frequent classes, with masks and
without, through each route a user brings a model by (--routes):

  torchvision   model.arch resnet18 and a state_dict
  timm          model.timm resnet18 and a safetensors state_dict, built offline
  huggingface   model.huggingface: a small ViTForImageClassification folder written by save_pretrained
  exported      model.exported: a torchvision resnet18 through torch.export.export and torch.export.save

and each in two ways:

  random        random weights (seeded), as built, nothing trained
  collapsed     the same weights with the classifier's bias of the most frequent class raised, so it wins almost
                always: its accuracy is that class's share (well above chance), yet the model is no classifier

For each audit it prints accuracy, the class predicted most and its share, summary.json's `model_health`
("absent" where this version does not write it) and the findings above low. The target: model_health broken and
no finding above low.

    python benchmarks/broken_model.py                      # 16 audits of 67 photos, a few minutes
    python benchmarks/broken_model.py --routes torchvision --masks no --json reports/broken.json
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
    MODES, ROOT, audit_modes, common_arguments, health_table, quiet_logging, save_exported, write_scores,
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


ROUTES = ("torchvision", "timm", "huggingface", "exported")


def collapse(model: torch.nn.Module, bias: torch.Tensor, onto: int) -> torch.nn.Module:
    """The model with `bias` (its classifier's) raised by COLLAPSE_BIAS at class `onto`, in place."""
    with torch.no_grad():
        bias[onto] += COLLAPSE_BIAS
    return model


def route_model(route: str, classes: list[str], seed: int, collapse_to: int | None, folder: Path) -> dict:
    """Build the route's random-weight model (collapsed onto one class when `collapse_to` is set), write it where
    the route reads from, and return the `model` config section that loads it."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if route in ("torchvision", "exported"):
        import torchvision  # noqa: PLC0415

        model = torchvision.models.resnet18(weights=None, num_classes=len(classes)).eval()
        bias = model.fc.bias
    elif route == "timm":
        import timm

        model = timm.create_model("resnet18", pretrained=False, num_classes=len(classes)).eval()
        bias = model.get_classifier().bias
    elif route == "huggingface":
        import transformers

        config = transformers.ViTConfig(
            image_size=SIZE[0], patch_size=16, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=128, id2label=dict(enumerate(classes)), label2id={c: i for i, c in enumerate(classes)})
        model = transformers.ViTForImageClassification(config).eval()
        bias = model.classifier.bias
    else:
        raise ValueError(f"unknown route {route!r}: one of {', '.join(ROUTES)}")
    if collapse_to is not None:
        collapse(model, bias, collapse_to)
    if route == "torchvision":
        torch.save(model.state_dict(), folder / "model.pt")
        return {"arch": "resnet18", "checkpoint": str(folder / "model.pt"), "classes": classes}
    if route == "timm":
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(folder / "model.safetensors"))
        return {"timm": "resnet18", "checkpoint": str(folder / "model.safetensors"), "classes": classes}
    if route == "huggingface":
        model.save_pretrained(folder / "hf")
        return {"huggingface": str(folder / "hf")}
    save_exported(model, torch.randn(2, 3, *SIZE), folder / "model.pt2")
    return {"exported": str(folder / "model.pt2"), "classes": classes}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser, "reports/broken-model")
    parser.add_argument("--routes", default=",".join(ROUTES), help=f"comma-separated, of {', '.join(ROUTES)}")
    args = parser.parse_args(argv)
    quiet_logging()
    out = args.out or ROOT / "reports" / "broken-model"
    manifests, classes = coco_manifests(out)
    n = len(pd.read_csv(manifests["masks"]))
    print(f"coco128-seg: {n} photos of the {N_CLASSES} most frequent classes: {', '.join(classes)}")
    # Collapsed onto the majority class: accuracy alone cannot tell this model is broken.
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    result = {"benchmark": "broken-model", "seed": args.seed, "classes": classes, "collapsed_to": classes[0],
              "models": {}}
    for route in routes:
        for kind, collapse_to in (("random", None), ("collapsed", 0)):
            name = kind if route == "torchvision" else f"{route} {kind}"  # the torchvision names as before
            folder = out / name.replace(" ", "-")
            model_section = route_model(route, classes, args.seed, collapse_to, folder)

            def config_for(mode: str, model_section=model_section, folder=folder) -> dict:
                return {
                    "model": model_section,
                    "data": {"manifest": str(manifests[mode]), "resize": SIZE},
                    "sweep": {"batch_size": 16, "device": "cpu", "seed": args.seed},
                    "run": {"out_dir": str(folder / f"run-{mode}"), "resume": False},
                }

            result["models"][name] = audit_modes(config_for, folder, MODES[args.masks])
    print()
    rows = {f"{name}, {mode}": run for name, runs in result["models"].items() for mode, run in runs.items()}
    print(health_table(f"broken models on coco128-seg (seed {args.seed})", rows))
    print("\ntarget: model_health broken, no finding above low")
    write_scores(result, out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
