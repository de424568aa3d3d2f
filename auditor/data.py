"""Datasets: ImageFolder trees, CSV/Parquet manifests and mask folders, as one list of samples.

Every source is first turned into `Sample` records (id, path, label, optional mask file or box), so the
loading, the preprocessing and the fault handling below are written once. Masks and boxes go through the same
geometric transforms as their image (torchvision's v2 transforms resize a `Mask` with nearest neighbours).
A file that cannot be decoded does not stop the run: the collate function drops it and reports its reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from auditor.config import DataConfig
from auditor.errors import AuditorError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".gif", ".pgm")


@dataclass(frozen=True)
class Sample:
    id: str  # the path relative to the data root, or the manifest's id
    path: str  # absolute path of the image
    label: int  # index into the class names
    mask: str | None = None  # absolute path of a mask image (nonzero = object)
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 in pixels of the original image


def read_class_names(cfg_classes: list[str] | None, classes_file: str | None) -> list[str] | None:
    """Class names given explicitly, in logit order; None when the data must name them."""
    if cfg_classes:
        return list(cfg_classes)
    if classes_file:
        path = Path(classes_file)
        if not path.is_file():
            raise AuditorError(f"model.classes_file {path} does not exist.")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return None


def build_samples(cfg: DataConfig, classes: list[str] | None) -> tuple[list[Sample], list[str]]:
    """Find every sample the config points at; returns them sorted by id, and the class names."""
    if bool(cfg.root) == bool(cfg.manifest):
        raise AuditorError("Set exactly one of data.root (an ImageFolder tree) or data.manifest (CSV or Parquet).")
    if cfg.root:
        samples, classes = _scan_image_folder(Path(cfg.root), classes)
        data_root = Path(cfg.root)
    else:
        samples, classes = _read_manifest(Path(cfg.manifest), classes)
        data_root = Path(cfg.manifest).parent
    if cfg.masks:
        samples = _attach_mask_folder(samples, Path(cfg.masks), data_root)
    samples.sort(key=lambda s: s.id)
    if cfg.limit is not None:
        samples = samples[: cfg.limit]
    if not samples:
        where = cfg.root or cfg.manifest
        raise AuditorError(f"No images found in {where}. Check the path and that images use one of {IMAGE_EXTENSIONS}.")
    return samples, classes


def _scan_image_folder(root: Path, classes: list[str] | None) -> tuple[list[Sample], list[str]]:
    if not root.is_dir():
        raise AuditorError(f"data.root {root} is not a folder. Point it at a tree root/<class>/<image>.")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if classes is None:
        classes = folders
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise AuditorError(
            f"Folders {unknown} in {root} are labels the model does not know (its classes: {classes}). "
            "Fix model.classes / model.classes_file or remove those folders."
        )
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                rel = path.relative_to(root).as_posix()
                samples.append(Sample(id=rel, path=str(path.resolve()), label=index[folder]))
    return samples, classes


def _read_manifest(path: Path, classes: list[str] | None) -> tuple[list[Sample], list[str]]:
    if not path.is_file():
        raise AuditorError(f"data.manifest {path} does not exist.")
    table = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path, dtype={"id": str})
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise AuditorError(f"Manifest {path} lacks the column(s) {sorted(missing)}; it needs path,label.")
    box_columns = ["x0", "y0", "x1", "y1"]
    has_box = set(box_columns) <= set(table.columns)
    labels = table["label"]
    numeric = pd.api.types.is_integer_dtype(labels)
    if classes is None:
        if numeric:
            raise AuditorError("The manifest's labels are numbers: give the class names in model.classes or model.classes_file.")
        classes = sorted(labels.astype(str).unique())
    index = {name: i for i, name in enumerate(classes)}
    if numeric:
        bad = sorted({int(v) for v in labels if not 0 <= int(v) < len(classes)})
    else:
        bad = sorted(set(labels.astype(str)) - set(index))
    if bad:
        raise AuditorError(
            f"Manifest {path} has labels the model does not know: {bad[:10]}. Its classes are {classes}."
        )
    base = path.parent
    samples = []
    for row in table.itertuples(index=False):
        rel = str(row.path)
        image_path = (base / rel).resolve()
        mask = getattr(row, "mask", None) if "mask" in table.columns else None
        mask_path = str((base / str(mask)).resolve()) if isinstance(mask, str) and mask else None
        box = None
        if has_box:
            values = tuple(float(getattr(row, c)) for c in box_columns)
            box = values if all(math.isfinite(v) for v in values) else None
        label = int(row.label) if numeric else index[str(row.label)]
        sample_id = str(row.id) if "id" in table.columns else rel
        samples.append(Sample(id=sample_id, path=str(image_path), label=label, mask=mask_path, box=box))
    return samples, classes


def _attach_mask_folder(samples: list[Sample], masks_root: Path, data_root: Path) -> list[Sample]:
    """A mask folder mirrors the images' relative paths; any mask extension, same stem."""
    if not masks_root.is_dir():
        raise AuditorError(f"data.masks {masks_root} is not a folder.")
    found = {}
    for path in masks_root.rglob("*"):
        if path.is_file() and path.suffix.lower() in MASK_EXTENSIONS:
            found[path.relative_to(masks_root).with_suffix("").as_posix()] = str(path.resolve())
    attached = []
    for sample in samples:
        try:
            rel = Path(sample.path).relative_to(data_root.resolve()).with_suffix("").as_posix()
        except ValueError:
            rel = Path(sample.id).with_suffix("").as_posix()
        attached.append(Sample(sample.id, sample.path, sample.label, found.get(rel, sample.mask), sample.box))
    return attached


