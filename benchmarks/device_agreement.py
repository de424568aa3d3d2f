"""Does an audit on a GPU (bf16 autocast, channels_last, cuDNN) find what the same audit finds on the CPU in float32?

Audit the same data with the same model twice, once with `--device cpu` and once with `--device cuda`, then
compare the two run directories: findings (kind, classes, severity, region), label-error ranking, predictions and
the Grad-CAM maps themselves. A nightly job on a GPU must not tell a reviewer something else than the CPU would.

    auditor audit --config C --device cpu --out runs/cpu
    auditor audit --config C --device cuda --out runs/cuda
    python benchmarks/device_agreement.py runs/cpu runs/cuda
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.route_equivalence import finding_key


def map_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each pair of maps [N, K, H, W] -> [N, K]; NaN where a map is constant."""
    x = a.reshape(*a.shape[:2], -1).astype(np.float64)
    y = b.reshape(*b.shape[:2], -1).astype(np.float64)
    x -= x.mean(-1, keepdims=True)
    y -= y.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x * y).sum(-1) / np.sqrt((x * x).sum(-1) * (y * y).sum(-1))


def top_k_overlap(a: list[str], b: list[str], k: int) -> float:
    """Share of the first k label-error suspects of `a` that are among the first k of `b`."""
    k = min(k, len(a), len(b))
    return len(set(a[:k]) & set(b[:k])) / k if k else float("nan")


def compare(a: Path, b: Path) -> dict:
    records_a, records_b = pd.read_parquet(a / "records.parquet"), pd.read_parquet(b / "records.parquet")
    if records_a["id"].tolist() != records_b["id"].tolist():
        raise SystemExit("device_agreement.py: the two runs audited different images")
    fa = [finding_key(f) for f in json.loads((a / "findings.json").read_text())["findings"]]
    fb = [finding_key(f) for f in json.loads((b / "findings.json").read_text())["findings"]]
    la = pd.read_csv(a / "label_errors.csv", keep_default_na=False)["id"].tolist()
    lb = pd.read_csv(b / "label_errors.csv", keep_default_na=False)["id"].tolist()
    maps_a, maps_b = (np.load(run / "maps.npy").astype(np.float32) for run in (a, b))  # float16 on disk
    correlation = map_correlations(maps_a, maps_b)
    difference = np.abs(maps_a - maps_b).max(axis=(2, 3))
    return {
        "images": len(records_a),
        "accuracy": (float(records_a["correct"].mean()), float(records_b["correct"].mean())),
        "same_prediction": float((records_a["pred"] == records_b["pred"]).mean()),
        "findings": (len(fa), len(fb)),
        "only_a": sorted(set(fa) - set(fb), key=str), "only_b": sorted(set(fb) - set(fa), key=str),
        "label_errors": (len(la), len(lb)),
        "top_k_overlap": {k: top_k_overlap(la, lb, k) for k in (10, 50, 100)},
        "map_correlation_median": np.nanmedian(correlation, axis=0).tolist(),
        "map_correlation_p1": np.nanpercentile(correlation, 1, axis=0).tolist(),
        "map_max_abs_difference_p99": np.percentile(difference, 99, axis=0).tolist(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path, help="e.g. the CPU run")
    parser.add_argument("run_b", type=Path, help="e.g. the CUDA run of the same data and model")
    args = parser.parse_args(argv)
    result = compare(args.run_a, args.run_b)
    print(f"A: {args.run_a}\nB: {args.run_b}\n")
    print("| | A | B |\n|---|---:|---:|")
    print(f"| images | {result['images']} | {result['images']} |")
    print("| accuracy | {:.4f} | {:.4f} |".format(*result["accuracy"]))
    print("| findings | {} | {} |".format(*result["findings"]))
    print("| label-error suspects | {} | {} |".format(*result["label_errors"]))
    print(f"\nsame prediction: {result['same_prediction']:.3f} of images")
    print("findings only in A: {}; only in B: {} (kind, classes, severity, region)".format(
        len(result["only_a"]), len(result["only_b"])))
    for key in result["only_a"]:
        print(f"  only A: {key}")
    for key in result["only_b"]:
        print(f"  only B: {key}")
    print("label-error ranking, share of A's first k among B's first k: " + ", ".join(
        f"k={k}: {v:.2f}" for k, v in result["top_k_overlap"].items()))
    print("maps [predicted class, true class]: correlation median {}, 1st percentile {}; largest difference "
          "(maps scaled to a peak of 1), 99th percentile over images {}".format(
              *(np.round(result[key], 4).tolist() for key in
                ("map_correlation_median", "map_correlation_p1", "map_max_abs_difference_p99"))))
    return 0 if not result["only_a"] and not result["only_b"] else 1


if __name__ == "__main__":
    sys.exit(main())
