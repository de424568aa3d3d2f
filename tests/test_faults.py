"""Faults (issue 7): broken inputs are handled or skipped and counted, run-level faults exit 2 naming the fix,
and nothing unsafe happens (pickles, hostile names, hostile ids)."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from markupsafe import escape
from PIL import Image
from torch import nn

from auditor import attention
from auditor.pipeline import check_spatial
from auditor.cams import GradCAM, preserved_model_state
from auditor.cli import main
from auditor.config import DataConfig, ModelConfig, load_config
from auditor.data import AuditDataset, Sample, decode_image, load_mask
from auditor.errors import AuditorError
from auditor.models import load_model
from auditor.runs import load_run
from auditor.sweep import audit_batch
from tests.conftest import make_image_folder, tiny_cnn

SIZE = 32


def _object_image(value: int = 200) -> np.ndarray:
    """A dark 32 x 32 RGB image with a bright 16 x 16 object at its top left (the mask's square)."""
    image = np.full((SIZE, SIZE, 3), 30, np.uint8)
    image[:16, :16] = value
    return image


def _square_mask(fill: int = 255, size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[: size // 2, : size // 2] = fill
    return mask


def _save(image: Image.Image, path: Path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


def _truncated(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


class NanForWhite(nn.Module):
    """tiny_cnn whose scores are NaN for a (nearly) all-white image: non-finite logits and gradients on demand."""

    def __init__(self):
        super().__init__()
        self.net = tiny_cnn()

    def forward(self, x):
        white = x.mean(dim=(1, 2, 3)) > 2.0  # white is about 2.2 to 2.6 after ImageNet normalisation
        return self.net(x) * torch.where(white, float("nan"), 1.0)[:, None]


def make_broken_folder(root: Path) -> tuple[Path, Path]:
    """Eight clean images, then one of every per-image fault; returns (data, masks)."""
    data, masks = make_image_folder(root, per_class=4, size=SIZE)
    # Skipped: nothing in the file can be decoded.
    (data / "cat" / "garbage.png").write_bytes(b"this is not an image")
    (data / "dog" / "empty.jpg").write_bytes(b"")
    (data / "cat" / "truncated.png").write_bytes(_truncated(Image.fromarray(_object_image()), "PNG"))
    (data / "dog" / "truncated.jpg").write_bytes(_truncated(Image.fromarray(_object_image()), "JPEG"))
    (data / "cat" / "readme.txt").write_text("not an image, and not an image's name either: ignored")
    # Converted: unusual modes, each with a good mask.
    rgb = Image.fromarray(_object_image())
    cases = {
        "cat/cmyk.jpg": (rgb.convert("CMYK"), {}),
        "cat/gray16.png": (Image.fromarray(_object_image()[..., 0].astype(np.uint16) * 257), {}),
        "dog/palette.png": (rgb.convert("P"), {"transparency": 0}),
        "dog/rgba.png": (rgb.convert("RGBA"), {}),
        "dog/gray.png": (rgb.convert("L"), {}),
        "cat/white.png": (Image.new("RGB", (SIZE, SIZE), "white"), {}),  # NaN scores under NanForWhite
    }
    exif = Image.Exif()
    exif[274] = 6  # shown rotated 90 degrees clockwise
    cases["cat/rotated.png"] = (rgb, {"exif": exif})
    for rel, (image, kwargs) in cases.items():
        _save(image, data / rel, **kwargs)
        _save(Image.fromarray(_square_mask()), (masks / rel).with_suffix(".png"))
    # Audited, with a mask fault.
    for rel in ("cat/nomask.png", "cat/smallmask.png", "dog/emptymask.png", "dog/labels.png", "dog/badmask.png"):
        _save(rgb, data / rel)
    _save(Image.fromarray(_square_mask(size=SIZE // 2)), masks / "cat" / "smallmask.png")
    _save(Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)), masks / "dog" / "emptymask.png")
    _save(Image.fromarray(_square_mask(fill=3)), masks / "dog" / "labels.png")  # label index 3, not 255
    (masks / "dog" / "badmask.png").write_bytes(b"garbage")
    return data, masks


def test_broken_folder_is_audited_with_every_fault_counted(tmp_path):
    data, masks = make_broken_folder(tmp_path)
    out = tmp_path / "run"
    code = main(["audit", "--data.root", str(data), "--data.masks", str(masks), "--model.factory",
                 "tests.test_faults:NanForWhite", "--out", str(out), "--sweep.batch_size", "4"])
    assert code == 0
    run = load_run(out)
    summary = run.summary
    assert (summary["n_images"], summary["n_audited"], summary["n_skipped"]) == (8 + 4 + 12, 8 + 12, 4)
    assert summary["skipped_reasons"] == {"image of unknown format": 2, "truncated image": 2}
    assert summary["notes"] == {"no mask": 1, "mask resized": 1, "empty mask": 1, "mask of unknown format": 1}
    assert summary["n_non_finite_scores"] == 1
    skipped = pd.read_csv(out / "skipped.csv")
    assert sorted(skipped["id"]) == ["cat/garbage.png", "cat/truncated.png", "dog/empty.jpg", "dog/truncated.jpg"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert all(escape(reason) in page for reason in skipped["reason"])

    records = run.records.set_index("id")
    assert "cat/readme.txt" not in records.index
    # Converted modes, the rotated image and the resized and label-index masks: the object square is found.
    for rel in ("cat/cmyk.jpg", "cat/gray16.png", "dog/palette.png", "dog/rgba.png", "dog/gray.png",
                "cat/rotated.png", "cat/smallmask.png", "dog/labels.png"):
        assert records.loc[rel, "has_mask"] and records.loc[rel, "mask_area"] == 0.25, rel
        assert 0 <= records.loc[rel, "pred_energy_in_mask"] <= 1, rel
    # No usable mask: audited without attention metrics.
    for rel in ("cat/nomask.png", "dog/badmask.png"):
        assert not records.loc[rel, "has_mask"] and math.isnan(records.loc[rel, "pred_energy_in_mask"])
    empty = records.loc["dog/emptymask.png"]
    assert empty["has_mask"] and empty["mask_area"] == 0 and math.isnan(empty["pred_iou"])
    # NaN scores: NaN metrics, no prediction counted as correct.
    white = records.loc["cat/white.png"]
    assert math.isnan(white["p_pred"]) and math.isnan(white["loss"]) and not white["correct"]
    assert math.isnan(white["pred_energy_in_mask"]) and math.isnan(white["true_pointing_hit"])
    assert summary["accuracy"] == pytest.approx(records["correct"].mean())
    finite = records.drop(index="cat/white.png")
    assert finite["p_pred"].notna().all() and finite["loss"].notna().all()


# -- per-image decoding, exact --------------------------------------------------------------------------------


def test_unusual_image_modes_decode_to_the_expected_rgb(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 128, 255]], [[10, 20, 30], [255, 255, 255]]], np.uint8)
    _save(Image.fromarray(rgb).convert("CMYK"), tmp_path / "cmyk.tif")  # lossless, so exact
    np.testing.assert_array_equal(np.asarray(decode_image(str(tmp_path / "cmyk.tif"))[0]), rgb)

    sixteen = np.array([[0, 65535], [128 * 257, 1000]], np.uint16)
    _save(Image.fromarray(sixteen), tmp_path / "gray16.png")
    decoded = np.asarray(decode_image(str(tmp_path / "gray16.png"))[0])
    np.testing.assert_array_equal(decoded[..., 0], (sixteen / 65535 * 255).astype(np.uint8))
    assert (decoded == decoded[..., :1]).all()  # grey: equal channels

    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = [0, 0, 255, 255]  # opaque blue
    rgba[0, 1] = [0, 0, 255, 0]  # transparent: shows the white background
    _save(Image.fromarray(rgba), tmp_path / "rgba.png")
    np.testing.assert_array_equal(np.asarray(decode_image(str(tmp_path / "rgba.png"))[0])[0], [[0, 0, 255], [255] * 3])

    palette = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
    palette.putpalette([9, 9, 9, 200, 100, 50] + [0] * 762)
    _save(palette, tmp_path / "palette.png", transparency=0)
    np.testing.assert_array_equal(np.asarray(decode_image(str(tmp_path / "palette.png"))[0])[0],
                                  [[255] * 3, [200, 100, 50]])


def _rotated_pair(tmp_path: Path, orientation: int, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 3 x 2 (W x H) image stored with a red pixel at x=0, y=0 and the EXIF tag; decoded image and mask."""
    stored = np.zeros((2, 3, 3), np.uint8)
    stored[0, 0] = [255, 0, 0]
    exif = Image.Exif()
    exif[274] = orientation
    _save(Image.fromarray(stored), tmp_path / "image.png", exif=exif)
    _save(Image.fromarray(mask), tmp_path / "mask.png")
    image, applied = decode_image(str(tmp_path / "image.png"))
    decoded_mask, note = load_mask(Sample("x", "", 0, mask=str(tmp_path / "mask.png")), image.size, applied)
    assert note == ""
    return np.asarray(image)[..., 0] == 255, decoded_mask


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotation_turns_a_mask_stored_like_the_image(tmp_path, orientation):
    stored_mask = np.zeros((2, 3), np.uint8)
    stored_mask[0, 0] = 255  # the mask marks the red pixel in the stored grid
    red, mask = _rotated_pair(tmp_path, orientation, stored_mask)
    assert red.shape == mask.shape == ((2, 3) if orientation == 3 else (3, 2))
    np.testing.assert_array_equal(mask, red)
    # The golden case: orientation 6 shows the stored top-left pixel at the top right.
    if orientation == 6:
        assert red[0, 1] and red.sum() == 1


def test_exif_rotation_keeps_a_mask_drawn_on_the_upright_image(tmp_path):
    upright_mask = np.zeros((3, 2), np.uint8)  # portrait, like the upright image; the stored image is landscape
    upright_mask[0, 1] = 255
    red, mask = _rotated_pair(tmp_path, 6, upright_mask)
    np.testing.assert_array_equal(mask, red)


@pytest.mark.parametrize("values, expected", [
    ([0, 1], [False, True]),  # 0/1 masks look black but mark the object
    ([0, 255], [False, True]),
    ([0, 3, 7], [False, True, True]),  # label indices: any labelled pixel is object
])
def test_mask_values(tmp_path, values, expected):
    _save(Image.fromarray(np.array([values], np.uint8)), tmp_path / "mask.png")
    mask, _ = load_mask(Sample("x", "", 0, mask=str(tmp_path / "mask.png")), (len(values), 1))
    assert mask[0].tolist() == expected


def test_colour_palette_and_alpha_masks(tmp_path):
    sample = Sample("x", "", 0, mask=str(tmp_path / "mask.png"))
    # A palette mask whose index 0 is drawn white: the indices decide, not the colours.
    palette = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
    palette.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    _save(palette, tmp_path / "mask.png")
    assert load_mask(sample, (2, 1))[0][0].tolist() == [False, True]
    # White everywhere, opaque only on the object; and a dark blue object on black.
    rgba = np.array([[[255, 255, 255, 0], [255, 255, 255, 255], [0, 0, 1, 255], [0, 0, 0, 255]]], np.uint8)
    _save(Image.fromarray(rgba), tmp_path / "mask.png")
    assert load_mask(sample, (4, 1))[0][0].tolist() == [False, True, True, False]


def test_mask_of_another_size_is_resized_with_nearest(tmp_path):
    small = np.zeros((4, 4), np.uint8)
    small[1, 2] = 9
    _save(Image.fromarray(small), tmp_path / "mask.png")
    mask, note = load_mask(Sample("x", "", 0, mask=str(tmp_path / "mask.png")), (8, 8))
    expected = np.zeros((8, 8), bool)
    expected[2:4, 4:6] = True  # each cell becomes 2 x 2 pixels, no blurred edge
    np.testing.assert_array_equal(mask, expected)
    assert note.startswith("mask resized: 4x4 to 8x8")


def test_missing_mask_file_and_object_cropped_away_are_notes(tmp_path):
    _save(Image.fromarray(_object_image()), tmp_path / "a.png")
    path = str(tmp_path / "a.png")
    samples = [Sample("gone", path, 0, mask=str(tmp_path / "gone.png")), Sample("corner", path, 0, box=(0, 0, 4, 4))]
    dataset = AuditDataset(samples, DataConfig(crop=16))  # keeps pixels 8..23: the 4 x 4 corner box is cut off
    gone, corner = dataset[0], dataset[1]
    assert gone["ok"] and not gone["has_mask"] and gone["note"].startswith("missing mask: FileNotFoundError")
    assert corner["has_mask"] and not corner["mask"].any() and corner["note"].startswith("empty mask after crop")


def test_box_follows_exif_rotation(tmp_path):
    exif = Image.Exif()
    exif[274] = 6
    _save(Image.new("RGB", (30, 20)), tmp_path / "image.png", exif=exif)
    image, orientation = decode_image(str(tmp_path / "image.png"))
    assert image.size == (20, 30)
    mask, _ = load_mask(Sample("x", "", 0, box=(0, 0, 10, 5)), image.size, orientation)
    expected = np.zeros((30, 20), bool)
    expected[0:10, 15:20] = True  # the stored top-left box, turned to the top right
    np.testing.assert_array_equal(mask, expected)


# -- non-finite scores and empty maps inside the sweep ------------------------------------------------------


def test_non_finite_inputs_and_zero_maps_give_nan_metrics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2))
    images = torch.randn(4, 3, 8, 8)
    images[0, 0, 0, 0] = float("nan")  # NaN logits and gradients
    images[1, 0, 0, 0] = float("inf")  # infinite activations
    images[2] = 0.0  # no bias: all-zero activations, so all-zero maps
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[:, :4, :4] = True
    batch = {"image": images, "mask": masks, "has_mask": torch.ones(4, dtype=torch.bool),
             "label": torch.tensor([0, 1, 0, 1]), "index": torch.arange(4)}
    cfg = load_config(None, ["sweep.map_size=4"])
    with preserved_model_state(model):
        fields = audit_batch(model, model[1], batch, [GradCAM()], cfg)
    for name in ("pred_energy_in_mask", "pred_pointing_hit", "pred_iou", "true_energy_in_mask"):
        assert np.isnan(fields[name][:3]).all(), name
        assert np.isfinite(fields[name][3]), name
    assert np.isnan(fields["p_pred"][:2]).all() and np.isfinite(fields["p_pred"][2:]).all()
    assert np.isfinite(fields["maps"]).all()  # stored maps stay finite: zeros where undefined


# -- run-level faults -------------------------------------------------------------------------------------------


def _audit(data, out, *extra) -> list[str]:
    return ["audit", "--data.root", str(data), "--model.factory", "tests.conftest:tiny_cnn", "--out", str(out), *extra]


def _tiny_state(**renames) -> dict:
    torch.manual_seed(0)
    state = tiny_cnn().state_dict()
    return {renames.get(k, k): v for k, v in state.items()}


def _run_fault(tmp_path, data, name):
    """Arguments for the run-level fault `name` (files it needs are made in tmp_path)."""
    if name == "unknown label folder":
        (data / "bird").mkdir()
        Image.fromarray(_object_image()).save(data / "bird" / "0.png")
        return _audit(data, tmp_path / "run", "--model.classes", "[cat, dog]")
    if name == "unknown manifest label":
        (tmp_path / "m.csv").write_text("path,label\ndata/cat/0.png,cat\ndata/dog/0.png,bird\n")
        return ["audit", "--data.manifest", str(tmp_path / "m.csv"), "--model.factory", "tests.conftest:tiny_cnn",
                "--model.classes", "[cat, dog]", "--out", str(tmp_path / "run")]
    if name == "class count (arch)":
        torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "three.pt")
        return ["audit", "--data.root", str(data), "--model.arch", "resnet18", "--model.checkpoint",
                str(tmp_path / "three.pt"), "--out", str(tmp_path / "run")]
    if name == "class count (factory)":
        torch.save(tiny_cnn(3).state_dict(), tmp_path / "three.pt")
        return _audit(data, tmp_path / "run", "--model.checkpoint", str(tmp_path / "three.pt"))
    if name == "checkpoint keys":
        torch.save(_tiny_state(**{"0.weight": "stem.weight"}), tmp_path / "renamed.pt")
        return _audit(data, tmp_path / "run", "--model.checkpoint", str(tmp_path / "renamed.pt"))
    if name == "damaged checkpoint":
        (tmp_path / "damaged.pt").write_bytes(b"\x00 not a checkpoint" * 10)
        return _audit(data, tmp_path / "run", "--model.checkpoint", str(tmp_path / "damaged.pt"))
    if name == "missing target layer":
        return _audit(data, tmp_path / "run", "--model.target_layer", "conv9")
    if name == "flat target layer":
        return _audit(data, tmp_path / "run", "--model.target_layer", "6")  # the Linear head
    if name == "pooled target layer":
        return _audit(data, tmp_path / "run", "--model.target_layer", "4")  # 1 x 1 after global pooling
    if name == "empty dataset":
        (tmp_path / "empty" / "cat").mkdir(parents=True)
        return _audit(tmp_path / "empty", tmp_path / "run")
    if name == "nothing decodable":
        for path in data.rglob("*.png"):
            path.write_bytes(b"junk")
        return _audit(data, tmp_path / "run")
    if name == "unknown key":
        return _audit(data, tmp_path / "run", "--sweep.batch_sise", "4")
    if name == "wrong type":
        return _audit(data, tmp_path / "run", "--sweep.batch_size", "many")
    if name == "zero std":
        return _audit(data, tmp_path / "run", "--data.std", "[0.2, 0, 0.2]")
    if name == "sizes differ (in a worker)":
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(data / "cat" / "big.png")
        return _audit(data, tmp_path / "run", "--sweep.num_workers", "1", "--sweep.batch_size", "8")
    if name == "duplicate ids":
        (tmp_path / "m.csv").write_text("id,path,label\na,data/cat/0.png,cat\na,data/dog/0.png,dog\n")
        return ["audit", "--data.manifest", str(tmp_path / "m.csv"), "--model.factory", "tests.conftest:tiny_cnn",
                "--out", str(tmp_path / "run")]
    raise AssertionError(name)


RUN_FAULTS = {
    "unknown label folder": ["['bird']", "labels the model does not know", "model.classes"],
    "unknown manifest label": ["['bird']", "labels the model does not know"],
    "class count (arch)": ["outputs (3,) scores", "2 classes", "model.classes"],
    "class count (factory)": ["trained for 3 classes", "for 2", "num_classes: 3", "model.classes"],
    "checkpoint keys": ["missing from the checkpoint: 0.weight", "not in the model: stem.weight"],
    "damaged checkpoint": ["damaged.pt", "cannot be read"],
    "missing target layer": ["model.target_layer 'conv9' is not a module"],
    "flat target layer": ["model.target_layer '6'", "(1, 2)", "not a spatial", "'3'"],
    "pooled target layer": ["model.target_layer '4'", "(1, 8, 1, 1)", "not a spatial", "'3'"],
    "empty dataset": ["No images found"],
    "nothing decodable": ["None of the images could be decoded"],
    "unknown key": ["Unknown config key", "'batch_sise'", "Did you mean 'batch_size'?"],
    "wrong type": ["sweep.batch_size must be of type int", "'many'"],
    "zero std": ["data.std", "above 0"],
    "duplicate ids": ["repeats the ids ['a']"],
    "sizes differ (in a worker)": ["error: Images of different sizes", "(3, 40, 40)", "data.resize"],
}


@pytest.mark.parametrize("name", list(RUN_FAULTS))
def test_run_level_fault_exits_2_with_one_paragraph(tmp_path, capsys, monkeypatch, name):
    data, _ = make_image_folder(tmp_path, per_class=2)
    monkeypatch.chdir(tmp_path)
    argv = _run_fault(tmp_path, data, name)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    message = lines[-1]  # the paragraph: one line, last, after at most some progress logs
    assert message.startswith("auditor: error: ") and sum("error" in line for line in lines) == 1, err
    for part in RUN_FAULTS[name]:
        assert part in message, (part, message)


def test_a_layer_that_is_1x1_only_at_this_input_size_warns(caplog):
    model = nn.Sequential(nn.Conv2d(3, 4, 8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    example = torch.randn(1, 3, 8, 8)  # the 8 x 8 kernel leaves one cell here, 25 x 25 on 32 x 32 images
    logger = logging.getLogger("auditor")
    logger.addHandler(caplog.handler)
    try:
        check_spatial(model, "1", model[1], example, None)
    finally:
        logger.removeHandler(caplog.handler)
    assert "gives a 1 x 1 map on (8, 8) inputs" in caplog.text
    with pytest.raises(AuditorError, match=r"model.target_layer '2' outputs \(1, 4, 1, 1\)"):
        check_spatial(model, "2", model[2], example, None)


def test_debug_shows_the_traceback(tmp_path, capsys):
    data, _ = make_image_folder(tmp_path, per_class=2)
    assert main(["--debug", *_audit(data, tmp_path / "run", "--model.target_layer", "conv9")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "model.target_layer 'conv9'" in err


# -- safety -----------------------------------------------------------------------------------------------------


def test_pickled_full_model_needs_trust_checkpoint(tmp_path, capsys):
    data, _ = make_image_folder(tmp_path, per_class=2)
    torch.manual_seed(0)
    torch.save(tiny_cnn(), tmp_path / "full.pt")  # the whole module, pickled
    args = ["audit", "--data.root", str(data), "--model.checkpoint", str(tmp_path / "full.pt"),
            "--out", str(tmp_path / "run")]
    assert main(args) == 2
    message = capsys.readouterr().err
    assert "--trust-checkpoint" in message and "runs code" in message and "Sequential" in message
    assert not (tmp_path / "run" / "records.parquet").exists()
    assert main([*args, "--trust-checkpoint"]) == 0
    assert len(load_run(tmp_path / "run").records) == 4


def test_trusted_pickles_in_wrappers_and_with_an_architecture(tmp_path):
    torch.manual_seed(0)
    full = tiny_cnn()
    torch.save({"model": full, "epoch": 3}, tmp_path / "wrapped.pt")
    loaded = load_model(ModelConfig(checkpoint=str(tmp_path / "wrapped.pt"), trust_checkpoint=True))
    assert loaded.state_dict().keys() == full.state_dict().keys()
    # With a factory the pickled model only supplies weights, checked against the architecture like a state_dict.
    loaded = load_model(ModelConfig(factory="tests.conftest:tiny_cnn", checkpoint=str(tmp_path / "wrapped.pt"),
                                    trust_checkpoint=True))
    torch.testing.assert_close(loaded.state_dict(), full.state_dict())
    with pytest.raises(AuditorError, match="trained for 2 classes but tests.conftest:tiny_cnn builds a model for 3"):
        load_model(ModelConfig(factory="tests.conftest:tiny_cnn", factory_kwargs={"num_classes": 3},
                               checkpoint=str(tmp_path / "wrapped.pt"), trust_checkpoint=True))
    torch.save(full.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(AuditorError, match="holds weights, not a model: name their architecture"):
        load_model(ModelConfig(checkpoint=str(tmp_path / "weights.pt")))


def test_hostile_class_names_and_ids_are_escaped_and_never_leave_the_run_dir(tmp_path, monkeypatch):
    hostile = '<img src=x onerror="alert(1)">'
    root = tmp_path / "<i>work</i>"  # a hostile folder in every path and in the config's data.manifest
    data, _ = make_image_folder(root, classes=("cat", hostile), per_class=4)
    images = sorted(p.relative_to(root).as_posix() for p in data.rglob("*.png"))
    ids = ["../../escaped", "/tmp/absolute-id", "<b>bold</b>", "a/../../b", "..", "ok", "x\ny", "C:\\evil"]
    rows = [{"id": i, "path": p, "label": p.split("/")[1]} for i, p in zip(ids, images)]
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    monkeypatch.chdir(tmp_path)  # manifest paths resolve relative to the manifest, not to the working folder
    before = {p for p in tmp_path.rglob("*")}
    out = root / "run"
    assert main(["audit", "--data.manifest", str(root / "manifest.csv"), "--model.factory",
                 "tests.conftest:tiny_cnn", "--out", str(out)]) == 0
    created = {p for p in tmp_path.rglob("*")} - before
    assert created and all(p == out or out in p.parents for p in created), sorted(created)
    assert not Path("/tmp/absolute-id").exists() and not (tmp_path / "../../escaped").resolve().exists()
    run = load_run(out)
    assert run.summary["n_skipped"] == 0 and sorted(run.records["id"]) == sorted(ids)
    page = (out / "report.html").read_text(encoding="utf-8")
    for text in (hostile, "<b>bold</b>", "<i>work</i>"):
        assert text not in page
    assert escape(hostile) in page and escape("<i>work</i>") in page


def test_manifest_paths_resolve_relative_to_the_manifest(tmp_path, monkeypatch):
    data, _ = make_image_folder(tmp_path / "set", per_class=2)
    (tmp_path / "set" / "m.csv").write_text("path,label\ndata/cat/0.png,cat\ndata/dog/1.png,dog\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["audit", "--data.manifest", "../set/m.csv", "--model.factory", "tests.conftest:tiny_cnn",
                 "--out", "run"]) == 0
    run = load_run(elsewhere / "run")
    assert run.summary["n_skipped"] == 0
    expected = {str((data / "cat" / "0.png").resolve()), str((data / "dog" / "1.png").resolve())}
    assert set(run.records["path"]) == expected


# -- metric invariants (tests/test_attention.py covers energy_in_mask's) -----------------------------------------

MAPS = arrays(np.float32, (2, 5, 5), elements=st.floats(0, 100, width=32, allow_subnormal=False))
MASKS = arrays(np.bool_, (2, 5, 5))
YES = torch.tensor([True, True])
METRICS = {
    "energy_in_mask": attention.energy_in_mask,
    "pointing_hit": attention.pointing_hit,
    "iou": attention.iou,
}


@settings(max_examples=60, deadline=None)
@given(MAPS, MASKS, st.integers(-8, 8))
def test_metrics_lie_in_0_1_and_ignore_the_maps_scale(map_values, mask_values, power):
    maps, masks = torch.from_numpy(map_values), torch.from_numpy(mask_values)
    for name, metric in METRICS.items():
        values = metric(maps, masks, YES)
        defined = torch.from_numpy(mask_values.any(axis=(1, 2)) & (map_values.max(axis=(1, 2)) > 0))
        assert torch.isnan(values[~defined]).all(), name
        assert ((values[defined] >= 0) & (values[defined] <= 1)).all(), name
        # A power of two scales every value exactly, so even ties and thresholds are kept.
        torch.testing.assert_close(metric(maps * 2.0**power, masks, YES), values, equal_nan=True, rtol=1e-5, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(MAPS, MASKS)
def test_energy_splits_between_mask_and_complement(map_values, mask_values):
    maps, masks = torch.from_numpy(map_values), torch.from_numpy(mask_values)
    inside = attention.energy_in_mask(maps, masks, YES)
    outside = attention.energy_in_mask(maps, ~masks, YES)
    both = ~torch.isnan(inside) & ~torch.isnan(outside)
    torch.testing.assert_close(inside[both] + outside[both], torch.ones(int(both.sum())))


@settings(max_examples=40, deadline=None)
@given(MAPS, MASKS, st.sampled_from([float("nan"), float("inf"), float("-inf")]))
def test_full_mask_non_finite_maps_and_no_mask(map_values, mask_values, bad):
    maps, masks = torch.from_numpy(map_values), torch.from_numpy(mask_values)
    positive = torch.from_numpy(map_values.max(axis=(1, 2)) > 0)
    full = torch.ones_like(masks)
    assert (attention.energy_in_mask(maps, full, YES)[positive] == 1).all()
    assert (attention.pointing_hit(maps, full, YES)[positive] == 1).all()
    poisoned = maps.clone()
    poisoned[0, 2, 2] = bad
    for name, metric in METRICS.items():
        assert torch.isnan(metric(poisoned, masks, YES)[0]), name
        assert torch.isnan(metric(maps, masks, torch.tensor([False, False]))).all(), name
        # Rows are independent: the poisoned row leaves the other row's value as it was.
        torch.testing.assert_close(metric(poisoned, masks, YES)[1], metric(maps, masks, YES)[1], equal_nan=True)
