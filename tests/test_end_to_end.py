"""Issue 13: every stage's seconds in manifest.json, the causal check's cap, the shared loader settings, the
strip probes of the map geometry, channels_last on the CPU and the thumbnails' reduced decode. No test here times
anything: speed is shown by benchmarks/end_to_end.py."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from auditor import timing
from auditor.pipeline import STAGES
from auditor.causal import causal_indices
from auditor.cli import main
from auditor.config import Config, DataConfig, load_config
from auditor.data import AuditDataset, Sample, build_samples, load_display_image
from auditor.geometry import _Stop, _measure, measure_geometry
from auditor.hooks import forward_hook
from auditor.sweep import make_loader, uses_channels_last
from tests.conftest import SHARED, make_image_folder


class FakeClock:
    """perf_counter that advances only when told to."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_nested_stages_record_their_own_seconds_and_add_up(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    with timing.recording() as stages:
        with timing.stage("findings_s"):
            clock.now += 1.0
            with timing.stage("causal_check_s"):
                clock.now += 5.0
            clock.now += 0.5
            with timing.stage("causal_check_s"):  # a stage that runs twice adds up
                clock.now += 2.0
        with timing.stage("report_s"):
            clock.now += 0.25
    assert stages == {"findings_s": 1.5, "causal_check_s": 7.0, "report_s": 0.25}
    assert sum(stages.values()) == clock.now
    with timing.stage("report_s"):  # outside recording(): nothing is kept, nothing fails
        clock.now += 1.0
    assert stages["report_s"] == 0.25


def test_manifest_times_every_stage_and_the_report_states_the_causal_cap(tmp_path):
    data, masks = make_image_folder(tmp_path, per_class=6)
    out = tmp_path / "run"
    code = main(["audit", "--data.root", str(data), "--data.masks", str(masks), "--model.factory",
                 "tests.conftest:brightness_cnn", "--out", str(out), "--sweep.batch_size", "5",
                 "--findings.causal", "all", "--findings.causal_max_images", "4"])
    assert code == 0
    timings = json.loads((out / "manifest.json").read_text())["timings"]
    for key in ("prepare_s", "sweep_s", "images_per_s", *STAGES, "total_s"):
        assert isinstance(timings[key], float) and timings[key] >= 0, key
    # Each stage counts its own seconds once: together they cannot exceed the run.
    assert sum(timings[key] for key in STAGES) <= timings["total_s"] + 1e-6
    assert timings["causal_check_s"] > 0 and timings["report_s"] > 0
    from auditor.timing import peak_memory_mib

    peak = json.loads((out / "manifest.json").read_text())["peak_memory_mib"]
    assert 0 < peak <= peak_memory_mib() + 0.05  # this process's peak so far, read at the run's end (rounded)
    causal = pd.read_csv(out / "causal.csv")
    assert causal["n"].sum() == 4 and sorted(causal["n"]) == [2, 2]  # the cap, spread evenly over both classes
    assert "Checked on 4 of the 12 images of 2 class(es) (findings.causal_max_images: 4" in (
        out / "report.html").read_text()


def test_causal_indices_spread_the_cap_over_the_classes():
    samples = [Sample(str(i), "", label) for i, label in enumerate([0] * 10 + [1] * 2 + [2] * 6)]
    assert causal_indices(samples, {1, 2}, 100) == list(range(10, 18))  # under the cap: all, in order
    chosen = causal_indices(samples, {0, 1, 2}, 8, seed=3)
    labels = [samples[i].label for i in chosen]
    # 8 over 3 classes: class 1 has only 2, its share goes to the others (3 each).
    assert chosen == sorted(chosen) and len(set(chosen)) == 8
    assert labels.count(1) == 2 and labels.count(0) == 3 and labels.count(2) == 3
    assert causal_indices(samples, {0, 1, 2}, 8, seed=3) == chosen  # seeded
    assert causal_indices(samples, set(), 8) == []


def test_causal_cap_must_be_positive():
    with pytest.raises(Exception, match="causal_max_images must be 1 or more"):
        load_config(None, ["findings.causal_max_images=0"])


