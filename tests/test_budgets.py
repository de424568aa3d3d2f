"""Everything after the sweep spends a budget per run, never per class: a guard that is not a timing test.

A 200-class audit in which half the classes carry a corner mark (so the place check, the causal check and the
repeated-mark search all have more to examine than their budgets allow) must stay within what each check
declares (`auditor.budget.declared_budgets`), counted in manifest.json's `work`. A new stage that reads every
class's images breaks this test, whatever the machine's speed.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from auditor.budget import classes_in_budget, declared_budgets, flagged_classes
from auditor.cli import main
from auditor.config import FindingsConfig, ReportConfig
from auditor.findings import Finding

CLASSES, PER_CLASS, SIDE, MARK = 200, 6, 16, 4


def class_colours(classes: int = CLASSES) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (classes, 3))


def colour_model(num_classes: int = CLASSES) -> nn.Module:
    """Nearest class colour as a CAM-shaped net: a 1x1 convolution (identity, shifted positive), global average
    pooling, and a linear head whose logits 2 m.x - |m|^2 pick the nearest class mean m."""
    means = (torch.tensor(class_colours(num_classes), dtype=torch.float32) / 255 - 0.5) / 0.25 + 3.0
    conv = nn.Conv2d(3, 3, 1)
    head = nn.Linear(3, num_classes)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3)[:, :, None, None])
        conv.bias.fill_(3.0)
        head.weight.copy_(2 * means)
        head.bias.copy_(-(means**2).sum(dim=1))
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)


def write_classes(root) -> None:
    """root/cNNN/i.png: each class its colour with pixel noise and a small object of a random colour at a random
    place (so no two images are copies); even classes a white corner mark on 4 of 6 images."""
    rng = np.random.default_rng(1)
    for c, colour in enumerate(class_colours()):
        folder = root / f"c{c:03d}"
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            image = (colour + rng.integers(-4, 5, (SIDE, SIDE, 3))).clip(0, 255).astype(np.uint8)
            top, left = rng.integers(MARK, SIDE - 3, 2)
            image[top : top + 3, left : left + 3] = rng.integers(0, 256, 3)
            if c % 2 == 0 and i < 4:
                image[:MARK, :MARK] = 255
            Image.fromarray(image).save(folder / f"{i}.png")


@pytest.mark.slow
def test_every_stage_after_the_sweep_stays_within_its_budget_at_200_classes(tmp_path):
    write_classes(tmp_path / "data")
    out = tmp_path / "run"
    code = main(["audit", "--data.root", str(tmp_path / "data"), "--model.factory", "tests.test_budgets:colour_model",
                 "--data.mean", "[0.5, 0.5, 0.5]", "--data.std", "[0.25, 0.25, 0.25]", "--out", str(out),
                 "--sweep.batch_size", "200", "--findings.health_batch_norm_images", "64", "--findings.causal", "all"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_health"] == "ok" and summary["accuracy"] > 0.9  # a healthy model: every check runs
    work = manifest["work"]
    assert work["sweep"]["images_read"] == CLASSES * PER_CLASS  # the sweep reads every image once
    findings_cfg = FindingsConfig(health_batch_norm_images=64)
    budgets = declared_budgets(findings_cfg, ReportConfig())
    for stage, spent in work.items():
        if stage in ("sweep", "findings"):
            continue
        assert stage in budgets, f"{stage} spends {spent} but declares no budget in auditor.budget"
        for key, amount in spent.items():
            assert amount <= budgets[stage][key], (stage, key, amount, budgets[stage][key])
    # The checks did have more to examine than their budgets: the mark search read thumbs (no file decoded) of as
    # many classes as it may, and tested marks on the model.
    searched = work["mark_search"]
    assert searched["thumbs_read"] >= findings_cfg.mark_max_classes * (PER_CLASS + 1)
    assert searched["forward_images"] > 0
    assert work["causal_check"]["images_read"] > 0  # asked to check every class, it read its budget's classes
    notes = json.loads((out / "findings.json").read_text())["notes"]
    assert any(f"{findings_cfg.mark_max_classes} of {CLASSES} classes" in note for note in notes)
    assert any(f"Causal check: {findings_cfg.check_max_classes} of {CLASSES} classes" in note for note in notes)
    # Reading every class's images even once would exceed what all checks together may read.
    everything = sum(b.get("images_read", 0) for b in budgets.values())
    assert sum(s.get("images_read", 0) for k, s in work.items() if k != "sweep") <= everything < CLASSES * 70


def test_classes_in_budget_takes_the_flagged_first_then_a_seeded_sample():
    assert classes_in_budget([5, 3, 5], 10, 2, seed=0) == [5, 3]
    picked = classes_in_budget([5], 10, 4, seed=0)
    assert picked[0] == 5 and len(set(picked)) == 4 and picked == classes_in_budget([5], 10, 4, seed=0)
    assert classes_in_budget([5], 10, 4, seed=0, fill=False) == [5]
    assert classes_in_budget([], 3, 10, seed=0) == [0, 1, 2]


def test_flagged_classes_follow_the_findings_order_and_skip_pairs():
    findings = [Finding(kind="spatial_shortcut", severity="high", classes=["b"], message="."),
                Finding(kind="context_confusion", severity="high", classes=["a", "b"], pair={"true": "a", "pred": "b"},
                        message="."),
                Finding(kind="background_reliance", severity="low", classes=["c"], message="."),
                Finding(kind="spatial_shortcut", severity="low", classes=["b"], message=".")]
    assert flagged_classes(findings, ["a", "b", "c"]) == [1, 2]


def test_a_broken_model_spends_nothing_on_checks_whose_findings_would_be_capped_at_low(tmp_path):
    from tests.conftest import make_image_folder

    data, masks = make_image_folder(tmp_path, per_class=6)
    out = tmp_path / "run"
    assert main(["audit", "--data.root", str(data), "--data.masks", str(masks), "--model.factory",
                 "tests.conftest:tiny_cnn", "--out", str(out), "--findings.causal", "all"]) == 0
    assert json.loads((out / "summary.json").read_text())["model_health"] == "broken"
    document = json.loads((out / "findings.json").read_text())
    assert any(note.startswith("The model is broken") and "were skipped" in note for note in document["notes"])
    assert all(f["severity"] == "low" for f in document["findings"] if f["kind"] != "model_health")
    manifest = json.loads((out / "manifest.json").read_text())
    assert not {"place_check", "causal_check", "mark_search", "counterfactual"} & set(manifest["work"])
    assert manifest["timings"]["causal_check_s"] == 0 and manifest["timings"]["mark_search_s"] == 0
    assert "The model is broken" in (out / "report.html").read_text()  # the report says so


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="VmHWM is Linux's")
def test_peak_memory_counts_this_processs_own_pages_not_a_parents():
    """A child started from a process holding 400 MB: getrusage would report the parent's 400 MB (the kernel
    carries the high-water mark across fork and exec); peak_memory_mib, the child's own tens of MB."""
    held = np.ones(400 * 2**20 // 8)  # touched: resident
    code = ("import resource; from auditor.timing import peak_memory_mib; "
            "print(peak_memory_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    own, rusage = map(float, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                            check=True).stdout.split())
    assert held.sum() > 0 and rusage > 380 and own < 200


def test_affordable_counts_the_first_costs_that_fit_together_and_the_first_always():
    from auditor.budget import affordable

    assert affordable([5, 3, 4], 8) == 2 and affordable([5, 3, 4], 12) == 3 and affordable([5, 3, 4], 11) == 2
    assert affordable([9, 1], 4) == 1  # the first, over the allowance alone; nothing after it
    assert affordable([], 10) == 0
