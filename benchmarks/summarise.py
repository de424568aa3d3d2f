"""Figures across planted-bias benchmark runs that no single run's table prints (benchmarks/README.md, "Measured
detection rate").

For output folders of bias_detection*.py (--out), each audited with masks and/or without:

  pixel ratio    `pixel_std_ratio` of every place finding (spatial_shortcut, strategy_cluster) in findings.json,
                 by mode: at a planted patch (the patch's class, a region holding its centre) and at every other
                 place
  above low      findings above low, counted by audit mode, kind and severity: those whose classes are all clean,
                 and the rest (a planted class among them)
  label pairs    high `suspected_label_error` pairs other than the planted flip
  least recall   each audit's least-recognised class, what model_health's dead-class check reads
  flips flagged  of the planted flips the model predicts as their true class, how many confident learning's own
                 filter (cleanlab, prune_by_noise_rate) flags; every mistake is a suspect now
  batch norm     accuracy with the running statistics and with each batch's own (batch_norm.json, models with
                 batch norm), what model_health's batch-norm check reads
  planted cues   from each run's scores.json: cues found at medium or above with a region holding them, of those
                 the model uses, by cue and mode (label flips apart), the misses, and label-error precision at k
  patch share    per planted patch: the median share of its class's correct predicted-class maps inside the
                 patch, against the largest such median of another class and the patch's share of the image

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

from auditor.causal import region_mask
from auditor.findings.place_evidence import PLACE_KINDS
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


def patch_shares(run_dir: Path, patches: dict[str, list[float]]) -> list[tuple[str, float, float, float]]:
    """(class, its median share in the patch, the largest other class's median there, the patch's area share) for
    each planted patch, over correct predictions' predicted-class maps (attention = the map's positive part)."""
    records = pd.read_parquet(run_dir / "records.parquet", columns=["row", "label", "correct"])
    records = records[records["correct"]]
    maps = np.clip(np.asarray(np.load(run_dir / "maps.npy", mmap_mode="r")[records["row"].to_numpy(), 0],
                              dtype=np.float32), 0, None)  # fmt: skip
    maps /= np.maximum(maps.sum(axis=(1, 2), keepdims=True), 1e-12)
    out = []
    for cls, box in patches.items():
        inside = region_mask(box, *maps.shape[1:]).numpy()
        medians = pd.Series(maps[:, inside].sum(axis=1)).groupby(records["label"].astype(str).to_numpy()).median()
        out.append((cls, float(medians.get(cls, np.nan)), float(medians.drop(cls, errors="ignore").max()),
                    float(inside.mean())))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="output folders of bias_detection*.py (--out)")
    args = parser.parse_args(argv)
    planted_ratios, other_ratios, above, label_pairs = [], [], Counter(), []
    cues, misses, precisions, shares = Counter(), [], [], []
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
                if ratio is not None and f["kind"] in PLACE_KINDS:  # a repeated mark is judged by the model alone
                    cls = f["classes"][0]
                    at_patch = cls in patches and f.get("region") and centre_inside(f["region"], patches[cls])
                    (planted_ratios if at_patch else other_ratios).append((ratio, mode))
                if f["severity"] != "low":
                    clean_or_not = "clean" if all(c in clean for c in f["classes"]) else "planted"
                    above[clean_or_not, mode, f["kind"], f["severity"]] += 1
                if f["kind"] == "suspected_label_error" and f["severity"] == "high" and f["classes"] != flip:
                    label_pairs.append(f"{name} {mode}: {' -> '.join(f['classes'])}")
            scores = json.loads((run / "scores.json").read_text())["runs"][mode]
            for row in scores["rows"]:
                if row["bias"] != "label noise" and row["status"] in ("found", "missed"):
                    cues[row["bias"], mode, row["status"]] += 1
                    if row["status"] == "missed":
                        misses.append(f"{name} {mode}: {row['bias']} ({row['class']})")
            precisions.append(scores["label_errors"]["precision_at_k"])
            shares += [(name, mode, *share) for share in patch_shares(run_dir, patches)]
            records = pd.read_parquet(run_dir / "records.parquet", columns=["label", "correct"])
            recall = records.groupby("label")["correct"].mean()
            kept, of = flips_flagged(run, run_dir, family)
            bn = read_batch_norm(run_dir)
            bn = f"{bn['accuracy']:.3f} -> {bn['batch_stats_accuracy']:.3f}" if bn else "-"
            print(f"| {name} | {mode} | {recall.idxmin()} ({recall.min():.3f}) | {kept} of {of} | {bn} |")
    print()
    for mode in ("masks", "no-masks"):  # without masks the ratio decides; with masks the masks do
        planted = [r for r, m in planted_ratios if m == mode]
        other = [r for r, m in other_ratios if m == mode]
        print(f"pixel_std_ratio, {mode}: at planted patches {min(planted, default=np.nan):.4f}-"
              f"{max(planted, default=np.nan):.4f} ({len(planted)} findings); every other place "
              f"{min(other, default=np.nan):.4f} and up ({len(other)})")
    for which in ("clean", "planted"):
        print(f"findings above low on {which} classes (mode, kind, severity):")
        for (clean_or_not, *key), count in sorted(above.items()):
            if clean_or_not == which:
                print(f"  {tuple(key)}: {count}")
    print("high label-error pairs other than the planted flip:", "; ".join(label_pairs) or "none")
    print("planted cues found, of those the model uses (cue, mode):")
    for bias, mode in sorted({(bias, mode) for bias, mode, _ in cues}):
        found, missed = cues[bias, mode, "found"], cues[bias, mode, "missed"]
        print(f"  {bias}, {mode}: {found} of {found + missed}")
    print(f"  all: {sum(v for k, v in cues.items() if k[2] == 'found')} of {sum(cues.values())}; missed: "
          + ("; ".join(misses) or "none"))
    measured = [p for p in precisions if p is not None]
    print(f"label-error precision at k: {min(measured, default=np.nan):.2f}-{max(measured, default=np.nan):.2f}, "
          f">= 0.8 on {sum(p >= 0.8 for p in measured)} of {len(precisions)} audits")
    print("\n| audit | mode | patch class | its median share in the patch | largest other class's | patch area |")
    print("|---|---|---|---:|---:|---:|")
    for name, mode, cls, own, other, area in shares:
        print(f"| {name} | {mode} | {cls} | {own:.3f} | {other:.3f} | {area:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
