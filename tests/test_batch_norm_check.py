"""The batch-norm check: a model whose running statistics do not fit the data is called suspect, saying why."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from auditor.batch_norm_check import (
    MIN_BATCH,
    batch_norm_check,
    batch_norm_room,
    batch_statistics,
    check_indices,
)
from auditor.cli import main
from auditor.findings import find_all
from auditor.findings.context import Context
from auditor.findings.run import BATCH_NORM_FILE, write_findings
from tests.conftest import make_image_folder
from tests.test_findings import CFG, clean_run, of_kind, write_run


class Brightness(nn.Module):
    """logits [-v, v], v = the image's mean after a batch norm: 'bright' (class 1) above the norm's mean."""

    def __init__(self, running_mean: float):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1, bias=False)
        nn.init.constant_(self.conv.weight, 1 / 3)
        self.norm = nn.BatchNorm2d(1)
        self.norm.running_mean.fill_(running_mean)
        self.head = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[-1.0], [1.0]]))

    def forward(self, x):
        return self.head(self.norm(self.conv(x)).mean(dim=(2, 3)))


def stale_brightness(num_classes: int = 2) -> nn.Module:
    """A factory the CLI imports: running mean 10, far above any normalised image, so in eval mode every image
    is 'dark' (class 0), while each batch's own mean splits dark from bright."""
    return Brightness(10.0)


def batches(levels, labels, size=MIN_BATCH):
    """Uniform images at the given levels, in batches of `size`."""
    images = torch.tensor(levels, dtype=torch.float32)[:, None, None, None].expand(-1, 3, 4, 4)
    out = []
    for start in range(0, len(levels), size):
        stop = start + size
        out.append({"image": images[start:stop], "label": torch.tensor(labels[start:stop]),
                    "index": torch.arange(start, min(stop, len(levels)))})
    return out


def test_batch_statistics_normalise_with_the_batch_and_leave_the_running_statistics_and_modes_alone():
    model = Brightness(10.0).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.tensor([1.0, 3.0])[:, None, None, None].expand(-1, 3, 2, 2)
    with batch_statistics([model.norm]):
        out = model(x)
    # batch mean 2, biased variance 1: v = (1 - 2) / 1 = -1 and (3 - 2) / 1 = +1 (eps aside)
    assert out[:, 1].tolist() == pytest.approx([-1.0, 1.0], abs=1e-4)
    assert not model.norm.training and model.norm.track_running_stats
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # num_batches_tracked too
    assert model(x)[:, 1].tolist() == pytest.approx([1 - 10, 3 - 10], abs=1e-3)  # eval mode again: running mean 10


def test_a_stale_running_mean_is_measured_by_hand_and_a_model_without_batch_norm_is_not_checked():
    levels = [-1.0, 1.0] * 8  # 16 images: dark, bright, ...
    labels = [0, 1] * 8
    eval_predictions = {i: 0 for i in range(16)}  # in eval mode every image is below the running mean 10
    figures = batch_norm_check(Brightness(10.0).eval(), batches(levels, labels), eval_predictions, "cpu")
    assert figures == {"n": 16, "accuracy": 0.5, "batch_stats_accuracy": 1.0}
    small = batches(levels[:MIN_BATCH - 1], labels[:MIN_BATCH - 1])  # too few images for batch statistics
    assert batch_norm_check(Brightness(10.0).eval(), small, eval_predictions, "cpu") is None
    plain = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    assert batch_norm_check(plain, batches(levels, labels), eval_predictions, "cpu") is None


def test_check_indices_are_a_seeded_sample_in_random_order():
    picked = check_indices(100, 30, seed=3)
    assert len(set(picked)) == 30 and picked == check_indices(100, 30, seed=3) and picked != sorted(picked)
    assert sorted(check_indices(5, 30, seed=0)) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("gain, suspect", [(0.35, True), (0.05, False)])
def test_model_health_calls_a_model_suspect_when_batch_statistics_make_it_much_more_accurate(gain, suspect):
    run, _ = clean_run()
    records, maps, masks, classes = run.arrays()
    figures = {"n": 512, "accuracy": 0.5, "batch_stats_accuracy": 0.5 + gain}
    context = Context(records, maps, masks, classes, CFG, batch_norm=figures)
    health = of_kind(find_all(records, maps, masks, classes, CFG, context=context)[0], "model_health")
    if suspect:
        assert health[0].severity == "medium" and "running statistics do not fit" in health[0].message
        assert health[0].metrics["batch_stats_gain"] == pytest.approx(0.35)
    else:
        assert health == []


