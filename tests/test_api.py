"""Issue 27: the Python API over the CLI's pipeline, the README's example, and accepted findings (baselines)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset
from torchvision.transforms import v2

import auditor
from auditor.baseline import ACCEPTED_FILE, REGION_MIN_IOU, mark_accepted, region_iou
from auditor.cli import exit_code_for, main
from auditor.config import IMAGENET_MEAN, IMAGENET_STD
from auditor.errors import AuditorError
from auditor.runs import write_json
from tests.conftest import make_image_folder, tiny_cnn

CLASSES = ["cat", "dog"]
README = Path(__file__).resolve().parents[1] / "README.md"


def _trained(images: torch.Tensor, labels: torch.Tensor) -> torch.nn.Module:
    """tiny_cnn fitted in a second to the folder's bright squares, so that the model is healthy and every check
    after the rules (causal, place, marks, evidence) runs."""
    model = tiny_cnn()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    inputs = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)(images.float() / 255)
    for _ in range(60):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), labels).backward()
        optimiser.step()
    return model


def _folder_items(data: Path, masks: Path) -> list[dict]:
    """The ImageFolder's PNGs as dicts of uint8 tensors, in the CLI's order (sorted by id), masks included."""
    items = []
    for path in sorted(data.rglob("*.png")):
        rel = path.relative_to(data).as_posix()
        items.append({"id": rel, "label": CLASSES.index(rel.split("/")[0]),
                      "image": torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1),
                      "mask": torch.from_numpy(np.array(Image.open(masks / rel)))})
    return items


def _table(path: Path, drop=("path",)) -> pd.DataFrame:
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    return frame.drop(columns=[c for c in drop if c in frame.columns])


def test_api_on_tensors_gives_the_cli_run_on_the_same_pngs(tmp_path):
    data, masks = make_image_folder(tmp_path, per_class=12)
    items = _folder_items(data, masks)
    model = _trained(torch.stack([i["image"] for i in items]), torch.tensor([i["label"] for i in items]))
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    settings = ["--sweep.batch_size", "8", "--findings.causal", "all", "--device", "cpu"]
    assert main(["audit", "--data.root", str(data), "--data.masks", str(masks), "--model.factory",
                 "tests.conftest:tiny_cnn", "--model.checkpoint", str(tmp_path / "weights.pt"),
                 "--out", str(tmp_path / "cli"), *settings]) == 0

    # The caller's model: in training mode, one layer frozen, a hook of its own, gradients kept.
    model.train()
    model[0].requires_grad_(False)
    model[2].register_forward_hook(lambda module, inputs, output: None)
    model(items[0]["image"][None].float()).sum().backward()
    weight, grad = model[2].weight.data_ptr(), model[2].weight.grad.clone()
    run = auditor.audit(model, items, classes=CLASSES, out=tmp_path / "api", sweep__batch_size=8,
                        findings__causal="all", sweep__device="cpu")
    assert all(module.training for module in model.modules())
    assert not model[0].weight.requires_grad and model[2].weight.requires_grad
    assert len(model[2]._forward_hooks) == 1 and not model[3]._forward_hooks
    assert model[2].weight.data_ptr() == weight and torch.equal(model[2].weight.grad, grad)

    cli, api = tmp_path / "cli", tmp_path / "api"
    assert run.model_health == "ok" and (api / "causal.csv").is_file()  # the checks after the rules ran
    pd.testing.assert_frame_equal(_table(api / "records.parquet"), _table(cli / "records.parquet"))
    assert json.loads((api / "findings.json").read_text()) == json.loads((cli / "findings.json").read_text())
    for name in ("label_errors.csv", "causal.csv", "per_class.csv", "confusion.csv"):
        pd.testing.assert_frame_equal(_table(api / name), _table(cli / name), obj=name)
    np.testing.assert_array_equal(np.load(api / "maps.npy"), np.load(cli / "maps.npy"))
    np.testing.assert_array_equal(np.load(api / "masks.npy"), np.load(cli / "masks.npy"))

    # The Run object: typed findings, tables, the report; the images it shows were written for its thumbnails.
    assert [f.id for f in run.findings] == run.findings_frame()["id"].tolist()
    assert run.label_errors["id"].tolist() == pd.read_csv(api / "label_errors.csv", dtype=str)["id"].tolist()
    assert run.report() == api / "report.html" and run.report().is_file()
    shown = [Path(p) for p in run.records["path"] if Path(p).is_file()]
    assert shown and all(p.parent == api / "shown_images" for p in shown)
    assert "model health <b>ok</b>" in run._repr_html_()

    # A float Dataset (already normalised, as a training script's loader yields) with masks given beside it:
    # the same model input, so the same records.
    normalise = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    floats = TensorDataset(torch.stack([normalise(i["image"].float() / 255.0) for i in items]),
                           torch.tensor([i["label"] for i in items]))
    again = auditor.audit(model, floats, masks=[i["mask"] for i in items], classes=CLASSES, out=tmp_path / "floats",
                          sweep__batch_size=8, findings__enabled=False, sweep__device="cpu")
    ours = _table(tmp_path / "floats" / "records.parquet", drop=("path", "id"))
    pd.testing.assert_frame_equal(ours, _table(api / "records.parquet", drop=("path", "id")))
    assert again.records["has_mask"].all() and again.records["id"].tolist() == [str(i) for i in range(24)]


def _dataset(item):
    return [item, item]


@pytest.mark.parametrize("dataset, expected", [
    (_dataset("cat.png"), "dataset[0] is a str, not (image, label) or a dict"),
    (_dataset((torch.zeros(32, 32), 0)), "shape (32, 32), without channels"),
    (_dataset((torch.zeros(32, 32, 3, dtype=torch.uint8), 0)), "channels last: permute(2, 0, 1)"),
    (_dataset({"image": torch.zeros(3, 32, 32)}), "a dict without 'label'"),
    (_dataset((torch.zeros(3, 32, 32), "cat")), "the label 'cat', not a class index"),
    (_dataset((torch.zeros(3, 32, 32), 5)), "the labels [5], beyond the 2 classes"),
    ([], "The dataset is empty"),
])
def test_a_dataset_of_the_wrong_shape_is_one_clear_paragraph(tmp_path, dataset, expected):
    with pytest.raises(AuditorError) as raised:
        auditor.audit(tiny_cnn(), dataset, classes=CLASSES, out=tmp_path / "run", sweep__device="cpu")
    message = str(raised.value)
    assert expected in message and "\n" not in message
    if "shape" in expected or "dict" in expected:
        assert "a [C, H, W] tensor" in message  # names what was expected


def test_settings_are_keywords_section__key(tmp_path):
    with pytest.raises(AuditorError, match="section__key=value, e.g. sweep__batch_size=64"):
        auditor.audit(tiny_cnn(), [], out=tmp_path / "run", batch_size=4)
    with pytest.raises(AuditorError, match="Unknown config key in section 'sweep': 'batch'"):
        auditor.audit(tiny_cnn(), [], out=tmp_path / "run", config={"sweep": {"batch": 4}})


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python example, as written there, offline."""
    text = README.read_text()
    block = re.search(r"<!-- tested: tests/test_api.py -->\s*```python\n(.*?)```", text, flags=re.S)
    assert block, "README.md lost its tested Python example"
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), "README.md", "exec"), {})
    assert (tmp_path / "reports" / "my-model" / "report.html").is_file()


