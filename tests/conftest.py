"""Shared fixtures: a tiny ImageFolder with masks and a tiny model factory, made in a temporary folder."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
import torch
from torch import nn

SHARED = Path(__file__).resolve().parents[2] / "shared"


def tiny_cnn(num_classes: int = 2) -> nn.Module:
    """A model factory the CLI can import as tests.conftest:tiny_cnn; seeded, so every call builds the same model."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )  # fmt: skip


def brightness_cnn(num_classes: int = 2) -> nn.Module:
    """A healthy model for make_image_folder's images (a dog's square is brighter than a cat's): a 1x1 convolution
    into a brightness and a darkness channel, averaged, and a head that calls the brighter images "dog" (both
    classes' maps have something to show). A broken model has every check after the rules skipped, so tests of
    those checks need this one."""
    conv, head = nn.Conv2d(3, 2, 1), nn.Linear(2, num_classes)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0].fill_(1 / 3)  # brightness, shifted positive: normalised pixels are above -3
        conv.weight[1].fill_(-1 / 3)  # darkness: 6 - brightness
        conv.bias.fill_(3.0)
        head.weight.zero_()
        head.bias.zero_()
        midpoint = 2.05  # cat images average about 1.92 brightness, dog images about 2.27
        head.weight[0, 1], head.bias[0] = 20.0, -20.0 * (6 - midpoint)
        head.weight[1, 0], head.bias[1] = 20.0, -20.0 * midpoint
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)


def make_image_folder(root: Path, classes=("cat", "dog"), per_class=6, size=32, seed=0) -> tuple[Path, Path]:
    """root/data/<class>/<i>.png with a bright square object, and root/masks mirroring it."""
    rng = np.random.default_rng(seed)
    data, masks = root / "data", root / "masks"
    for c, name in enumerate(classes):
        (data / name).mkdir(parents=True, exist_ok=True)
        (masks / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = (rng.random((size, size, 3)) * 60).astype(np.uint8)
            mask = np.zeros((size, size), np.uint8)
            y, x = rng.integers(0, size // 2, size=2)
            image[y: y + size // 2, x: x + size // 2] = 120 + 80 * c
            mask[y: y + size // 2, x: x + size // 2] = 255
            Image.fromarray(image).save(data / name / f"{i}.png")
            Image.fromarray(mask).save(masks / name / f"{i}.png")
    return data, masks


@pytest.fixture
def image_folder(tmp_path) -> tuple[Path, Path]:
    return make_image_folder(tmp_path)


class _Slow(nn.Module):
    """Sleeps in every forward, so a test can kill a sweep part-way."""

    def forward(self, x):
        import time

        time.sleep(0.15)
        return x


def slow_cnn(num_classes: int = 2) -> nn.Module:
    model = tiny_cnn(num_classes)
    return nn.Sequential(_Slow(), *model)


DEMO_HOSTILE_DIGIT = 3
HOSTILE_NAME = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """One `auditor demo` for the whole session, with a hostile class name and --fail-on high.

    The demo's planted shortcut is a high finding, so the command must exit 3.
    """
    from auditor.cli import main
    from auditor.runs import load_run

    out = tmp_path_factory.mktemp("demo")
    code = main(["demo", "--out", str(out), "--fail-on", "high", "--rename", f"{DEMO_HOSTILE_DIGIT}={HOSTILE_NAME}"])
    assert code == 3
    return load_run(out / "run")