def load_image(path: str, grayscale: bool = False) -> Image.Image:
    """Decode any common image as RGB (or L): EXIF rotation applied, alpha over white, 16-bit rescaled."""
    with Image.open(path) as opened:
        opened.load()
        image = ImageOps.exif_transpose(opened)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info or image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("L" if grayscale else "RGB")


def load_mask(sample: Sample, size: tuple[int, int]) -> np.ndarray | None:
    """The object mask as bool [H, W] at the image's size, or None when the sample has none."""
    width, height = size
    if sample.mask is not None:
        with Image.open(sample.mask) as opened:
            mask = ImageOps.exif_transpose(opened)
            array = np.asarray(mask if mask.mode in ("L", "1", "I", "I;16", "P", "F") else mask.convert("L"))
        if array.ndim == 3:
            array = array.max(axis=2)
        if array.shape != (height, width):
            resized = Image.fromarray((array != 0).astype(np.uint8) * 255).resize((width, height), Image.NEAREST)
            array = np.asarray(resized)
        return array != 0  # label-index masks: any nonzero index is the object
    if sample.box is not None:
        x0, y0, x1, y1 = sample.box
        mask = np.zeros((height, width), dtype=bool)
        mask[max(0, int(math.floor(y0))): max(0, int(math.ceil(y1))), max(0, int(math.floor(x0))): max(0, int(math.ceil(x1)))] = True
        return mask
    return None


def geometric_transform(cfg: DataConfig) -> v2.Transform:
    """Resize and crop, applied alike to an image and its mask."""
    steps = []
    if cfg.resize:
        steps.append(v2.Resize(cfg.resize, antialias=True))
    if cfg.crop:
        steps.append(v2.CenterCrop(cfg.crop))
    return v2.Compose(steps) if steps else v2.Identity()


def load_display_image(path: str, cfg: DataConfig) -> np.ndarray:
    """The image as the model saw it (same resize and crop), as uint8 [H, W, 3] for thumbnails."""
    image = load_image(path, grayscale=False)
    tensor = geometric_transform(cfg)(tv_tensors.Image(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)))
    return tensor.permute(1, 2, 0).numpy()


class AuditDataset(Dataset):
    """Decodes one sample into model input, object mask and label; a bad file yields its reason instead."""

    def __init__(self, samples: list[Sample], cfg: DataConfig):
        self.samples = samples
        self.cfg = cfg
        self.geometry = geometric_transform(cfg)
        channels = 1 if cfg.grayscale else 3
        mean, std = cfg.mean[:channels], cfg.std[:channels]
        if len(mean) != channels or len(std) != channels:
            raise AuditorError(f"data.mean and data.std need {channels} values each.")
        self.normalise = v2.Normalize(mean, std)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        try:
            image = load_image(sample.path, self.cfg.grayscale)
        except Exception as err:  # noqa: BLE001 - any decoder failure is a per-image fault
            return {"index": index, "ok": False, "reason": f"unreadable image: {type(err).__name__}: {err}"}
        note = ""
        try:
            mask = load_mask(sample, image.size)
        except Exception as err:  # noqa: BLE001
            mask, note = None, f"unreadable mask: {type(err).__name__}"
        if mask is None and sample.mask is None and self.cfg.masks and not note:
            note = "no mask"
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
        pixels = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
        has_mask = mask is not None
        mask_tensor = torch.from_numpy(mask if has_mask else np.zeros(pixels.shape[1:], dtype=bool))
        image_t, mask_t = self.geometry(tv_tensors.Image(pixels), tv_tensors.Mask(mask_tensor))
        image_t = self.normalise(image_t.as_subclass(torch.Tensor).float() / 255.0)
        return {
            "index": index,
            "ok": True,
            "image": image_t,
            "mask": mask_t.as_subclass(torch.Tensor).bool(),
            "has_mask": has_mask,
            "label": sample.label,
            "note": note,
        }


def collate(items: list[dict]) -> dict:
    """Stack the decodable samples; list the others with their reasons under "failed"."""
    good = [item for item in items if item["ok"]]
    failed = [(item["index"], item["reason"]) for item in items if not item["ok"]]
    if good:
        shapes = {tuple(item["image"].shape) for item in good}
        if len(shapes) > 1:
            raise AuditorError(
                f"Images of different sizes in one batch ({sorted(shapes)[:3]}): set data.resize and data.crop "
                "so that every image reaches the model at one size."
            )
    return {
        "image": torch.stack([item["image"] for item in good]) if good else torch.empty(0),
        "mask": torch.stack([item["mask"] for item in good]) if good else torch.empty(0, dtype=torch.bool),
        "has_mask": torch.tensor([item["has_mask"] for item in good], dtype=torch.bool),
        "label": torch.tensor([item["label"] for item in good], dtype=torch.long),
        "index": torch.tensor([item["index"] for item in good], dtype=torch.long),
        "note": [item["note"] for item in good],
        "failed": failed,
    }