def test_write_findings_reads_the_batch_norm_figures_the_run_directory_holds(tmp_path):
    run, _ = clean_run()
    write_run(tmp_path, run)
    assert not of_kind_doc(write_findings(tmp_path, CFG), "model_health")
    (tmp_path / BATCH_NORM_FILE).write_text(json.dumps({"n": 64, "accuracy": 0.4, "batch_stats_accuracy": 0.9}))
    (health,) = of_kind_doc(write_findings(tmp_path, CFG), "model_health")
    assert health["severity"] == "medium" and "batch-norm" in health["message"]


def of_kind_doc(doc: dict, kind: str) -> list[dict]:
    return [f for f in doc["findings"] if f["kind"] == kind]


def test_an_audit_of_a_model_with_stale_statistics_says_so(tmp_path):
    data, _ = make_image_folder(tmp_path, per_class=10)
    out = tmp_path / "run"
    code = main(["audit", "--data.root", str(data), "--model.factory", "tests.test_batch_norm_check:stale_brightness",
                 "--out", str(out), "--sweep.batch_size", "20"])
    assert code == 0
    figures = json.loads((out / BATCH_NORM_FILE).read_text())
    assert figures["n"] == 20 and figures["accuracy"] == 0.5  # every image called 'cat' with the running mean
    assert figures["batch_stats_accuracy"] >= 0.9  # the batch's own mean splits the bright dogs from the cats
    doc = json.loads((out / "findings.json").read_text())
    (health,) = of_kind_doc(doc, "model_health")
    assert "running statistics do not fit" in health["message"]
    assert json.loads((out / "summary.json").read_text())["model_health"] != "ok"
    assert np.isclose(health["metrics"]["batch_stats_gain"], figures["batch_stats_accuracy"] - 0.5, atol=1e-4)


class RefusesBatchStatistics(Brightness):
    """A model that cannot run with its batch norm in training mode (as a compiled or frozen graph may not)."""

    def forward(self, x):
        if self.norm.training:
            raise RuntimeError("this model runs in eval mode only")
        return super().forward(x)


def refusing_brightness(num_classes: int = 2) -> nn.Module:
    return RefusesBatchStatistics(0.0)


def test_a_model_that_cannot_run_with_batch_statistics_is_audited_without_the_check(tmp_path, capsys):
    data, _ = make_image_folder(tmp_path, per_class=10)
    out = tmp_path / "run"
    code = main(["audit", "--data.root", str(data), "--model.factory",
                 "tests.test_batch_norm_check:refusing_brightness", "--out", str(out), "--sweep.batch_size", "20"])
    assert code == 0 and (out / "findings.json").is_file() and not (out / BATCH_NORM_FILE).exists()
    assert "batch-norm check skipped" in capsys.readouterr().err  # the CLI logs to stderr


def test_the_room_batch_statistics_have_is_the_samples_errors_over_the_images_the_check_counts():
    labels = [0] * 40
    predictions = {i: 0 for i in range(40)} | {3: 1, 35: 1}  # two wrong
    # Batches of 16: 16, 16 and 8 images; the last is below MIN_BATCH and not counted: 2 wrong of 32.
    assert batch_norm_room(list(range(40)), predictions, labels, 16) == 2 / 32
    assert batch_norm_room(list(range(40)), predictions, labels, 20) == 2 / 40
    assert batch_norm_room(list(range(10)), predictions, labels, 16) == 0.0  # no batch counts: nothing to gain
    assert batch_norm_room([3, 35] * 10, predictions, labels, 20) == 1.0


def test_an_accurate_model_is_spared_the_check(tmp_path):
    """Its sample's errors leave batch statistics less than health_batch_norm_gain to gain: the model is not run."""
    from types import SimpleNamespace

    from auditor.config import Config
    from auditor.judge import check_batch_norm

    class NeverRun(nn.Module):
        def forward(self, x):
            raise AssertionError("the check ran the model")

    class Dataset(list):  # what the check reads of a dataset: its length and its samples' labels
        samples = property(lambda self: self)

    dataset = Dataset(SimpleNamespace(label=i % 2) for i in range(100))
    predictions = {i: i % 2 for i in range(100)} | {0: 1, 1: 0, 2: 1}  # 3 wrong of the 64 sampled at most: < 10 %
    check_batch_norm(tmp_path, Config(), NeverRun(), dataset, predictions, torch.device("cpu"))
    assert not (tmp_path / BATCH_NORM_FILE).exists()
