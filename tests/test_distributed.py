"""torchrun with two CPU processes (gloo) gives the same records as a single process."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from auditor.cli import main
from auditor.runs import load_run
from tests.conftest import make_image_folder

REPO = Path(__file__).resolve().parents[1]


def test_two_gloo_ranks_equal_one_process(tmp_path):
    pytest.importorskip("torch.distributed.run")
    # 12 images, 6 per rank, batches of 3: the same batches as one process, so the same floats bit for bit
    # (a batch of other images can round its last bits differently), and shards of 2 batches.
    data, masks = make_image_folder(tmp_path, per_class=6)
    args = ["audit", "--data.root", str(data), "--data.masks", str(masks), "--model.factory", "tests.conftest:tiny_cnn",
            "--sweep.batch_size", "3", "--sweep.shard_size", "6", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "auditor", *args, "--out", str(tmp_path / "two")]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 1 of 2" in result.stderr
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torchrun runs each rank on one thread; float sums depend on the thread count
    try:
        assert main([*args, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    two, one = load_run(tmp_path / "two"), load_run(tmp_path / "one")
    pd.testing.assert_frame_equal(two.records, one.records, check_exact=True)
    assert np.array_equal(np.asarray(two.maps), np.asarray(one.maps))
    assert two.probs is not None and two.probs.shape == (12, 2)
    assert np.array_equal(np.asarray(two.probs), np.asarray(one.probs))
    assert two.summary["accuracy"] == one.summary["accuracy"]
    assert not (tmp_path / "two" / "shards").exists()
