"""Turn public dataset formats into the layouts `auditor audit` reads (ImageFolder + masks, or a manifest).

MNIST-style IDX files (MNIST, Fashion-MNIST) become an ImageFolder with the item's own pixels as its mask;
YOLO-segmentation polygons (coco128-seg) become a manifest with one rasterised mask per image.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from auditor.errors import AuditorError


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX array (optionally gzipped), as used by MNIST and Fashion-MNIST."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise AuditorError(f"{path} is not an unsigned-byte IDX file.")
    shape = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_image_folder(
    root: Path, mask_root: Path | None, images: np.ndarray, masks: np.ndarray | None, labels, class_names, ids
) -> None:
    """Write images (uint8 [N, H, W] or [N, H, W, 3]) as root/<class>/<id>.png, masks mirrored under mask_root."""
    for i, (image, label) in enumerate(zip(images, labels)):
        rel = Path(class_names[int(label)]) / f"{ids[i]}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / rel)
        if mask_root is not None and masks is not None:
            (mask_root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(masks[i].astype(np.uint8) * 255).save(mask_root / rel)


def polygon_mask(polygons: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """Rasterise polygons given in pixel coordinates ([K, 2] each) into one bool [H, W] mask (their union)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        if len(polygon) >= 3:
            draw.polygon([tuple(point) for point in polygon], fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def yolo_seg_manifest(root: str | Path, out_dir: str | Path) -> Path:
    """A manifest for a YOLO-segmentation set (images/, labels/, classes.txt), one label per image.

    The image's label is the class with the largest total polygon area; its mask is the union of that class's
    polygons. Images without any polygon are left out. Returns the manifest's path.
    """
    root, out_dir = Path(root), Path(out_dir)
    names = [line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip()]
    rows = []
    for image_path in sorted((root / "images").glob("*.jpg")):
        label_path = root / "labels" / f"{image_path.stem}.txt"
        if not label_path.is_file():
            continue
        with Image.open(image_path) as image:
            width, height = image.size
        by_class: dict[int, list[np.ndarray]] = {}
        for line in label_path.read_text().splitlines():
            values = line.split()
            if len(values) < 7:
                continue
            points = np.array(values[1:], dtype=np.float64).reshape(-1, 2) * (width, height)
            by_class.setdefault(int(values[0]), []).append(points)
        if not by_class:
            continue
        label = max(by_class, key=lambda c: sum(_polygon_area(p) for p in by_class[c]))
        mask_path = out_dir / "masks" / f"{image_path.stem}.png"
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(polygon_mask(by_class[label], width, height).astype(np.uint8) * 255).save(mask_path)
        rows.append({"id": image_path.stem, "path": str(image_path.resolve()), "label": names[label],
                     "mask": str(mask_path.relative_to(out_dir))})
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    (out_dir / "classes.txt").write_text("\n".join(names) + "\n")
    return manifest
