"""Does a class need its own backgrounds? The causal check's Mixed-Same / Mixed-Rand test on every class of
planted-bias benchmark runs.

The causal check pastes each object (the square around it) onto other images of its class and onto images of
other classes (`auditor.causal.mixed_backgrounds`, after Xiao et al., ICLR 2021) and calls the accuracy lost
between the two the class's background gap; a flagged class whose gap exceeds the unflagged classes' median by
`findings.causal_min_background_gap` (0.3) is confirmed. The audit measures only flagged classes and a few
controls; this script measures every class of a run (the run's own model and masks, up to
`findings.causal_mixed_images` images per class) and prints each class's gap and its excess over the median of
the other classes, so the margin between the planted background class and the clean classes can be read off.

    python benchmarks/bias_detection.py --seed 0 --out reports/bias-fashion-0   # first: a run to read
    python benchmarks/background_gap.py reports/bias-fashion-0 [more run folders ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditor.pipeline import prepare
from auditor.causal import causal_check, causal_indices
from auditor.config import load_config
from auditor.sweep import make_loader


def class_gaps(run: Path) -> dict[str, tuple[float, float]]:
    """Class -> (Mixed-Same, Mixed-Rand accuracy) over every class of the run's masked audit images."""
    cfg = load_config(run / "config-masks" / "config.yaml")
    classes, samples, dataset, model, *_ = prepare(cfg)
    per_class = cfg.findings.causal_mixed_images
    indices = causal_indices(samples, set(range(len(classes))), per_class * len(classes), cfg.findings.seed)
    loader = make_loader(dataset, indices, cfg, torch.device("cpu"))
    table = causal_check(model, loader, classes, {}, "cpu", seed=cfg.findings.seed, mixed_per_class=per_class)
    return {
        str(row["class"]): (row["mixed_same_accuracy"], row["mixed_rand_accuracy"])
        for row in table.to_dict("records") if np.isfinite(row["mixed_same_accuracy"])
    }  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="output folders of bias_detection*.py (--out)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    threshold = load_config(None).findings.causal_min_background_gap
    summary = []
    for run in args.runs:
        scores = json.loads((run / "scores.json").read_text())
        background = _background_class(scores)
        mixed = class_gaps(run)
        gaps = {name: same - rand for name, (same, rand) in mixed.items()}
        excess = {name: gap - float(np.median([g for o, g in gaps.items() if o != name])) for name, gap in gaps.items()}
        print(f"\n{run}: gap = Mixed-Same - Mixed-Rand accuracy; excess = gap - the other classes' median "
              f"(* the background cue's class, + another planted class)")
        print("| class | same | rand | gap | excess |\n|---|---|---|---|---|")
        for name, gap in gaps.items():
            mark = " *" if name == background else (" +" if name not in scores["clean"] else "")
            flag = f"**{excess[name]:.2f}**" if excess[name] >= threshold else f"{excess[name]:.2f}"
            print(f"| {name}{mark} | {mixed[name][0]:.2f} | {mixed[name][1]:.2f} | {gap:.2f} | {flag} |")
        clean = [excess[c] for c in scores["clean"] if c in excess]
        summary.append((run.name, excess.get(background, float("nan")), max(clean, default=float("nan"))))
    print("\n| run | background class excess | largest clean-class excess |\n|---|---|---|")
    for name, planted, clean in summary:
        print(f"| {name} | {planted:.2f} | {clean:.2f} |")
    return 0


def _background_class(scores: dict) -> str | None:
    """The class carrying the background cue, from the run's scores.json."""
    for rows in (run["rows"] for run in scores["runs"].values()):
        for row in rows:
            if row["bias"] == "background":
                return row["class"]
    return None


if __name__ == "__main__":
    raise SystemExit(main())
