"""The real LeNet check (issue 11): a trained MNIST classifier audited with and without masks raises no high finding.

../shared/models/lenet-mnist.pt (99 % on the MNIST test digits) is audited on the MNIST test digits
(../shared/data/mnist-t10k), each digit's stroke grown by one pixel as its mask. Nothing is planted, so every
high-severity finding is a false alarm; the target is 0, with masks and without.

    python benchmarks/real_models.py                 # 10,000 digits, both audits, ~1 minute
    python benchmarks/real_models.py --count 2000 --masks no
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bias_detection_mnist import load_mnist, stroke_mask  # noqa: E402
from benchmarks.planted import (  # noqa: E402
    MODES, ROOT, audit_modes, common_arguments, health_table, quiet_logging, write_scores,
)

LENET = ROOT.parent / "shared" / "models" / "lenet-mnist.pt"


class LeNet(nn.Module):
    """The architecture of ../shared/models/lenet-mnist.pt, written from its NOTICE.md (parameter names match)."""

    def __init__(self):
        super().__init__()
        self.conv_1 = nn.Conv2d(1, 6, 5)
        self.conv_2 = nn.Conv2d(6, 16, 5)
        self.fc_1 = nn.Linear(256, 120)
        self.fc_2 = nn.Linear(120, 84)
        self.fc_3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv_1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv_2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc_3(F.relu(self.fc_2(F.relu(self.fc_1(x)))))


def main(argv=None) -> int:
    from auditor.sources import write_image_folder  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser, "reports/real-models")
    parser.add_argument("--count", type=int, default=10_000, help="the first this many test digits")
    args = parser.parse_args(argv)
    quiet_logging()
    if not LENET.is_file():
        sys.exit(f"LeNet not found at {LENET}: this benchmark reads ../shared/models/lenet-mnist.pt.")
    out = args.out or ROOT / "reports" / "real-models"
    images, labels = load_mnist()
    images, labels = images[: args.count], labels[: args.count]
    masks = stroke_mask(images)
    classes = [str(d) for d in range(10)]
    for folder in ("data", "masks"):
        shutil.rmtree(out / folder, ignore_errors=True)
    ids = [f"t10k-{i:05d}" for i in range(len(images))]
    write_image_folder(out / "data", out / "masks", images, masks, labels, classes, ids)

    def config_for(mode: str) -> dict:
        return {
            "model": {"factory": "benchmarks.real_models:LeNet", "checkpoint": str(LENET), "classes": classes},
            "data": {"root": str(out / "data"), **({"masks": str(out / "masks")} if mode == "masks" else {}),
                     "grayscale": True, "mean": [0.0], "std": [1.0]},  # the LeNet's own inputs: pixel / 255
            "sweep": {"batch_size": 500, "device": "cpu", "seed": args.seed},
            "run": {"out_dir": str(out / f"run-{mode}"), "resume": False},
        }

    runs = audit_modes(config_for, out, MODES[args.masks])
    print()
    print(health_table(f"LeNet on {len(images)} MNIST test digits", runs))
    print("\ntarget: 0 high-severity findings (nothing is planted), model_health ok")
    write_scores({"benchmark": "real-lenet", "seed": args.seed, "n_images": len(images), "runs": runs}, out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
