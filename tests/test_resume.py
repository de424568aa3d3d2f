"""A killed run loses nothing; the same command resumes; the same inputs give the same records, bit for bit."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from auditor.cli import main
from auditor.runs import load_run
from tests.conftest import make_image_folder

REPO = Path(__file__).resolve().parents[1]


def _args(data, masks, out):
    return ["audit", "--data.root", str(data), "--data.masks", str(masks), "--model.factory", "tests.conftest:slow_cnn",
            "--out", str(out), "--sweep.batch_size", "4", "--sweep.shard_size", "8"]


def _assert_same_run(a, b):
    pd.testing.assert_frame_equal(a.records, b.records)
    assert np.array_equal(np.asarray(a.maps), np.asarray(b.maps))
    assert np.array_equal(np.asarray(a.masks), np.asarray(b.masks))
    assert a.probs is not None and a.probs.shape == (len(a.records), len(a.classes))
    assert np.array_equal(np.asarray(a.probs), np.asarray(b.probs))


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    data, masks = make_image_folder(tmp_path, per_class=20)
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "auditor", *_args(data, masks, killed)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = killed / "shards"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shards.glob("[0-9]*.npz"))) < 2:
        assert process.poll() is None, "the run finished before it could be killed"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = sorted(p.name for p in shards.glob("[0-9]*.npz"))
    assert 2 <= len(finished) < 5  # 40 images in shards of 8: killed part-way
    assert not (killed / "records.parquet").exists()

    assert main(_args(data, masks, killed)) == 0
    log = (killed / "audit.log").read_text()
    assert "resuming after" in log
    assert main(_args(data, masks, tmp_path / "whole")) == 0
    _assert_same_run(load_run(killed), load_run(tmp_path / "whole"))


def test_same_inputs_same_records_bit_for_bit(tmp_path):
    data, masks = make_image_folder(tmp_path, per_class=5)
    args = ["audit", "--data.root", str(data), "--data.masks", str(masks), "--model.factory", "tests.conftest:tiny_cnn",
            "--sweep.batch_size", "3"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--sweep.shard_size", "2"]) == 0
    _assert_same_run(load_run(tmp_path / "a"), load_run(tmp_path / "b"))
