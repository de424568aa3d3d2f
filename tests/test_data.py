"""Data sources: CSV and Parquet manifests (ids, numeric labels, boxes, mask columns), ImageFolder with a mask folder,
and masks and boxes following the image through resize and crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from auditor.config import DataConfig
from auditor.data import AuditDataset, build_samples, read_class_names
from auditor.errors import AuditorError


def _image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 100, np.uint8)).save(path)


def _write(table: pd.DataFrame, path: Path) -> None:
    table.to_parquet(path, index=False) if path.suffix == ".parquet" else table.to_csv(path, index=False)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_box_follows_resize_and_crop(tmp_path, suffix):
    # A 100 x 50 (W x H) image, box x 20..60, y 10..30. Resize the shorter side to 25: 50 x 25, box x 10..30,
    # y 5..15. Centre crop 20: left (50 - 20) / 2 = 15, top round((25 - 20) / 2) = 2, so x 0..15, y 3..13.
    _image(tmp_path / "images" / "a.png", 100, 50)
    table = pd.DataFrame({"path": ["images/a.png"], "label": ["cat"], "x0": [20.0], "y0": [10.0], "x1": [60.0],
                          "y1": [30.0]})
    _write(table, tmp_path / f"manifest{suffix}")
    cfg = DataConfig(manifest=str(tmp_path / f"manifest{suffix}"), resize=25, crop=20)
    samples, classes = build_samples(cfg, None)
    assert classes == ["cat"] and samples[0].box == (20.0, 10.0, 60.0, 30.0)
    item = AuditDataset(samples, cfg)[0]
    assert item["ok"] and item["has_mask"] and item["note"] == ""
    assert item["image"].shape == (3, 20, 20)
    expected = np.zeros((20, 20), bool)
    expected[3:13, 0:15] = True
    np.testing.assert_array_equal(item["mask"].numpy(), expected)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_manifest_ids_numeric_labels_and_mask_column(tmp_path, suffix):
    for name in ("a", "b", "c"):
        _image(tmp_path / "images" / f"{name}.png", 8, 8)
    mask = np.zeros((8, 8), np.uint8)
    mask[:2] = 1
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    table = pd.DataFrame({
        "id": ["003", "001", "002"],
        "path": ["images/a.png", "images/b.png", "images/c.png"],
        "label": [1, 0, 1],
        "mask": ["masks/a.png", None, None],
    })
    _write(table, tmp_path / f"manifest{suffix}")
    cfg = DataConfig(manifest=str(tmp_path / f"manifest{suffix}"))
    samples, classes = build_samples(cfg, ["cat", "dog"])
    assert classes == ["cat", "dog"]
    assert [(s.id, s.label) for s in samples] == [("001", 0), ("002", 1), ("003", 1)]  # sorted by id, kept as text
    assert samples[2].path == str((tmp_path / "images" / "a.png").resolve())
    assert samples[2].mask == str((tmp_path / "masks" / "a.png").resolve())
    dataset = AuditDataset(samples, cfg)
    assert dataset[2]["mask"].sum() == 16 and dataset[2]["has_mask"]
    assert not dataset[0]["has_mask"] and dataset[0]["note"] == "no mask"  # other rows have masks


def test_numeric_labels_need_class_names_in_range(tmp_path):
    _image(tmp_path / "a.png", 4, 4)
    (tmp_path / "m.csv").write_text("path,label\na.png,0\na.png,5\n")
    cfg = DataConfig(manifest=str(tmp_path / "m.csv"))
    with pytest.raises(AuditorError, match="model.classes"):
        build_samples(cfg, None)
    with pytest.raises(AuditorError, match=r"labels the model does not know: \[5\]"):
        build_samples(cfg, ["cat", "dog"])


def test_mask_folder_mirrors_image_folder_with_any_extension(tmp_path):
    data, masks = tmp_path / "data", tmp_path / "masks"
    _image(data / "cat" / "0.jpg", 6, 4)
    _image(data / "cat" / "sub" / "1.png", 6, 4)
    _image(data / "dog" / "2.png", 6, 4)
    for rel in ("cat/0.png", "cat/sub/1.bmp"):
        (masks / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 6), 255, np.uint8)).save(masks / rel)
    cfg = DataConfig(root=str(data), masks=str(masks))
    samples, classes = build_samples(cfg, None)
    assert classes == ["cat", "dog"]
    assert {s.id: s.mask for s in samples} == {
        "cat/0.jpg": str((masks / "cat" / "0.png").resolve()),
        "cat/sub/1.png": str((masks / "cat" / "sub" / "1.bmp").resolve()),
        "dog/2.png": None,
    }
    notes = [AuditDataset(samples, cfg)[i]["note"] for i in range(3)]
    assert notes == ["", "", "no mask"]


def test_mask_folder_with_a_manifest_mirrors_paths_relative_to_the_manifest(tmp_path):
    _image(tmp_path / "set" / "images" / "a.png", 4, 4)
    mask_path = tmp_path / "masks" / "images" / "a.png"
    mask_path.parent.mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(mask_path)
    (tmp_path / "set" / "m.csv").write_text("path,label\nimages/a.png,cat\n")
    cfg = DataConfig(manifest=str(tmp_path / "set" / "m.csv"), masks=str(tmp_path / "masks"))
    samples, _ = build_samples(cfg, None)
    assert samples[0].mask == str(mask_path.resolve())


@pytest.mark.parametrize("content, message", [
    ("path\na.png\n", r"lacks the column\(s\) \['label'\]"),
    ("path,label\n", "No images found"),
    ("path,label\na.png,cat\nb.png,\n", r"1 row\(s\) without a path or a label \(the first is data row 2\)"),
    ('path,label\n"a.png,cat\n', "cannot be read as CSV"),
])
def test_bad_manifests_name_the_problem(tmp_path, content, message):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(AuditorError, match=message):
        build_samples(DataConfig(manifest=str(tmp_path / "m.csv")), None)


def test_parquet_that_is_not_parquet(tmp_path):
    (tmp_path / "m.parquet").write_text("path,label\na.png,cat\n")
    with pytest.raises(AuditorError, match="cannot be read as Parquet"):
        build_samples(DataConfig(manifest=str(tmp_path / "m.parquet")), None)


def test_exactly_one_source_and_limit(tmp_path):
    with pytest.raises(AuditorError, match="exactly one"):
        build_samples(DataConfig(), None)
    for i in range(5):
        _image(tmp_path / "data" / "cat" / f"{i}.png", 4, 4)
    samples, _ = build_samples(DataConfig(root=str(tmp_path / "data"), limit=2), None)
    assert [s.id for s in samples] == ["cat/0.png", "cat/1.png"]


def test_class_names_from_config_or_file(tmp_path):
    (tmp_path / "classes.txt").write_text("cat\n\ndog\n")
    assert read_class_names(None, str(tmp_path / "classes.txt")) == ["cat", "dog"]
    assert read_class_names(["b", "a"], str(tmp_path / "classes.txt")) == ["b", "a"]
    assert read_class_names(None, None) is None
    with pytest.raises(AuditorError, match=r"names the classes \['cat'\] more than once"):
        read_class_names(["cat", "dog", "cat"], None)
    with pytest.raises(AuditorError, match="does not exist"):
        read_class_names(None, str(tmp_path / "missing.txt"))