def test_loader_pins_memory_and_keeps_workers_on_cuda_only(tmp_path):
    data, _ = make_image_folder(tmp_path, per_class=3)
    cfg = Config(data=DataConfig(root=str(data)))
    cfg.sweep.batch_size, cfg.sweep.num_workers = 4, 2
    dataset = AuditDataset(build_samples(cfg.data, None)[0], cfg.data)
    cpu = make_loader(dataset, [5, 1, 3], cfg, torch.device("cpu"))
    assert not cpu.pin_memory and not cpu.persistent_workers and cpu.batch_size == 4
    assert list(cpu.dataset.indices) == [5, 1, 3]
    cuda = make_loader(dataset, range(6), cfg, torch.device("cuda"))  # built, never iterated: no GPU needed
    assert cuda.pin_memory and cuda.persistent_workers
    cfg.sweep.num_workers = 0
    assert not make_loader(dataset, range(6), cfg, torch.device("cuda")).persistent_workers


def test_channels_last_on_the_cpu_gives_the_same_records(tmp_path):
    data, masks = make_image_folder(tmp_path, per_class=4)
    runs = {}
    for flag in ("true", "false"):
        out = tmp_path / f"run-{flag}"
        assert main(["audit", "--data.root", str(data), "--data.masks", str(masks), "--model.factory",
                     "tests.conftest:tiny_cnn", "--out", str(out), "--sweep.channels_last", flag,
                     "--findings.enabled", "false"]) == 0
        runs[flag] = (pd.read_parquet(out / "records.parquet"), np.load(out / "maps.npy"))
    assert uses_channels_last(torch.device("cpu"), Config()) and not uses_channels_last(torch.device("mps"), Config())
    (on, maps_on), (off, maps_off) = runs["true"], runs["false"]
    assert (on["pred_idx"] == off["pred_idx"]).all()
    np.testing.assert_allclose(on["p_pred"], off["p_pred"], rtol=1e-5)
    np.testing.assert_allclose(maps_on.astype(np.float32), maps_off.astype(np.float32), atol=2e-3)  # float16


def _square_probe_fits(model, layer, shape):
    """What the geometry probe measured before the strips: the 3x enlarged square, both axes at once."""
    store = {}

    def hook(module, inputs, output):
        store["output"] = output
        raise _Stop

    with forward_hook(layer, hook):
        return _measure(model, store, None, (shape[0], 3 * shape[1], 3 * shape[2]), torch.device("cpu"))[1]


def test_strip_probes_measure_what_the_enlarged_square_measures():
    # Valid convolutions of 5 x 3 kernels, average-pooled by 2: cell i sees rows 2i ... 2i + 13 (centre 2i + 6.5)
    # and columns 2i ... 2i + 7 (centre 2i + 3.5). On 16 x 16 the rows need a larger probe, the columns do not;
    # the row strip is too narrow for the model at a quarter width and falls back to the image's width.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, (5, 3)), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 4, (5, 3))).eval()
    geometry = measure_geometry(model, model[3], torch.zeros(1, 1, 16, 16))
    expected = (2.0, 6.5, 2.0, 3.5)
    np.testing.assert_allclose(dataclasses.astuple(geometry), expected, atol=1e-6)
    square = _square_probe_fits(model, model[3], (1, 16, 16))
    np.testing.assert_allclose([*square[0], *square[1]], expected, atol=1e-6)


def test_thumbnail_decode_at_reduced_scale_shows_the_model_view(tmp_path):
    y, x = np.mgrid[0:480, 0:640] / 100.0  # smooth, so a misplaced crop shows and resampling differences do not
    pixels = (127 + 120 * np.stack([np.sin(x), np.cos(y), np.sin(x + y)], axis=-1)).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    cfg = DataConfig(resize=256, crop=224)
    full = load_display_image(str(path), cfg)
    small = load_display_image(str(path), cfg, side=96)
    assert full.shape == (224, 224, 3) and small.shape == (96, 96, 3)
    reference = np.asarray(Image.fromarray(full).resize((96, 96), Image.BICUBIC), dtype=np.float64)
    assert np.abs(reference - small).mean() < 1.5  # the same picture, within JPEG and resampling noise
    assert load_display_image(str(path), cfg, side=400).shape == full.shape  # never enlarged


