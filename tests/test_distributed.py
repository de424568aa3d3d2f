"""torchrun with two CPU processes (gloo) gives the same records as a single process."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from auditor.cli import main
from auditor.runs import load_run
from tests.conftest import make_image_folder

REPO = Path(__file__).resolve().parents[1]


def test_two_gloo_ranks_equal_one_process(tmp_path):
    pytest.importorskip("torch.distributed.run")
    data, masks = make_image_folder(tmp_path, per_class=7)  # 14 images: uneven shards across ranks
    args = ["audit", "--data.root", str(data), "--data.masks", str(masks), "--model.factory", "tests.conftest:tiny_cnn",
            "--sweep.batch_size", "3", "--sweep.shard_size", "3", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
               "-m", "auditor", *args, "--out", str(tmp_path / "two")]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 1 of 2" in result.stderr
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    two, one = load_run(tmp_path / "two"), load_run(tmp_path / "one")
    pd.testing.assert_frame_equal(two.records, one.records)
    assert np.array_equal(np.asarray(two.maps), np.asarray(one.maps))
    assert two.summary["accuracy"] == one.summary["accuracy"]
    assert not (tmp_path / "two" / "shards").exists()
