"""Measured detection rate (issues 3 and 11): plant known biases into Fashion-MNIST and check the audit finds them.

Fashion-MNIST items are placed on a 64 px canvas at varying positions, their own pixels (above a small threshold)
as the object mask. Four biases are planted at once, each on its own class, the rest left clean:

  watermark    a 5 x 5 bright square at the bottom-right corner on 90 % of coats
  background   a striped gray background instead of the dark one on 90 % of sandals
  partial      a 5 x 5 bright square at the top-left corner on half of the pullovers
  label noise  25 % of trousers labelled dress, in the training and the audit split alike

A small CNN is trained once on the CPU, its use of each cue is checked, and the held-out split is audited twice
through the real pipeline, with masks and without (see benchmarks/planted.py for the scoring).

    python benchmarks/bias_detection.py --seed 0                  # both audits: ~7 CPU-minutes (train ~5)
    python benchmarks/bias_detection.py --seed 1 --masks no --json reports/fashion-seed-1.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.planted import BenchNet, Cue, Family, Flip, main, square  # noqa: E402, F401 - BenchNet: old configs

FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
CANVAS = 64  # pixels per side of each benchmark image
ITEM = 28  # the Fashion-MNIST item, unscaled
MARGIN = 8  # items stay this far from the border, so the corner patches never cover an object
MASK_THRESHOLD = 16  # item pixels above this are the object
STRIPES = {"low": 20, "high": 60, "period": 6}  # diagonal stripes of gray 20..60


def load_fashion(split: str, root: Path = FASHION) -> tuple[np.ndarray, np.ndarray]:
    """Items uint8 [N, 28, 28] and labels of Fashion-MNIST's 'train' or 't10k' split."""
    from auditor.sources import read_idx  # noqa: PLC0415

    prefix = root / split
    return read_idx(f"{prefix}-images-idx3-ubyte.gz"), read_idx(f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)


def stripes(rng: np.random.Generator, size: int = CANVAS) -> np.ndarray:
    """A diagonal gray stripe texture with a random phase, uint8 [size, size]."""
    yy, xx = np.mgrid[0:size, 0:size]
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * (xx + yy) / STRIPES["period"] + rng.uniform(0, 2 * np.pi))
    return (STRIPES["low"] + (STRIPES["high"] - STRIPES["low"]) * wave).astype(np.uint8)


def place_items(items: np.ndarray, rng: np.random.Generator, size: int):
    """Each 28 x 28 item unscaled at a random place at least MARGIN from the border; its bright pixels are both what
    it draws and its mask (its dark gaps let the background show through, as in a photo)."""
    n = len(items)
    objects = np.zeros((n, size, size), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=bool)
    ys, xs = rng.integers(MARGIN, size - ITEM - MARGIN + 1, size=(2, n))
    for i, (y, x) in enumerate(zip(ys, xs)):
        inside = items[i] > MASK_THRESHOLD
        objects[i, y: y + ITEM, x: x + ITEM] = np.where(inside, items[i], 0)
        masks[i, y: y + ITEM, x: x + ITEM] = inside
    return objects, masks, masks


FAMILY = Family(
    name="fashion", classes=CLASSES, canvas=CANVAS, mean=0.1, std=0.25,
    cues=(
        Cue("watermark", cls=4, share=0.9, box=(57, 57, 62, 62), pattern=square(5),
            description="5 x 5 square, bottom-right corner"),
        Cue("partial", cls=2, share=0.5, box=(2, 2, 7, 7), pattern=square(5),
            description="5 x 5 square, top-left corner"),
        Cue("background", cls=5, share=0.9, texture=stripes, description="diagonal gray stripes"),
    ),
    flip=Flip(src=1, dst=3, share=0.25),
    pool=lambda split: load_fashion("train" if split == "train" else "t10k"),
    place=place_items, id_prefix="t10k", train_per_class=1200, audit_per_class=400, epochs=6,
)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(FAMILY, __doc__))
