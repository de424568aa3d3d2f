"""Counterfactual maps of the findings' evidence: the same maps a full counterfactual sweep gives, for the
evidence images only, and shown in the report beside them."""

import numpy as np
import torch

from auditor.cams import get_method
from auditor.config import Config, DataConfig, ReportConfig
from auditor.data import AuditDataset, build_samples
from auditor.evidence import evidence_ids, write_evidence_counterfactuals
from auditor.runs import COUNTERFACTUAL_FILE, ShardWriter, load_run
from auditor.sweep import run_sweep
from tests.conftest import make_image_folder, tiny_cnn


def test_evidence_ids_follow_the_findings_galleries_in_order_once_each():
    findings = [{"samples": ["a", "b", "c"]}, {"samples": ["b", "d"]}, {"samples": ["e"]}]
    assert evidence_ids(findings, ReportConfig(gallery_size=2, finding_galleries=2)) == ["a", "b", "d"]
    assert evidence_ids(findings, ReportConfig(finding_galleries=0)) == []


def test_evidence_counterfactuals_equal_a_full_counterfactual_sweep_and_leave_the_model_as_it_was(tmp_path):
    data, masks = make_image_folder(tmp_path, per_class=5)
    cfg = Config(data=DataConfig(root=str(data), masks=str(masks)))
    cfg.sweep.batch_size = 3
    samples, _ = build_samples(cfg.data, None)
    dataset = AuditDataset(samples, cfg.data)
    model = tiny_cnn()
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    layer = model[3]

    methods = [get_method("gradcam"), get_method("counterfactual")]
    run_sweep(model, layer, dataset, methods, cfg, ShardWriter(tmp_path / "full", "key"), torch.device("cpu"))
    full = {}
    for path in sorted((tmp_path / "full" / "shards").glob("[0-9]*-[0-9]*.npz")):
        with np.load(path) as shard:
            full.update(zip((samples[i].id for i in shard["index"]), shard["maps_counterfactual"]))
    assert len(full) == len(samples)

    wanted = [samples[7].id, samples[2].id, samples[9].id]
    findings = [{"samples": [wanted[0], wanted[1], "not-a-sample"]}, {"samples": [wanted[2], wanted[0]]}]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert write_evidence_counterfactuals(run_dir, cfg, model, layer, dataset, findings) == 3
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters()) and not layer._forward_hooks

    with np.load(run_dir / COUNTERFACTUAL_FILE) as stored:
        assert list(stored["ids"]) == wanted and stored["maps"].dtype == np.float16
        for image_id, maps in zip(stored["ids"], stored["maps"]):
            assert maps.shape == (2, cfg.sweep.map_size, cfg.sweep.map_size)
            np.testing.assert_allclose(maps.astype(np.float32), full[image_id].astype(np.float32), atol=1e-3)
    assert any(np.asarray(full[i], np.float32).max() > 0 for i in wanted)  # not a comparison of empty maps

    # No findings: no file, and a stale one from an earlier run is removed.
    assert write_evidence_counterfactuals(run_dir, cfg, model, layer, dataset, []) == 0
    assert not (run_dir / COUNTERFACTUAL_FILE).exists()


def test_demo_report_shows_counterfactual_maps_beside_the_findings(demo_run):
    against = demo_run.counterfactual_maps()
    shown = evidence_ids(demo_run.findings(), demo_run.config.report)
    assert shown and set(shown) <= set(against)
    gradcam = {str(i): demo_run.maps[int(r)] for i, r in zip(demo_run.records["id"], demo_run.records["row"])}
    for image_id in shown:
        assert np.asarray(against[image_id], np.float32).max() in (0.0, 1.0)  # scaled to 1 like maps.npy
        assert not np.array_equal(against[image_id], gradcam[image_id])  # the negated gradients, not Grad-CAM
    html = (demo_run.path / "report.html").read_text()
    assert html.count('class="panel against"') >= min(len(shown), demo_run.config.report.gallery_size)
    assert "what argues against the true class" in html
    assert load_run(demo_run.path).counterfactual_maps().keys() == against.keys()
