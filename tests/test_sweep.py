"""The sweep loop's own behaviour: batches halved on CUDA out-of-memory errors."""

import numpy as np
import pytest
import torch

from auditor.sweep import audit_in_chunks


def _batch(count):
    return {"index": torch.arange(count), "image": torch.zeros(count, 1, 2, 2), "mask": torch.zeros(count, 2, 2),
            "has_mask": torch.zeros(count, dtype=torch.bool), "label": torch.zeros(count, dtype=torch.long),
            "note": [""] * count, "failed": []}


def test_out_of_memory_halves_the_batch_and_keeps_every_row():
    calls = []

    def audit(part):
        calls.append(len(part["index"]))
        if len(part["index"]) > 3:
            raise torch.cuda.OutOfMemoryError("fake")
        return {"index": part["index"].numpy() * 10}

    result, chunk = audit_in_chunks(audit, _batch(10), 10)
    assert chunk == 2  # 10 -> 5 -> 2
    assert result["index"].tolist() == [i * 10 for i in range(10)]
    assert calls[:2] == [10, 5] and all(c <= 2 for c in calls[2:])
    # The next batch starts at the smaller size: no failed attempt.
    calls.clear()
    result, chunk = audit_in_chunks(audit, _batch(4), chunk)
    assert calls == [2, 2] and chunk == 2


def test_out_of_memory_at_one_image_is_raised():
    def audit(part):
        raise torch.cuda.OutOfMemoryError("fake")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        audit_in_chunks(audit, _batch(2), 2)


def test_chunks_of_a_batch_equal_the_whole():
    def audit(part):
        return {"index": part["index"].numpy(), "value": part["index"].float().numpy() ** 2}

    whole, _ = audit_in_chunks(audit, _batch(7), 7)
    parts, _ = audit_in_chunks(audit, _batch(7), 3)
    for key in whole:
        assert np.array_equal(whole[key], parts[key])


def test_no_hook_left_and_state_restored_after_a_sweep_and_after_an_error(tmp_path):
    from PIL import Image

    from auditor.cams import get_method
    from auditor.config import Config, DataConfig
    from auditor.data import AuditDataset, build_samples
    from auditor.errors import AuditorError
    from auditor.runs import ShardWriter
    from auditor.sweep import run_sweep
    from tests.conftest import make_image_folder, tiny_cnn

    data, _ = make_image_folder(tmp_path, per_class=3)
    cfg = Config(data=DataConfig(root=str(data)))
    cfg.sweep.batch_size = 4
    model = tiny_cnn()
    model.train()
    model[0].requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]

    def check():
        assert all(not m._forward_hooks for m in model.modules())
        assert model.training and all(m.training for m in model.modules())
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())

    samples, _ = build_samples(cfg.data, None)
    writer = ShardWriter(tmp_path / "run", "key")
    stats = run_sweep(model, model[3], AuditDataset(samples, cfg.data), [get_method("gradcam")], cfg, writer,
                      torch.device("cpu"))
    assert stats["audited"] == 6
    check()

    Image.new("RGB", (50, 20)).save(data / "cat" / "odd-size.png")  # breaks the batch it lands in
    samples, _ = build_samples(cfg.data, None)
    with pytest.raises(AuditorError, match="different sizes"):
        run_sweep(model, model[3], AuditDataset(samples, cfg.data), [get_method("gradcam")], cfg,
                  ShardWriter(tmp_path / "run2", "key"), torch.device("cpu"))
    check()


def three_class_cnn():
    """A model factory for the CLI (tests.test_sweep:three_class_cnn)."""
    from tests.conftest import tiny_cnn

    return tiny_cnn(3)


def test_probs_npy_rows_are_the_softmax_of_the_models_logits(tmp_path):
    """probs.npy holds every image's whole probability vector, row = records.row (3 classes, so not just p_pred)."""
    import shutil

    from auditor.cli import main
    from auditor.data import AuditDataset, build_samples
    from auditor.runs import load_run
    from tests.conftest import make_image_folder

    data, _ = make_image_folder(tmp_path, classes=("a", "b"), per_class=3)
    shutil.copytree(data / "a", data / "c")  # a third class (the helper's colours allow two)
    out = tmp_path / "run"
    assert main(["audit", "--data.root", str(data), "--model.factory", "tests.test_sweep:three_class_cnn",
                 "--out", str(out), "--sweep.batch_size", "4", "--sweep.shard_size", "4",
                 "--set", "findings.enabled=false"]) == 0
    run = load_run(out)
    assert run.probs is not None and run.probs.dtype == np.float16 and run.probs.shape == (9, 3)
    samples, _ = build_samples(run.config.data, run.classes)
    dataset = AuditDataset(samples, run.config.data)
    by_id = {sample.id: i for i, sample in enumerate(samples)}
    images = torch.stack([dataset[by_id[i]]["image"] for i in run.records.sort_values("row")["id"]])
    with torch.no_grad():
        expected = three_class_cnn().eval()(images).softmax(dim=1).numpy()
    np.testing.assert_allclose(np.asarray(run.probs, dtype=np.float32), expected, atol=1e-3)
    rows = run.records["row"].to_numpy()
    np.testing.assert_allclose(run.probs[rows, run.records["pred_idx"].to_numpy()], run.records["p_pred"].to_numpy(), atol=1e-3)
    np.testing.assert_allclose(np.asarray(run.probs, dtype=np.float32).sum(axis=1), 1.0, atol=3e-3)


def test_load_run_without_probs_npy_gives_none(tmp_path):
    """Run directories written before probs.npy still load."""
    from auditor.cli import main
    from auditor.runs import load_run
    from tests.conftest import make_image_folder

    data, _ = make_image_folder(tmp_path, per_class=2)
    out = tmp_path / "run"
    assert main(["audit", "--data.root", str(data), "--model.factory", "tests.conftest:tiny_cnn", "--out", str(out),
                 "--set", "findings.enabled=false"]) == 0
    (out / "probs.npy").unlink()
    assert load_run(out).probs is None
