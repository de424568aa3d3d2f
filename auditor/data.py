"""Datasets: ImageFolder trees, CSV/Parquet manifests and mask folders, as one list of samples.

Every source is first turned into `Sample` records (id, path, label, optional mask file or box), so the
loading, the preprocessing and the fault handling below are written once. Masks and boxes go through the same
geometric transforms as their image (torchvision's v2 transforms resize a `Mask` with nearest neighbours).
A file that cannot be decoded does not stop the run: the collate function drops it and reports its reason.

Orientation: an image is shown upright (its EXIF orientation applied). A mask or box is taken to be in the image's
*stored* pixel grid (what a program reading the pixels without EXIF sees, and what most mask pipelines write), so it
is turned with the image. Two exceptions: a mask file with its own orientation tag is turned by that tag, and a
mask that is portrait where the stored image is landscape (or the reverse) was drawn on the upright image and is
used as it is. Mask values: any nonzero value is the object, so 0/1, 0/255 and label-index masks all work.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import ExifTags, Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from auditor.config import IMAGENET_MEAN, IMAGENET_STD, DataConfig
from auditor.errors import AuditorError, first_line, os_error_text

log = logging.getLogger("auditor")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".gif", ".pgm")


@dataclass(frozen=True)
class Sample:
    id: str  # the path relative to the data root, or the manifest's id
    path: str  # absolute path of the image
    label: int  # index into the class names
    mask: str | None = None  # absolute path of a mask image (nonzero = object)
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 in pixels of the image as stored
    skip: str = ""  # why the scan could not take this input ("<kind>: <detail>"): it goes to skipped.csv unread


def read_class_names(cfg_classes: list[str] | None, classes_file: str | None) -> list[str] | None:
    """Class names given explicitly, in logit order; None when the data must name them."""
    if cfg_classes:
        names, where = list(cfg_classes), "model.classes"
    elif classes_file:
        path = Path(classes_file)
        if not path.is_file():
            raise AuditorError(f"model.classes_file {path} does not exist.")
        try:  # utf-8-sig: a byte-order mark is not part of the first name; splitlines takes CRLF too
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as err:
            raise AuditorError(f"model.classes_file {path} is not UTF-8 text ({err.reason} at byte {err.start}): "
                               "save it as UTF-8, one class name per line.") from None
        names, where = [line.strip() for line in text.splitlines() if line.strip()], str(path)
        if not names:
            raise AuditorError(f"model.classes_file {path} holds no class names. Write the model's class names in "
                               "logit order, one per line, or leave model.classes_file unset to take the folder names.")
    else:
        return None
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise AuditorError(f"{where} names the classes {repeated} more than once: give each logit its own name.")
    return names


def build_samples(cfg: DataConfig, classes: list[str] | None) -> tuple[list[Sample], list[str]]:
    """Find every sample the config points at; returns them sorted by id, and the class names."""
    if bool(cfg.root) == bool(cfg.manifest):
        raise AuditorError("Set exactly one of data.root (an ImageFolder tree) or data.manifest (CSV or Parquet).")
    if cfg.root:
        samples, classes = _scan_image_folder(Path(cfg.root), classes, cfg.follow_external_symlinks)
        data_root = Path(cfg.root)
    else:
        samples, classes = _read_manifest(Path(cfg.manifest), classes)
        data_root = Path(cfg.manifest).parent
    if cfg.masks:
        samples = _attach_mask_folder(samples, Path(cfg.masks), data_root)
        if samples and not any(s.mask for s in samples):
            log.warning("no mask in data.masks %s mirrors an image's path (masks/<class>/<stem>.png)", cfg.masks)
    samples.sort(key=lambda s: s.id)
    if cfg.limit is not None:
        samples = samples[: cfg.limit]
    if all(s.skip for s in samples):
        where = cfg.root or cfg.manifest
        layout = "root/<class>/<image>, one folder per class" if cfg.root else "rows of path,label"
        skipped = f"; {_skip_counts(samples)}, e.g. {samples[0].id}: {samples[0].skip}" if samples else ""
        raise AuditorError(
            f"No images found in {where}{skipped}. Check the path, the layout ({layout}) and that images use one "
            f"of {', '.join(IMAGE_EXTENSIONS)}."
        )
    return samples, classes


def _scan_image_folder(root: Path, classes: list[str] | None,
                       follow_external: bool = False) -> tuple[list[Sample], list[str]]:
    """Every image under root/<class>/, and every input the scan cannot take as a Sample with its `skip` reason:
    nothing under the root is dropped without a word."""
    if not root.is_dir():
        raise AuditorError(f"data.root {root} is not a folder. Point it at a tree root/<class>/<image>.")
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    folders = [e.name for e in entries if _is_text(e.name) and _is_folder(e)]
    if classes is None:
        classes = folders
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise AuditorError(
            f"Folders {unknown} in {root} are labels the model does not know (its classes: {classes}). "
            "Fix model.classes / model.classes_file or remove those folders."
        )
    index = {name: i for i, name in enumerate(classes)}
    real_root = root.resolve()
    found, ignored = [], []
    for entry in entries:  # what lies beside the class folders
        if entry.name in folders:
            found += [(rel, path, skip, index[entry.name])
                      for rel, path, skip in _walk(root / entry.name, entry.name, real_root, follow_external)]
        elif _is_folder(entry):
            found.append((_shown(entry.name), _shown(entry.path),
                          "folder name not UTF-8: rename it to audit its images", -1))  # -1: no class, never read
        elif Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
            found.append((_shown(entry.name), _shown(entry.path),
                          "outside any class folder: an image needs root/<class>/<image>", -1))
    samples = []
    for rel, path, skip, label in found:
        if skip or Path(rel).suffix.lower() in IMAGE_EXTENSIONS:
            samples.append(Sample(id=rel, path=path, label=label, skip=skip))
        elif not Path(rel).name.startswith("."):
            ignored.append(rel)
    if ignored:
        log.warning("ignored %d file(s) without an image extension in %s, e.g. %s", len(ignored), root, ignored[:3])
    if any(s.skip for s in samples):
        log.warning("%s in %s: each is listed in skipped.csv", _skip_counts(samples), root)
    return samples, classes


def _walk(folder: Path, rel: str, real_root: Path, follow_external: bool, seen: frozenset = frozenset()):
    """(id, path, skip reason) of every file under `folder` ("" reasons for files the scan takes, or ignores as not
    images). Symlinks are resolved: a dangling one, a loop and (unless `follow_external`) one out of the data root
    are skipped with the reason; a symlinked folder inside the root is not walked twice. A name that is not UTF-8
    is skipped, shown with \\x escapes: every file written later (CSV, Parquet, JSON, HTML) must hold the id."""
    shown = _shown(str(folder.absolute()))
    if folder.is_symlink():
        target, skip = _link_target(folder, real_root, follow_external)
        if skip or target in seen:
            yield rel, shown, skip or "symlink loop: the folder contains itself"
            return
        if real_root == target or real_root in target.parents:
            yield rel, shown, "symlink to a folder inside the data root: not followed (its images are audited there)"
            return
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        yield rel, shown, f"unreadable folder: {os_error_text(err)}"
        return
    seen = seen | {folder.resolve()}
    for entry in entries:
        name, path = f"{rel}/{entry.name}", Path(entry.path)
        if entry.is_dir(follow_symlinks=False) or path.is_symlink() and _is_folder(entry):
            if _is_text(entry.name):
                yield from _walk(path, name, real_root, follow_external, seen)
            else:
                yield _shown(name), _shown(entry.path), "folder name not UTF-8: rename it to audit its images"
        elif Path(entry.name).suffix.lower() not in IMAGE_EXTENSIONS:
            yield _shown(name), "", ""  # not an image: named in a warning
        elif not _is_text(entry.name):
            yield _shown(name), _shown(entry.path), "file name not UTF-8: rename it to audit it"
        elif path.is_symlink():
            target, skip = _link_target(path, real_root, follow_external)
            yield name, str(path.absolute()) if skip else str(target), skip
        elif entry.is_file(follow_symlinks=False):
            yield name, str(path.resolve()), ""
        else:
            yield name, str(path.absolute()), "not a regular file: a pipe, socket or device is never read"


def _link_target(link: Path, real_root: Path, follow_external: bool) -> tuple[Path | None, str]:
    """Where a symlink leads, or why it is not followed."""
    try:
        target = link.resolve(strict=True)
    except FileNotFoundError:
        return None, "broken symlink: its target does not exist"
    except (RuntimeError, OSError):  # RuntimeError before Python 3.13, OSError (ELOOP) after
        return None, "symlink loop: its chain of links never ends"
    if not follow_external and real_root != target and real_root not in target.parents:
        return target, ("symlink outside the data root: not followed (set data.follow_external_symlinks: true "
                        "to audit it)")
    return target, ""


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop
        return False


def _is_text(name: str) -> bool:
    """Whether a file name decoded from the disk is valid UTF-8 (os.fsdecode escapes invalid bytes as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(name: str) -> str:
    """A file name with any byte that is not UTF-8 shown as \\xNN: writable anywhere, and still recognisable."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _skip_counts(samples: list[Sample]) -> str:
    counts = Counter(s.skip.split(":")[0] for s in samples if s.skip)
    return f"{sum(counts.values())} input(s) skipped (" + ", ".join(f"{kind}: {n}" for kind, n in counts.items()) + ")"


def _read_manifest(path: Path, classes: list[str] | None) -> tuple[list[Sample], list[str]]:
    if not path.is_file():
        raise AuditorError(f"data.manifest {path} does not exist.")
    try:
        table = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path, dtype={"id": str})
    except Exception as err:  # noqa: BLE001 - pandas and pyarrow raise many types for a malformed file
        raise AuditorError(
            f"Manifest {path} cannot be read as {'Parquet' if path.suffix.lower() == '.parquet' else 'CSV'}: "
            f"{first_line(err)}. Fix the file or its extension."
        ) from None
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise AuditorError(f"Manifest {path} lacks the column(s) {sorted(missing)}; it needs path,label.")
    blank = table["path"].isna() | table["label"].isna()
    if blank.any():
        raise AuditorError(
            f"Manifest {path} has {int(blank.sum())} row(s) without a path or a label (the first is data row "
            f"{int(blank.to_numpy().argmax()) + 1}): fill them in or remove those rows."
        )
    box_columns = ["x0", "y0", "x1", "y1"]
    has_box = set(box_columns) <= set(table.columns)
    labels = table["label"]
    numeric = pd.api.types.is_integer_dtype(labels)
    if classes is None:
        if numeric:
            raise AuditorError(
                "The manifest's labels are numbers: give the class names in logit order in model.classes or "
                "model.classes_file."
            )
        classes = sorted(labels.astype(str).unique())
    index = {name: i for i, name in enumerate(classes)}
    if numeric:
        bad = sorted({int(v) for v in labels if not 0 <= int(v) < len(classes)})
    else:
        bad = sorted(set(labels.astype(str)) - set(index))
    if bad:
        raise AuditorError(
            f"Manifest {path} has labels the model does not know: {bad[:10]} (its classes: {classes}). Fix those "
            "labels, or model.classes / model.classes_file."
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
    repeated = sorted(sample_id for sample_id, count in Counter(s.id for s in samples).items() if count > 1)
    if repeated:
        raise AuditorError(
            f"Manifest {path} repeats the ids {repeated[:5]}{' ...' if len(repeated) > 5 else ''}: every row needs its "
            "own id (remove duplicate rows, or give an id column)."
        )
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
        attached.append(dataclasses.replace(sample, mask=found.get(rel, sample.mask)))
    return attached


# PIL transposes that show an image stored with EXIF orientation 2..8 upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(opened: Image.Image) -> tuple[Image.Image, int]:
    """An opened file's pixels turned upright by its EXIF orientation, and that orientation (1: as stored)."""
    value = opened.getexif().get(ExifTags.Base.Orientation, 1)
    orientation = value if value in _UPRIGHT else 1
    return (opened.transpose(_UPRIGHT[orientation]) if orientation != 1 else opened.copy()), orientation


def decode_image(path: str, grayscale: bool = False, draft: tuple[int, int] | None = None) -> tuple[Image.Image, int]:
    """Decode any common image upright as RGB (or L): alpha over white, 16-bit rescaled, palettes expanded.

    Also returns the EXIF orientation it applied (1: none), so the sample's mask can be turned alike. `draft`
    (width, height of the upright image) lets a JPEG decode at the smallest reduced scale that still covers it:
    for thumbnails, never for the model's input.
    """
    with Image.open(path) as opened:
        if draft is not None and opened.format == "JPEG":
            turned = opened.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
            opened.draft("L" if grayscale else "RGB", draft[::-1] if turned else draft)
        opened.load()
        image, orientation = _upright(opened)
    return plain_image(image, grayscale), orientation


def plain_image(image: Image.Image, grayscale: bool = False) -> Image.Image:
    """Any decoded image as RGB (or L): alpha over white, 16-bit rescaled, palettes expanded. Files and the Python
    API's in-memory pixels (auditor.api) go through it alike."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info or image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("L" if grayscale else "RGB")


def load_image(path: str, grayscale: bool = False) -> Image.Image:
    """The image upright as RGB (or L); see decode_image."""
    return decode_image(path, grayscale)[0]


def _mask_pixels(path: str) -> tuple[np.ndarray, bool]:
    """A mask file as bool [h, w] (nonzero = object), and whether its own orientation tag turned it upright."""
    with Image.open(path) as opened:
        mask, orientation = _upright(opened)
    if len(mask.getbands()) == 1:  # grey levels, 0/1 or label indices (a palette mask's indices, not its colours)
        return np.asarray(mask) != 0, orientation != 1
    array = np.asarray(mask.convert("RGBA"))  # colour: any channel nonzero, and opaque where there is alpha
    return (array[..., :3].max(axis=2) != 0) & (array[..., 3] != 0), orientation != 1


def load_mask(sample: Sample, size: tuple[int, int], orientation: int = 1) -> tuple[np.ndarray | None, str]:
    """The object mask as bool [H, W] for the upright image of `size` (W, H), None without one; and a note when
    it had to be resized. `orientation` is the image's EXIF orientation, which a mask in the stored grid follows."""
    turn = _UPRIGHT.get(orientation)
    width, height = size[::-1] if orientation >= 5 else size  # the image as stored
    if sample.mask is not None:
        mask, upright = _mask_pixels(sample.mask)
        flipped_aspect = (mask.shape[1] - mask.shape[0]) * (width - height) < 0
        if upright or orientation >= 5 and flipped_aspect:
            turn = None  # drawn on the upright image
    elif sample.box is not None:
        x0, y0, x1, y1 = sample.box
        mask = np.zeros((height, width), dtype=bool)
        mask[max(0, math.floor(y0)): max(0, math.ceil(y1)), max(0, math.floor(x0)): max(0, math.ceil(x1))] = True
    else:
        return None, ""
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    if turn is not None:
        image = image.transpose(turn)
    note = ""
    if image.size != tuple(size):
        note = f"mask resized: {image.size[0]}x{image.size[1]} to {size[0]}x{size[1]} (nearest)"
        image = image.resize(tuple(size), Image.Resampling.NEAREST)
    return np.asarray(image) != 0, note


def with_model_preprocessing(cfg: DataConfig, model_cfg: dict | None) -> DataConfig:
    """The data config with what it leaves unset taken from the model's own preprocessing, then the defaults.

    `model_cfg` holds any of mean, std, resize, crop, interpolation (from a timm pretrained_cfg or a Hugging Face
    image-processor config). Size is one setting: the model's resize and crop apply only when neither is set.
    """
    model_cfg = model_cfg or {}
    changes = {}
    for key in ("mean", "std", "interpolation"):
        if getattr(cfg, key) is None and model_cfg.get(key) is not None:
            changes[key] = model_cfg[key]
    if cfg.resize is None and cfg.crop is None:
        changes.update({key: model_cfg[key] for key in ("resize", "crop") if model_cfg.get(key) is not None})
    cfg = dataclasses.replace(cfg, **changes) if changes else cfg
    defaults = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    missing = {key: list(value) for key, value in defaults.items() if getattr(cfg, key) is None}
    return dataclasses.replace(cfg, **missing) if missing else cfg


def geometric_transform(cfg: DataConfig) -> v2.Transform:
    """Resize and crop, applied alike to an image and its mask (masks always with nearest neighbours)."""
    steps = []
    if cfg.resize:
        mode = v2.InterpolationMode((cfg.interpolation or "bilinear").lower())
        steps.append(v2.Resize(cfg.resize, interpolation=mode, antialias=True))
    if cfg.crop:
        steps.append(v2.CenterCrop(cfg.crop))
    return v2.Compose(steps) if steps else v2.Identity()


def _resized_size(width: int, height: int, cfg: DataConfig) -> tuple[int, int]:
    """(height, width) after data.resize, as torchvision's Resize computes it."""
    if isinstance(cfg.resize, list):
        return cfg.resize[0], cfg.resize[1]
    if not cfg.resize:
        return height, width
    short, long = sorted((width, height))
    other = int(cfg.resize * long / short)
    return (cfg.resize, other) if height <= width else (other, cfg.resize)


def load_display_image(path: str, cfg: DataConfig, side: int | None = None) -> np.ndarray:
    """The image as the model saw it (same resize and crop), as uint8 [H, W, 3] for thumbnails.

    With `side`, at about that many pixels on its longer side: a JPEG is then decoded at a reduced scale (libjpeg
    scales by 1/2, 1/4 or 1/8 while decoding), so a 96-pixel thumbnail of a 640-pixel photo decodes a sixteenth
    of its pixels, and resize and crop are scaled alike.
    """
    with Image.open(path) as opened:
        width, height = opened.size
        if opened.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8):
            width, height = height, width
    resized = _resized_size(width, height, cfg)
    shown = max(min(cfg.crop, side) if cfg.crop else side for side in resized)  # the longer side the model saw
    scale = side / shown if side else 1.0
    if scale >= 1.0:
        image, transform = load_image(path, grayscale=False), geometric_transform(cfg)
    else:
        image = decode_image(path, draft=(math.ceil(width * scale), math.ceil(height * scale)))[0]
        steps = [v2.Resize([max(1, round(resized[0] * scale)), max(1, round(resized[1] * scale))], antialias=True)]
        if cfg.crop:
            steps.append(v2.CenterCrop(max(1, round(cfg.crop * scale))))
        transform = v2.Compose(steps)
    tensor = transform(tv_tensors.Image(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)))
    return tensor.permute(1, 2, 0).numpy()


