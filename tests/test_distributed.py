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


def test_cpu_ranks_use_gloo_even_where_a_gpu_is_visible(monkeypatch):
    # On a one-GPU machine, torchrun ... --device cpu picked NCCL and both ranks claimed GPU 0.
    from auditor.distributed import backend_for

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert backend_for(torch.device("cpu")) == "gloo"
    assert backend_for(torch.device("cuda")) == "nccl"


def test_more_gpu_ranks_than_gpus_is_a_clear_error(monkeypatch):
    from auditor.distributed import Ranks, init_ranks
    from auditor.errors import AuditorError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(AuditorError, match="local rank 1, but this node has 1 visible GPU"):
        init_ranks(torch.device("cuda"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_ranks(torch.device("cuda")) == Ranks()  # a plain launch is one rank, whatever the GPUs


def test_nccl_barrier_waits_on_the_ranks_own_gpu(monkeypatch):
    import torch.distributed as dist

    from auditor.distributed import Ranks, barrier

    calls = []
    monkeypatch.setattr(dist, "get_backend", lambda: "nccl")
    monkeypatch.setattr(dist, "barrier", lambda **kwargs: calls.append(kwargs))
    barrier(Ranks(rank=3, world=4, local_rank=1))
    barrier(Ranks())  # one rank: no barrier at all
    assert calls == [{"device_ids": [1]}]
