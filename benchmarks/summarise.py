"""Figures across planted-bias benchmark runs that no single run's table prints (README, "Measured detection rate").

For output folders of bias_detection*.py (--out), each audited with masks and/or without:

  pixel ratio    `pixel_std_ratio` of every place finding in findings.json: at a planted patch (the patch's class,
                 a region holding its centre) and at every other place
  clean above    findings above low whose classes are all clean, counted by audit mode, kind and severity
  label pairs    high `suspected_label_error` pairs other than the planted flip
  least recall   each audit's least-recognised class, what model_health's dead-class check reads
  flips flagged  of the planted flips the model predicts as their true class, how many confident learning's own
                 filter (cleanlab, prune_by_noise_rate) flags; every mistake is a suspect now
  batch norm     accuracy with the running statistics and with each batch's own (batch_norm.json, models with
                 batch norm), what model_health's batch-norm check reads

    python benchmarks/summarise.py reports/fashion-benchmark/seed-0 reports/mnist-benchmark/seed-0 ...
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditor.findings.run import read_batch_norm
from benchmarks.bias_detection import FAMILY as FASHION
from benchmarks.bias_detection_mnist import FAMILY as MNIST
from benchmarks.planted import centre_inside, normalised

FAMILIES = {family.name: family for family in (FASHION, MNIST)}


def audits(run: Path):
    """(name, mode, run directory, family) for each audit a benchmark output folder holds."""
    family = FAMILIES[json.loads((run / "scores.json").read_text())["benchmark"]]
    for mode in ("masks", "no-masks"):
        if (run / f"run-{mode}" / "findings.json").is_file():
            yield str(run), mode, run / f"run-{mode}", family


def flips_flagged(run: Path, run_dir: Path, family) -> tuple[int, int]:
    """Planted flips predicted as their true class: how many cleanlab's prune_by_noise_rate flags, of all."""
    from cleanlab.filter import find_label_issues

    records = pd.read_parquet(run_dir / "records.parquet")
    probs = np.load(run_dir / "probs.npy").astype(np.float64)[records["row"].to_numpy()]
    probs /= probs.sum(axis=1, keepdims=True)
    flipped = records["id"].isin(set(json.loads((run / "flipped.json").read_text())))
    kept = flipped & (records["pred"].astype(str) == family.classes[family.flip.src])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flagged = find_label_issues(records["label_idx"].to_numpy(), probs, filter_by="prune_by_noise_rate", n_jobs=1)
    return int((kept & flagged).sum()), int(kept.sum())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="output folders of bias_detection*.py (--out)")
    args = parser.parse_args(argv)
    planted_ratios, other_ratios, clean_above, label_pairs = [], [], Counter(), []
    print("| audit | mode | least-recognised class (recall) | flips flagged by prune_by_noise_rate | batch norm: "
          "running -> batch statistics |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        for name, mode, run_dir, family in audits(run):
            patches = {family.classes[c.cls]: normalised(c.box, family.canvas) for c in family.cues if c.box}
            clean = {family.classes[c] for c in family.clean}
            flip = [family.classes[family.flip.dst], family.classes[family.flip.src]]
            for f in json.loads((run_dir / "findings.json").read_text())["findings"]:
                ratio = f["metrics"].get("pixel_std_ratio")
                if ratio is not None:
                    cls = f["classes"][0]
                    at_patch = cls in patches and f.get("region") and centre_inside(f["region"], patches[cls])
                    (planted_ratios if at_patch else other_ratios).append(ratio)
                if f["severity"] != "low" and all(c in clean for c in f["classes"]):
                    clean_above[mode, f["kind"], f["severity"]] += 1
                if f["kind"] == "suspected_label_error" and f["severity"] == "high" and f["classes"] != flip:
                    label_pairs.append(f"{name} {mode}: {' -> '.join(f['classes'])}")
            records = pd.read_parquet(run_dir / "records.parquet", columns=["label", "correct"])
            recall = records.groupby("label")["correct"].mean()
            kept, of = flips_flagged(run, run_dir, family)
            bn = read_batch_norm(run_dir)
            bn = f"{bn['accuracy']:.3f} -> {bn['batch_stats_accuracy']:.3f}" if bn else "-"
            print(f"| {name} | {mode} | {recall.idxmin()} ({recall.min():.3f}) | {kept} of {of} | {bn} |")
    print(f"\npixel_std_ratio at planted patches: {min(planted_ratios, default=np.nan):.4f}-"
          f"{max(planted_ratios, default=np.nan):.4f} ({len(planted_ratios)} findings); every other place: "
          f"{min(other_ratios, default=np.nan):.4f} and up ({len(other_ratios)})")
    print("findings above low on clean classes (mode, kind, severity):")
    for key, count in sorted(clean_above.items()):
        print(f"  {key}: {count}")
    print("high label-error pairs other than the planted flip:", "; ".join(label_pairs) or "none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