def positions(samples: list[Sample]) -> dict[str, int]:
    """Sample id -> its index in the list (ids are unique): how findings' sample ids find their images again."""
    return {sample.id: i for i, sample in enumerate(samples)}


class AuditDataset(Dataset):
    """Decodes one sample into model input, object mask and label; a bad file yields its reason instead."""

    def __init__(self, samples: list[Sample], cfg: DataConfig):
        self.samples = samples
        self.cfg = cfg = with_model_preprocessing(cfg, None)  # the defaults where nothing is set
        self.geometry = geometric_transform(cfg)
        channels = 1 if cfg.grayscale else 3  # DataConfig checks there are that many
        self.normalise = v2.Normalize(cfg.mean[:channels], cfg.std[:channels])
        # An image without a mask is worth a note only where masks are expected.
        self.expects_masks = bool(cfg.masks) or any(s.mask is not None or s.box is not None for s in samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        if sample.skip:  # the scan already knows why: the file is never opened
            return {"index": index, "ok": False, "reason": sample.skip}
        try:
            image, orientation = decode_image(sample.path, self.cfg.grayscale)
        except Exception as err:  # noqa: BLE001 - any decoder failure is a per-image fault
            return {"index": index, "ok": False, "reason": file_fault("image", err)}
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
        pixels = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
        image_t = self.model_input(pixels)
        return {"index": index, "ok": True, "image": image_t,
                **self.mask_fields(sample, image.size, orientation, tuple(image_t.shape[-2:]))}

    def model_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [C, H, W] upright pixels (on any device) -> the normalised model input: resize, crop, scale."""
        image = self.geometry(tv_tensors.Image(pixels)).as_subclass(torch.Tensor)
        return self.normalise(image.float() / 255.0)

    def mask_fields(self, sample: Sample, size: tuple[int, int], orientation: int,
                    out_shape: tuple[int, int] | None = None) -> dict:
        """The sample's mask at the model input's size (the image's resize and crop, nearest), its label and note.
        `out_shape`, the model input's (H, W) where known, spares resizing an empty mask for an image without one."""
        try:
            mask, note = load_mask(sample, size, orientation)
        except Exception as err:  # noqa: BLE001 - the image is still audited, without attention metrics
            mask, note = None, file_fault("mask", err)
        return {**self.mask_item(mask, note, size, out_shape), "label": sample.label}

    def mask_item(self, mask: np.ndarray | None, note: str, size: tuple[int, int],
                  out_shape: tuple[int, int] | None = None) -> dict:
        """A mask (bool [H, W] on the upright image of `size` (W, H), or None) at the model input's size, with its
        note: shared by files and the Python API's in-memory masks."""
        if mask is None and not note and self.expects_masks:
            note = "no mask"
        has_mask = mask is not None
        if not has_mask and out_shape is not None:
            mask_t = torch.zeros(out_shape, dtype=torch.bool)
        else:
            pixels = mask if has_mask else np.zeros(size[::-1], dtype=bool)
            mask_t = self.geometry(tv_tensors.Mask(torch.from_numpy(pixels))).as_subclass(torch.Tensor).bool()
        if has_mask and not mask.any():
            note = "empty mask"
        elif has_mask and not mask_t.any():
            note = "empty mask after crop: the object lies outside data.crop"
        # size: the decoded upright image's (width, height), for the size and aspect properties (auditor.properties)
        return {"mask": mask_t, "has_mask": has_mask, "note": note, "size": tuple(int(v) for v in size)}


class EncodedJpegs(Dataset):
    """An AuditDataset whose JPEGs (RGB or grey) come undecoded, for sweep.decode_on_device: the worker reads the
    file's bytes, size and orientation and prepares the mask; `decode_on_device` decodes them in the main process
    on the sweep's device (nvJPEG on CUDA). Any other file decodes as usual."""

    def __init__(self, dataset: AuditDataset):
        self.dataset = dataset
        self.samples = dataset.samples

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        if sample.skip:
            return self.dataset[index]
        try:
            with Image.open(sample.path) as opened:
                if opened.format != "JPEG" or opened.mode not in ("RGB", "L"):
                    return self.dataset[index]
                size, orientation = opened.size, opened.getexif().get(ExifTags.Base.Orientation, 1)
                orientation = orientation if orientation in _UPRIGHT else 1
            data = torch.frombuffer(bytearray(Path(sample.path).read_bytes()), dtype=torch.uint8)
        except Exception:  # noqa: BLE001 - the usual path reports the fault
            return self.dataset[index]
        upright = size[::-1] if orientation >= 5 else size
        return {"index": index, "ok": True, "image": None, "jpeg": data, "orientation": orientation,
                **self.dataset.mask_fields(sample, upright, orientation)}


def _turn_upright(pixels: torch.Tensor, orientation: int) -> torch.Tensor:
    """[C, H, W] as stored -> upright by the EXIF orientation: the torch equivalents of _UPRIGHT's transposes."""
    if orientation in (5, 6, 7, 8):
        pixels = pixels.transpose(-2, -1)  # TRANSPOSE; then flips finish the others
        flips = {5: (), 6: (-1,), 7: (-2, -1), 8: (-2,)}[orientation]
    else:
        flips = {1: (), 2: (-1,), 3: (-2, -1), 4: (-2,)}[orientation]
    return pixels.flip(flips) if flips else pixels


def decode_on_device(batch: dict, dataset: AuditDataset, device: torch.device) -> dict:
    """Fill in the images EncodedJpegs left encoded: decoded on `device` in one call (batched nvJPEG on CUDA),
    turned upright, resized, cropped and normalised as on the CPU. An image the device cannot decode goes
    through the CPU path, and is skipped with its reason when that fails too."""
    if not isinstance(batch["image"], list):
        return batch
    from torchvision.io import ImageReadMode, decode_jpeg  # noqa: PLC0415

    mode = ImageReadMode.GRAY if dataset.cfg.grayscale else ImageReadMode.RGB
    images = list(batch["image"])
    encoded = [i for i, image in enumerate(images) if image is None]
    try:
        decoded = decode_jpeg([batch["jpeg"][i] for i in encoded], mode=mode, device=device)
    except RuntimeError:  # one bad file fails the whole call: decode one by one
        decoded = []
        for i in encoded:
            try:
                decoded.append(decode_jpeg(batch["jpeg"][i], mode=mode, device=device))
            except RuntimeError:
                decoded.append(None)
    failed = list(batch["failed"])
    for i, pixels in zip(encoded, decoded):
        if pixels is not None:
            images[i] = dataset.model_input(_turn_upright(pixels, batch["orientation"][i]))
            continue
        item = dataset[int(batch["index"][i])]
        if item["ok"]:
            images[i] = item["image"]
        else:
            failed.append((item["index"], item["reason"]))
    keep = [i for i, image in enumerate(images) if image is not None]
    shapes = {tuple(images[i].shape) for i in keep}
    if len(shapes) > 1:
        raise AuditorError(
            f"Images of different sizes in one batch ({sorted(shapes)[:3]}): set data.resize and data.crop "
            "so that every image reaches the model at one size."
        )
    out = {key: batch[key][keep] for key in ("mask", "has_mask", "label", "index", "size") if key in batch}
    out["note"] = [batch["note"][i] for i in keep]
    out["image"] = torch.stack([images[i].to(device) for i in keep]) if keep else torch.empty(0, device=device)
    out["failed"] = failed
    return out


def file_fault(what: str, err: Exception) -> str:
    """Why an image (or mask) file could not be used, as "<kind>: <error>"; the summary counts each kind."""
    if isinstance(err, FileNotFoundError):
        kind = f"missing {what}"
    elif isinstance(err, UnidentifiedImageError):
        kind = f"{what} of unknown format"
    elif "truncated" in str(err).lower():
        kind = f"truncated {what}"
    else:
        kind = f"unreadable {what}"
    return f"{kind}: {first_line(err)}"


def collate(items: list[dict]) -> dict:
    """Stack the decodable samples; list the others with their reasons under "failed"."""
    good = [item for item in items if item["ok"]]
    failed = [(item["index"], item["reason"]) for item in items if not item["ok"]]
    if any(item["image"] is None for item in good):  # EncodedJpegs: decode_on_device stacks them
        return {
            "image": [item["image"] for item in good], "jpeg": [item.get("jpeg") for item in good],
            "orientation": [item.get("orientation", 1) for item in good],
            **{key: value for key, value in collate([{**item, "image": torch.empty(0)} for item in good]).items()
               if key != "image"},
            "failed": failed,
        }
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
        "size": torch.tensor([item.get("size", (0, 0)) for item in good], dtype=torch.long).reshape(-1, 2),
        "note": [item["note"] for item in good],
        "failed": failed,
    }
