"""`auditor demo`: a planted shortcut the audit must expose, built from scikit-learn's bundled digits.

Each of the 1,797 real 8 x 8 handwritten digits is enlarged onto a larger canvas at a varying position, with its
strokes as its mask. On most images of one class (train and audit split alike) a small bright square sits at a
fixed corner, away from the digit: a watermark-like shortcut. A small CNN trained on this learns the square, and
the audit of the held-out split should show that class's attention on the corner, not on the digit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn

from auditor.config import load_config
from auditor.sources import write_image_folder

log = logging.getLogger("auditor")

CANVAS = 48  # pixels per side of each demo image
DIGIT = 24  # the 8 x 8 digit enlarged to this size
SQUARE = (2, 2, 7, 7)  # the planted square: x0, y0, x1, y1 in pixels (top-left corner)
BIASED_CLASS = 8  # a class whose digit is easily confused, so the model leans on the square
BIASED_SHARE = 0.95  # share of the biased class's images that carry the square
MEAN, STD = 0.1, 0.3
STROKE_DILATION = 2  # the mask is the stroke grown by this many pixels: the digit, not only its ink


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    grown = torch.from_numpy(mask).float()[None, None]
    return (F.max_pool2d(grown, 2 * pixels + 1, stride=1, padding=pixels)[0, 0] > 0).numpy()


class DemoNet(nn.Module):
    """Three conv blocks, global average pooling and a linear head (so CAM applies exactly too); `extra_convs`
    more 64-channel conv layers at the end (the planted-bias benchmarks' model has one); `in_channels` 1 (gray)
    or 3 (RGB)."""

    def __init__(self, num_classes: int = 10, extra_convs: int = 0, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            *(layer for _ in range(extra_convs) for layer in (nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())),
        )  # fmt: skip
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def make_decoy_digits(seed: int = 0) -> dict[str, np.ndarray]:
    """Images uint8 [N, CANVAS, CANVAS], stroke masks bool, labels, and whether the square was planted."""
    from sklearn.datasets import load_digits  # noqa: PLC0415 - ships with scikit-learn, no download

    digits = load_digits()
    rng = np.random.default_rng(seed)
    count = len(digits.target)
    images = np.zeros((count, CANVAS, CANVAS), dtype=np.uint8)
    masks = np.zeros((count, CANVAS, CANVAS), dtype=bool)
    planted = np.zeros(count, dtype=bool)
    low = SQUARE[3] + 3  # keep every digit clear of the square
    for i, (small, label) in enumerate(zip(digits.images, digits.target)):
        big = np.asarray(Image.fromarray((small / 16.0 * 255).astype(np.uint8)).resize((DIGIT, DIGIT), Image.BILINEAR))
        y, x = rng.integers(low, CANVAS - DIGIT + 1, size=2)
        images[i, y: y + DIGIT, x: x + DIGIT] = big
        masks[i, y: y + DIGIT, x: x + DIGIT] = _dilate(big > 64, STROKE_DILATION)
        if label == BIASED_CLASS and rng.random() < BIASED_SHARE:
            x0, y0, x1, y1 = SQUARE
            images[i, y0:y1, x0:x1] = 255
            planted[i] = True
    noise = rng.integers(0, 24, size=images.shape, dtype=np.uint8)
    images = np.maximum(images, noise)
    return {"images": images, "masks": masks, "labels": digits.target.astype(np.int64), "planted": planted}


def split(labels: np.ndarray, audit_share: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train / audit indices."""
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    indices = np.arange(len(labels))
    train, audit = train_test_split(indices, test_size=audit_share, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(audit)


def model_input(images: np.ndarray, mean: float | Sequence[float], std: float | Sequence[float]) -> torch.Tensor:
    """uint8 images as the model's normalised float input [N, C, H, W]: [N, H, W] is one channel (gray), [N, H, W, C]
    has C (RGB: 3); `mean` and `std` are one value or one per channel."""
    x = torch.from_numpy(images).float()
    if images.ndim == 3:
        return (x[:, None] / 255.0 - mean) / std
    channels = x.shape[-1]
    x = x.permute(0, 3, 1, 2).contiguous()
    per_channel = [torch.tensor(v, dtype=torch.float32).expand(channels).reshape(1, channels, 1, 1)
                   for v in (mean, std)]
    return (x / 255.0 - per_channel[0]) / per_channel[1]


def train_classifier(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, epochs: int, seed: int,
                     lr: float, batch_size: int, mean: float | Sequence[float],
                     std: float | Sequence[float]) -> nn.Module:
    """Adam on the CPU with the data in memory, for the demo's and the benchmarks' small planted-bias CNNs.

    images: uint8 [N, H, W] (gray) or [N, H, W, C] (colour, for a model built with `in_channels` C), normalised by
    `model_input`. The caller seeds torch before building the model, so a seed gives the same weights and the same
    training.
    """
    x = model_input(images, mean, std)
    y = torch.from_numpy(labels)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        total, right = 0.0, 0
        for start in range(0, len(x), batch_size):
            batch = order[start: start + batch_size]
            optimiser.zero_grad()
            logits = model(x[batch])
            loss = F.cross_entropy(logits, y[batch])
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
            right += int((logits.argmax(1) == y[batch]).sum())
        log.info("training epoch %d/%d: loss %.4f, training accuracy %.3f", epoch + 1, epochs, total / len(x),
                 right / len(x))
    # Batch-norm running statistics lag behind Adam's last steps: on a small ResNet they alone dropped eval-mode
    # accuracy from 0.88 to 0.53. One pass over the training images recomputes them exactly (no-op without BN).
    torch.optim.swa_utils.update_bn(x.split(batch_size), model)
    model.eval()
    with torch.no_grad():
        right = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(512), y.split(512)))
    log.info("trained: training accuracy in eval mode %.3f", right / len(x))
    return model


def train_demo_model(images: np.ndarray, labels: np.ndarray, epochs: int = 30, seed: int = 0) -> DemoNet:
    """The demo's CNN: a few seconds per epoch for ~1,250 images."""
    torch.manual_seed(seed)
    return train_classifier(DemoNet(10), images, labels, epochs=epochs, seed=seed, lr=3e-3, batch_size=64,
                            mean=MEAN, std=STD)


def run_demo(out: Path, seed: int = 0, class_names: list[str] | None = None) -> Path:
    """Build the data, train the model, audit the held-out split; returns the run directory.

    `class_names` renames the digit classes (the report must show any name as text, whatever it contains).
    """
    names = class_names or [str(c) for c in range(10)]
    from auditor.pipeline import run_audit  # noqa: PLC0415

    started = time.perf_counter()
    out = Path(out)
    data = make_decoy_digits(seed)
    train, audit = split(data["labels"], seed=seed)
    model = train_demo_model(data["images"][train], data["labels"][train], seed=seed)
    log.info("demo model trained in %.1f s", time.perf_counter() - started)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    write_image_folder(out / "data", out / "masks", data["images"][audit], data["masks"][audit],
                       data["labels"][audit], names, [f"digit-{i:04d}" for i in audit])
    config = {
        "model": {"factory": "auditor.demo:DemoNet", "checkpoint": str(out / "model.pt"),
                  "classes": names},
        "data": {"root": str(out / "data"), "masks": str(out / "masks"), "grayscale": True,
                 "mean": [MEAN], "std": [STD]},
        "sweep": {"batch_size": 64, "device": "cpu"},
        "run": {"out_dir": str(out / "run")},
    }
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return run_audit(load_config(out / "config.yaml"))