def test_import_auditor_loads_no_torch_and_audit_is_callable():
    code = "import sys, auditor; assert 'torch' not in sys.modules; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"
    assert callable(auditor.audit) and auditor.load is auditor.api.load


def test_load_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(AuditorError, match="not a finished run directory"):
        auditor.load(tmp_path)


# Accepted findings -------------------------------------------------------------------------------------------

CORNER = [0.0, 0.0, 0.25, 0.25]


def _finding(number: int, kind: str, classes: list[str], region=None, severity: str = "high") -> dict:
    return {"id": f"F{number:03d}", "kind": kind, "severity": severity, "classes": classes, "pair": None,
            "region": region, "samples": [], "metrics": {}, "message": f"{kind} on {classes}"}


def _gate(run_dir: Path, findings: list[dict], baseline: Path) -> int:
    write_json(run_dir / "findings.json", {"schema_version": 1, "findings": findings})
    mark_accepted(run_dir, baseline)
    return exit_code_for(run_dir, "high")


def test_a_baseline_passes_known_findings_and_fails_new_ones(tmp_path):
    baseline = tmp_path / "accepted.json"
    known = _finding(1, "spatial_shortcut", ["8"], CORNER)
    write_json(tmp_path / "findings.json", {"schema_version": 1, "findings": [known]})
    reason = "the corner logo is known"
    assert main(["accept", str(tmp_path), "F001", "--baseline", str(baseline), "--reason", reason]) == 0
    entry = json.loads(baseline.read_text())["accepted"][0]
    assert entry["reason"] == reason and entry["date"] and entry["region"] == CORNER

    # Numbers change from run to run: the known finding is now F002, after a medium one, and still accepted.
    moved_number = [_finding(1, "background_reliance", ["3"], severity="medium"), {**known, "id": "F002"}]
    assert _gate(tmp_path, moved_number, baseline) == 0
    assert set(json.loads((tmp_path / ACCEPTED_FILE).read_text())["accepted"]) == {"F002"}
    # A region that moved a little (IoU >= 0.5) is the same finding.
    nearby = [0.0, 0.02, 0.25, 0.27]
    assert region_iou(nearby, CORNER) >= REGION_MIN_IOU
    assert _gate(tmp_path, [{**known, "region": nearby}], baseline) == 0
    # A new finding fails the gate; so does the known kind and class at another place, or another class.
    assert _gate(tmp_path, [known, _finding(2, "repeated_mark", ["8"], CORNER)], baseline) == 3
    assert _gate(tmp_path, [{**known, "region": [0.5, 0.5, 0.75, 0.75]}], baseline) == 3
    assert _gate(tmp_path, [{**known, "region": [0.0, 0.0, 0.5, 0.5]}], baseline) == 3  # grown: IoU 0.25
    assert _gate(tmp_path, [{**known, "region": None}], baseline) == 3
    assert _gate(tmp_path, [{**known, "classes": ["9"]}], baseline) == 3
    # Without a baseline nothing is accepted, and an earlier run's acceptance is gone.
    assert _gate(tmp_path, [known], None) == 3 and not (tmp_path / ACCEPTED_FILE).exists()


def test_accept_writes_a_baseline_that_then_passes_the_gate(image_folder, tmp_path, capsys):
    data, _ = image_folder
    out, baseline = tmp_path / "run", tmp_path / "accepted.json"
    audit = ["audit", "--data.root", str(data), "--model.factory", "tests.conftest:tiny_cnn", "--out", str(out),
             "--fail-on", "high", "--device", "cpu"]
    assert main(audit) == 3  # the untrained model is a high model_health finding
    assert main(["accept", str(out), "F404", "--baseline", str(baseline)]) == 2
    assert "has no finding F404; its findings are F001" in capsys.readouterr().err
    assert main(["accept", str(out), "F001", "--baseline", str(baseline), "--reason", "not trained yet"]) == 0
    assert 'class="badge accepted"' in (out / "report.html").read_text()  # re-rendered with the mark
    assert main([*audit, "--baseline", str(baseline)]) == 0  # the next night: known, so it passes
    assert json.loads((out / ACCEPTED_FILE).read_text())["accepted"]["F001"]["reason"] == "not trained yet"
    run = auditor.load(out)
    assert run.findings_frame().set_index("id").loc["F001", "accepted"]
    assert "(accepted)" in run._repr_html_()
    assert main(audit) == 3  # without the baseline it fails again
