"""The CLI end to end through main([...]) on a tiny ImageFolder made in a temporary folder."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from auditor.cli import main
from auditor.runs import RECORD_COLUMNS, load_run
from auditor.sweep import pick_device


def _audit_args(data, masks, out, *extra):
    return ["audit", "--data.root", str(data), "--data.masks", str(masks), "--model.factory", "tests.conftest:tiny_cnn",
            "--out", str(out), "--sweep.batch_size", "5", "--sweep.shard_size", "5", *extra]


def test_audit_writes_a_complete_run_directory(image_folder, tmp_path):
    data, masks = image_folder
    out = tmp_path / "run"
    assert main(_audit_args(data, masks, out)) == 0
    for name in ("records.parquet", "maps.npy", "masks.npy", "confusion.csv", "per_class.csv", "confused_pairs.json",
                 "summary.json", "manifest.json", "skipped.csv", "report.html", "audit.log"):
        assert (out / name).is_file(), name
    assert not (out / "shards").exists()
    run = load_run(out)
    records = run.records
    assert set(RECORD_COLUMNS) <= set(records.columns)
    assert len(records) == 12 and records["row"].tolist() == list(range(12))
    assert sorted(records["id"]) == sorted(f"{c}/{i}.png" for c in ("cat", "dog") for i in range(6))
    assert run.maps.shape == (12, 2, 32, 32) and run.maps.dtype == np.float16
    assert run.masks.shape == (12, 32, 32)
    # Every map is scaled to a maximum of 1 (or is all zero), and every image has a mask, so metrics are finite.
    peaks = run.maps.astype(np.float32).max(axis=(2, 3))
    assert np.all((np.abs(peaks - 1) < 1e-3) | (peaks == 0))
    assert records["mask_area"].between(0.2, 0.3).all()  # a 16 x 16 object on 32 x 32
    assert records[["p_true", "p_pred", "loss"]].notna().all().all()
    np.testing.assert_allclose(records["loss"], -np.log(records["p_true"]), rtol=1e-4)
    assert ((records["margin"] < 0) == ~records["correct"]).all()
    confusion = pd.read_csv(out / "confusion.csv", index_col=0)
    assert confusion.to_numpy().sum() == 12 and list(confusion.columns) == ["cat", "dog"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 12 and summary["n_skipped"] == 0
    assert summary["accuracy"] == pytest.approx(records["correct"].mean())
    manifest = json.loads((out / "manifest.json").read_text())
    # sweep.device auto: the best device there is (on a CUDA machine, "cuda")
    assert manifest["classes"] == ["cat", "dog"] and manifest["device"] == str(pick_device("auto"))
    assert len(manifest["fingerprints"]["model"]) == 64 and manifest["target_layer"] == "3"
    assert "torch" in manifest["versions"]


def test_config_file_and_overrides(image_folder, tmp_path):
    data, masks = image_folder
    config = tmp_path / "audit.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"factory": "tests.conftest:tiny_cnn"},
        "data": {"root": str(data), "masks": str(masks), "limit": 100},
        "sweep": {"batch_size": 4, "map_size": 8},
        "run": {"out_dir": str(tmp_path / "ignored")},
    }))
    out = tmp_path / "run"
    assert main(["audit", "--config", str(config), "--set", "data.limit=7", "--sweep.map_size=16", "--out", str(out)]) == 0
    run = load_run(out)
    assert len(run.records) == 7 and run.maps.shape == (7, 2, 16, 16)
    assert run.manifest["config"]["sweep"]["batch_size"] == 4


def test_report_rerenders_without_model(image_folder, tmp_path):
    data, masks = image_folder
    out = tmp_path / "run"
    assert main(_audit_args(data, masks, out)) == 0
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").stat().st_size > 10_000


@pytest.mark.parametrize("extra, message", [
    (["--sweep.bogus", "1"], "Unknown config key"),
    (["--sweep.batch_size", "many"], "sweep.batch_size must be of type int"),
    (["--model.factory", "tests.conftest:tiny_cnn", "--model.factory_kwargs", "{num_classes: 3}"], "3"),
    (["--model.target_layer", "nope"], "model.target_layer 'nope'"),
])
def test_bad_input_exits_2_with_a_message(image_folder, tmp_path, capsys, extra, message):
    data, masks = image_folder
    assert main(_audit_args(data, masks, tmp_path / "run", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_empty_dataset_exits_2(tmp_path, capsys):
    (tmp_path / "data" / "cat").mkdir(parents=True)
    assert main(["audit", "--data.root", str(tmp_path / "data"), "--model.factory", "tests.conftest:tiny_cnn",
                 "--out", str(tmp_path / "run")]) == 2
    assert "No images found" in capsys.readouterr().err


def test_json_logs_and_no_progress_bar_off_a_terminal(image_folder, tmp_path, capsys):
    data, masks = image_folder
    assert main(["--log-json", *_audit_args(data, masks, tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object: no progress bar in between
    assert any("accuracy" in entry["message"] for entry in parsed)
    assert all({"time", "level", "message"} <= set(entry) for entry in parsed)
    logged = [json.loads(line) for line in (tmp_path / "run" / "audit.log").read_text().splitlines()]
    assert [entry["message"] for entry in logged] == [entry["message"] for entry in parsed]


def test_fail_on_gates_on_severity(tmp_path):
    from auditor.cli import exit_code_for
    from auditor.runs import write_json

    write_json(tmp_path / "findings.json", {"schema_version": 1, "findings": [{"severity": "medium"}]})
    assert exit_code_for(tmp_path, "high") == 0
    assert exit_code_for(tmp_path, "medium") == 3
    assert exit_code_for(tmp_path, "low") == 3
    assert exit_code_for(tmp_path, "never") == 0


def test_images_without_a_mask_are_listed_in_the_report(image_folder, tmp_path):
    data, masks = image_folder
    (masks / "dog" / "3.png").unlink()
    out = tmp_path / "run"
    assert main(_audit_args(data, masks, out)) == 0
    run = load_run(out)
    row = run.records.set_index("id").loc["dog/3.png"]
    assert not row["has_mask"] and np.isnan(row["pred_energy_in_mask"]) and row["note"]
    assert sum(run.summary["notes"].values()) == 1
    html = (out / "report.html").read_text()
    section = html[html.index('id="skipped"'):]
    assert "Audited with a caveat" in section and "dog/3.png" in section
