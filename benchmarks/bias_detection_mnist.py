"""A second planted-bias family (issue 11): real MNIST digits, other classes, places and cue kinds than Fashion-MNIST.

The 10,000 MNIST test digits (../shared/data/mnist-t10k) are split into a training and an audit subset; each
digit is scaled to a random size (22-34 px) and placed on a 64 px canvas at a varying position, its stroke grown
by one pixel as the object mask. Four biases are planted at once, each on its own class, the rest left clean:

  watermark    a 6 x 6 checkerboard at the top-right corner on 90 % of the nines
  background   a flat gray tint instead of the dark noisy background on 90 % of the threes
  partial      a 7 x 7 hollow square at the middle of the left edge on half of the twos
  label noise  30 % of the sevens labelled one, in the training and the audit split alike

A small CNN is trained once on the CPU, its use of each cue is checked, and the held-out split is audited twice
through the real pipeline, with masks and without (see benchmarks/planted.py for the scoring).

    python benchmarks/bias_detection_mnist.py --seed 0              # both audits: ~3.5 CPU-minutes
    python benchmarks/bias_detection_mnist.py --seed 1 --masks yes --json reports/mnist-seed-1.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.planted import ROOT, Cue, Family, Flip, main  # noqa: E402

MNIST = ROOT.parent / "shared" / "data" / "mnist-t10k"
CLASSES = [str(d) for d in range(10)]
CANVAS = 64
SIZES = (22, 34)  # a digit is scaled to a random size in this range (pixels per side, inclusive)
MARGIN = 8  # digits stay this far from the border, so the edge and corner patches never cover one
DRAWN = 16  # digit pixels above this replace the background
STROKE = 51  # the mask: pixels above 0.2 of full scale (the data's NOTICE), grown by one pixel
TINT = (36, 52)  # the background cue: a flat gray of a random level in this range


def load_mnist(root: Path = MNIST) -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 test digits uint8 [N, 28, 28] and their labels."""
    from auditor.sources import read_idx  # noqa: PLC0415

    if not root.is_dir():
        sys.exit(f"MNIST digits not found at {root}: this benchmark reads ../shared/data/mnist-t10k.")
    images = read_idx(root / "t10k-images-idx3-ubyte.gz")
    return images, read_idx(root / "t10k-labels-idx1-ubyte.gz").astype(np.int64)


def checkerboard(size: int, cell: int) -> np.ndarray:
    """A bright/dark checkerboard of size x size pixels, cell pixels per square."""
    yy, xx = np.mgrid[0:size, 0:size] // cell
    return np.where((yy + xx) % 2 == 0, 255, 0).astype(np.uint8)


def hollow_square(size: int) -> np.ndarray:
    """A bright one-pixel outline of a size x size square, dark inside."""
    pattern = np.zeros((size, size), dtype=np.uint8)
    pattern[[0, -1], :] = 255
    pattern[:, [0, -1]] = 255
    return pattern


def tint(rng: np.random.Generator, size: int = CANVAS) -> np.ndarray:
    """A flat gray background of a random level."""
    return np.full((size, size), rng.integers(TINT[0], TINT[1] + 1), dtype=np.uint8)


def stroke_mask(digits: np.ndarray) -> np.ndarray:
    """A digit's mask: its stroke (above 0.2 of full scale) grown by one pixel, [H, W] or [N, H, W]."""
    grow = np.ones((3, 3), dtype=bool).reshape((1,) * (digits.ndim - 2) + (3, 3))  # in the image plane only
    return ndimage.binary_dilation(digits > STROKE, structure=grow)


def place_digits(items: np.ndarray, rng: np.random.Generator, size: int):
    """Each digit scaled to a random size and placed at a random position at least MARGIN from the border."""
    n = len(items)
    objects = np.zeros((n, size, size), dtype=np.uint8)
    masks = np.zeros((n, size, size), dtype=bool)
    sides = rng.integers(SIZES[0], SIZES[1] + 1, size=n)
    room = rng.random((2, n))  # where in the free range each digit sits
    for i, side in enumerate(sides):
        y, x = (MARGIN + room[:, i] * (size - side - 2 * MARGIN + 1)).astype(int)
        digit = np.asarray(Image.fromarray(items[i]).resize((side, side), Image.BILINEAR))
        objects[i, y: y + side, x: x + side] = digit
        masks[i, y: y + side, x: x + side] = stroke_mask(digit)
    return objects, objects > DRAWN, masks


FAMILY = Family(
    name="mnist", classes=CLASSES, canvas=CANVAS, mean=0.1, std=0.25,
    cues=(
        Cue("watermark", cls=9, share=0.9, box=(56, 2, 62, 8), pattern=checkerboard(6, 2),
            description="6 x 6 checkerboard, top-right corner"),
        Cue("partial", cls=2, share=0.5, box=(1, 28, 8, 35), pattern=hollow_square(7),
            description="7 x 7 hollow square, middle of the left edge"),
        Cue("background", cls=3, share=0.9, texture=tint, description="flat gray tint"),
    ),
    flip=Flip(src=7, dst=1, share=0.3),
    pool=lambda split: load_mnist(), shared_pool=True,
    place=place_digits, id_prefix="t10k", train_per_class=600, audit_per_class=280, epochs=6,
)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(FAMILY, __doc__))
