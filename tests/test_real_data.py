"""Real data and a real trained model from ../shared (skipped cleanly where it is absent)."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from auditor.cli import main
from auditor.runs import load_run
from auditor.sources import read_idx, write_image_folder, yolo_seg_manifest
from benchmarks.real_models import LeNet  # one definition of the shared model's architecture
from tests.conftest import SHARED

MNIST = SHARED / "data" / "mnist-t10k"
LENET = SHARED / "models" / "lenet-mnist.pt"
COCO = SHARED / "data" / "coco128-seg"


@pytest.mark.skipif(not (MNIST.is_dir() and LENET.is_file()), reason="../shared MNIST or LeNet absent")
def test_lenet_on_mnist(tmp_path):
    count = 1000
    images = read_idx(MNIST / "t10k-images-idx3-ubyte.gz")[:count]
    labels = read_idx(MNIST / "t10k-labels-idx1-ubyte.gz")[:count]
    # Accuracy measured independently of auditor: a plain forward over the raw IDX arrays.
    model = LeNet()
    model.load_state_dict(torch.load(LENET, map_location="cpu", weights_only=True))
    with torch.no_grad():
        plain_pred = model(torch.from_numpy(images.copy()).float()[:, None] / 255).argmax(1).numpy()
    plain_accuracy = float((plain_pred == labels).mean())
    assert plain_accuracy > 0.97

    strokes = torch.from_numpy(images > 0.2 * 255).float()[:, None]
    masks = F.max_pool2d(strokes, 3, stride=1, padding=1)[:, 0].numpy() > 0  # stroke grown by one pixel
    ids = [f"{i:05d}" for i in range(count)]
    write_image_folder(tmp_path / "data", tmp_path / "masks", images, masks, labels, [str(c) for c in range(10)], ids)
    out = tmp_path / "run"
    code = main(["audit", "--data.root", str(tmp_path / "data"), "--data.masks", str(tmp_path / "masks"),
                 "--data.grayscale", "true", "--data.mean", "[0.0]", "--data.std", "[1.0]",
                 "--model.factory", "tests.test_real_data:LeNet", "--model.checkpoint", str(LENET),
                 "--sweep.batch_size", "200", "--out", str(out)])
    assert code == 0
    run = load_run(out)
    records = run.records.assign(n=run.records["id"].str.extract(r"/(\d+)\.png$")[0].astype(int)).sort_values("n")
    assert run.manifest["target_layer"] == "conv_2"
    assert len(records) == count
    np.testing.assert_array_equal(records["pred_idx"].to_numpy(), plain_pred)
    assert records["correct"].mean() == pytest.approx(plain_accuracy)
    correct = records[records["correct"]]
    median_energy = correct["pred_energy_in_mask"].median()
    median_area = correct["mask_area"].median()
    assert median_energy > 1.5 * median_area, (median_energy, median_area)


@pytest.mark.skipif(not COCO.is_dir(), reason="../shared coco128-seg absent")
def test_coco128_polygons_and_resnet18_sweep(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    manifest = yolo_seg_manifest(COCO, tmp_path / "coco")
    table = pd.read_csv(manifest)
    assert len(table) >= 120  # nearly every photo has at least one polygon
    torch.manual_seed(0)
    checkpoint = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=80).state_dict(), checkpoint)
    out = tmp_path / "run"
    code = main(["audit", "--data.manifest", str(manifest), "--model.arch", "resnet18",
                 "--model.checkpoint", str(checkpoint), "--model.classes_file", str(tmp_path / "coco" / "classes.txt"),
                 "--data.resize", "[160, 160]", "--sweep.batch_size", "16", "--out", str(out)])
    assert code == 0
    run = load_run(out)
    records = run.records
    assert len(records) == len(table) and run.summary["n_skipped"] == 0
    assert records["has_mask"].all()
    # Masks survive the resize: the mask's area share matches the polygons' share of the original photo.
    assert records["mask_area"].between(0.0005, 1.0).all()
    assert np.isfinite(records["mask_area"]).all()
    # Metrics are finite for every map with positive mass; with random weights a class can have no positive
    # evidence anywhere in an image (an all-zero map), and its metrics are NaN by design, never an error.
    for kind in ("pred", "true"):
        positive = records[f"{kind}_cam_max"] > 0
        assert positive.mean() > 0.9
        for metric in ("energy_in_mask", "iou", "pointing_hit"):
            values = records[f"{kind}_{metric}"]
            assert np.isfinite(values[positive]).all(), (kind, metric)
            assert values[~positive].isna().all(), (kind, metric)