@pytest.mark.skipif(not (SHARED / "data" / "coco128-seg").is_dir(), reason="../shared coco128-seg absent")
def test_benchmark_folder_labels_each_photo_by_its_largest_object(tmp_path):
    from benchmarks.end_to_end import build_image_folder

    root, masks, classes = build_image_folder(SHARED / "data" / "coco128-seg", tmp_path, images=6, masks=True)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    assert len(files) == 6 and {f.split("/")[0] for f in files} == set(classes)
    assert sorted(p.relative_to(masks).with_suffix(".jpg").as_posix() for p in masks.rglob("*.png")) == files
    labels = pd.read_csv(tmp_path / "labels" / "manifest.csv")
    first = labels.iloc[0]
    assert f"{first['label']}/{first['id']}_000.jpg" in files


def test_benchmark_audit_keeps_the_callers_python_path(monkeypatch):
    """The audit subprocess finds the repo first and still every package the caller reaches through PYTHONPATH
    (a bare GPU machine's `pip --target` folder): on the first GPU lent, replacing PYTHONPATH lost cleanlab."""
    import os

    from benchmarks.end_to_end import REPO, child_environment

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/tmp/site", "/opt/more"]))
    assert child_environment()["PYTHONPATH"].split(os.pathsep) == [str(REPO), "/tmp/site", "/opt/more"]
    monkeypatch.delenv("PYTHONPATH")
    assert child_environment()["PYTHONPATH"] == str(REPO)

def _photo(path, orientation: int = 1, size=(48, 32)):
    """A JPEG with a distinct gradient per corner, stored with the given EXIF orientation."""
    y, x = np.mgrid[0:size[1], 0:size[0]]
    pixels = np.stack([x * 5, y * 7, (x + y) * 3], axis=-1).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=95, exif=exif)


def test_decode_on_device_equals_the_cpu_decode_for_every_orientation(tmp_path):
    from auditor.data import EncodedJpegs, collate, decode_on_device

    root = tmp_path / "data" / "a"
    root.mkdir(parents=True)
    for orientation in range(1, 9):
        _photo(root / f"{orientation}.jpg", orientation)
    Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(root / "9.png")  # not a JPEG: decoded as usual
    (root / "bad.jpg").write_bytes((root / "1.jpg").read_bytes()[:200])  # header only: skipped with its reason
    cfg = DataConfig(root=str(tmp_path / "data"), resize=[24, 24])
    dataset = AuditDataset(build_samples(cfg, None)[0], cfg)
    everything = range(len(dataset))
    expected = collate([dataset[i] for i in everything])
    got = decode_on_device(collate([EncodedJpegs(dataset)[i] for i in everything]), dataset, torch.device("cpu"))
    assert got["index"].tolist() == expected["index"].tolist() and len(got["index"]) == 9
    torch.testing.assert_close(got["image"], expected["image"], atol=0, rtol=0)
    assert torch.equal(got["mask"], expected["mask"]) and got["note"] == expected["note"]
    assert [i for i, _ in got["failed"]] == [i for i, _ in expected["failed"]] == [
        next(i for i, s in enumerate(dataset.samples) if s.id.endswith("bad.jpg"))]
    cfg_run = Config(data=cfg)
    cfg_run.sweep.decode_on_device, cfg_run.sweep.batch_size = True, 4
    batches = list(make_loader(dataset, everything, cfg_run, torch.device("cpu")))
    assert torch.equal(torch.cat([b["image"] for b in batches]), expected["image"])


