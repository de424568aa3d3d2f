"""Peak memory of a whole audit does not grow with the dataset: records and maps go to disk in shards.

Runs `auditor audit` in a fresh process per dataset size (a manifest that reuses a few small PNGs under distinct
ids, so the disk stays small) and prints each run's peak RSS and the ratio between the largest and the smallest.

    python benchmarks/memory.py                 # 1,000 and 20,000 images
    python benchmarks/memory.py --sizes 1000 5000 --classes 10
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def write_manifest(folder: Path, count: int, classes: int, distinct: int = 64, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(distinct):
        image = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        mask[8:24, 8:24] = 255
        Image.fromarray(image).save(folder / f"img{i}.png")
        Image.fromarray(mask).save(folder / f"mask{i}.png")
    for i in range(count):
        k = i % distinct
        rows.append({"id": f"sample-{i:06d}", "path": f"img{k}.png", "mask": f"mask{k}.png", "label": f"c{i % classes}"})
    path = folder / f"manifest-{count}.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def one_run(manifest: str, out: str, classes: int) -> None:
    """Audit in this process, then print this process's peak RSS in MiB (`auditor.timing.peak_memory_mib`)."""
    from auditor.cli import main
    from auditor.timing import peak_memory_mib

    code = main(["audit", "--data.manifest", manifest, "--model.factory", "benchmarks.memory:small_cnn",
                 "--model.factory_kwargs", f"{{num_classes: {classes}}}", "--data.mean", "[0.5, 0.5, 0.5]",
                 "--data.std", "[0.25, 0.25, 0.25]", "--sweep.batch_size", "256", "--sweep.shard_size", "2048",
                 "--out", out])
    assert code == 0, code
    print(peak_memory_mib())


def small_cnn(num_classes: int = 10):
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 20000])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--one", nargs=2, metavar=("MANIFEST", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_run(args.one[0], args.one[1], args.classes)
        return
    repo = Path(__file__).resolve().parents[1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for count in args.sizes:
            manifest = write_manifest(folder, count, args.classes)
            started = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "benchmarks.memory", "--classes", str(args.classes), "--one", str(manifest),
                 str(folder / f"run-{count}")], cwd=repo, capture_output=True, text=True, check=True)
            rows.append((count, float(result.stdout.strip().splitlines()[-1]), time.perf_counter() - started))
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()}, Python {platform.python_version()}")
    print("| images | peak RSS (MiB) | wall (s) |")
    print("|---:|---:|---:|")
    for count, rss, wall in rows:
        print(f"| {count:,} | {rss:,.0f} | {wall:,.1f} |")
    print(f"ratio of peak RSS, {rows[-1][0]:,} vs {rows[0][0]:,} images: {rows[-1][1] / rows[0][1]:.3f}")


if __name__ == "__main__":
    main()