def test_evidence_maps_from_the_sweeps_cells_equal_a_second_model_pass(tmp_path):
    import shutil

    from auditor.cams import preserved_model_state
    from auditor.evidence import write_evidence_counterfactuals
    from auditor.runs import COUNTERFACTUAL_FILE, load_run
    from auditor.sweep import COUNTERFACTUAL_CELLS
    from tests.conftest import tiny_cnn

    data, masks = make_image_folder(tmp_path, per_class=5)
    out = tmp_path / "run"
    assert main(["audit", "--data.root", str(data), "--data.masks", str(masks), "--model.factory",
                 "tests.conftest:tiny_cnn", "--out", str(out), "--sweep.batch_size", "4",
                 "--findings.enabled", "false", "--device", "cpu"]) == 0
    # On the CPU, as the second pass below: a CUDA sweep runs under bf16 autocast, and its maps differ from a float32
    # pass by up to 0.014 of the peak here (an H200); benchmarks/device_agreement.py measures that on a real run.
    run = load_run(out)
    cells = np.load(out / f"{COUNTERFACTUAL_CELLS}.npy")
    assert cells.shape == (10, 2, 32, 32) and cells.dtype == np.float16  # tiny_cnn's layer keeps the input's size
    cfg = run.config
    dataset = AuditDataset(build_samples(cfg.data, None)[0], cfg.data)
    model = tiny_cnn()
    findings = [{"samples": [run.records["id"][7], run.records["id"][2]]}, {"samples": [run.records["id"][9]]}]
    twin = tmp_path / "twin"
    shutil.copytree(out, twin)
    (twin / f"{COUNTERFACTUAL_CELLS}.npy").unlink()  # as a run without cells: the model runs again

    class NotRun(nn.Module):
        def forward(self, x):
            raise AssertionError("the model must not run when the run has counterfactual cells")

    assert write_evidence_counterfactuals(out, cfg, NotRun(), model[3], dataset, findings) == 3
    with preserved_model_state(model):
        assert write_evidence_counterfactuals(twin, cfg, model, model[3], dataset, findings) == 3
    with np.load(out / COUNTERFACTUAL_FILE) as a, np.load(twin / COUNTERFACTUAL_FILE) as b:
        assert sorted(a["ids"]) == sorted(b["ids"])
        ours = dict(zip(a["ids"], a["maps"].astype(np.float32)))
        for image_id, maps in zip(b["ids"], b["maps"].astype(np.float32)):
            np.testing.assert_allclose(ours[image_id], maps, atol=3e-3)
        assert max(float(m.max()) for m in ours.values()) > 0


def test_causal_check_takes_the_sweeps_predictions_and_runs_the_model_on_erased_images_only():
    from auditor.causal import causal_check, sweep_predictions
    from tests.test_causal import CLASSES, CORNER, CornerModel, batch

    batches = [batch([0, 1, 1], [True, True, True]), {**batch([0, 1], [True, False]), "index": torch.tensor([3, 4])}]
    fresh_model, model = CornerModel(), CornerModel()
    fresh = causal_check(fresh_model, batches, CLASSES, {1: CORNER}, "cpu")
    own = {0: 0, 1: 1, 2: 1, 3: 0, 4: 1}  # what the model predicts for the images as they are
    pd.testing.assert_frame_equal(causal_check(model, batches, CLASSES, {1: CORNER}, "cpu", predictions=own), fresh)
    # per batch: as is, object erased, region erased, a random region of its size erased; then per class measured
    # (two classes): its objects on its own class's backgrounds and on another class's
    assert (len(fresh_model.seen), len(model.seen)) == (8 + 4, 6 + 4)
    other = causal_check(CornerModel(), batches, CLASSES, {1: CORNER}, "cpu", predictions={**own, 4: 0})
    assert other.set_index("class").loc["marked", "accuracy"] == pytest.approx(2 / 3)  # the sweep's answer counts
    records = pd.DataFrame({"id": ["b", "a", "gone"], "pred_idx": [2, 0, 1]})
    assert sweep_predictions(records, [Sample("a", "", 0), Sample("b", "", 1)]) == {0: 0, 1: 2}


def test_probes_run_on_one_thread_and_give_the_threads_back():
    from auditor.pipeline import one_thread

    threads = torch.get_num_threads()
    with one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == threads
    with pytest.raises(RuntimeError), one_thread():
        raise RuntimeError("a probe failed")
    assert torch.get_num_threads() == threads
