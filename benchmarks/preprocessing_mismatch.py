"""A working model audited with the wrong normalisation: does model_health say so, and why?

The commonest way to audit a good model as a bad one is a preprocessing other than training's: no normalisation,
ImageNet's mean and std copied in, a shifted mean, a wider std. This re-audits a planted-bias benchmark's trained
model (an output folder of bias_detection*.py, --out) without masks under each, beside its own normalisation,
and prints the accuracy as swept, the accuracy with batch statistics (batch_norm.json, models with batch norm
only) and model_health.

    python benchmarks/bias_detection.py --seed 1 --arch resnet --out reports/fm-resnet-1
    python benchmarks/preprocessing_mismatch.py reports/fm-resnet-1
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import yaml

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditor.findings.run import read_batch_norm
from benchmarks.planted import audit, model_health, quiet_logging


def variants(mean: float, std: float) -> dict[str, tuple[float, float]]:
    """Name -> (mean, std): the model's own, then the mistakes."""
    return {
        "as trained": (mean, std),
        "no normalisation (0, 1)": (0.0, 1.0),
        "ImageNet's (0.485, 0.229)": (0.485, 0.229),
        "mean + 0.05": (mean + 0.05, std),
        "std x 1.4": (mean, std * 1.4),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="an output folder of bias_detection*.py (--out) with config-no-masks")
    args = parser.parse_args(argv)
    quiet_logging()
    base = yaml.safe_load((args.run / "config-no-masks" / "config.yaml").read_text())
    (mean,), (std,) = base["data"]["mean"], base["data"]["std"]
    print(f"| {args.run} | mean | std | accuracy | sample: running -> batch statistics | model_health |")
    print("|---|---:|---:|---:|---|---|")
    for name, (m, s) in variants(mean, std).items():
        config = copy.deepcopy(base)
        config["data"].update(mean=[m], std=[s])
        slug = re.sub(r"[^a-z0-9.]+", "-", name.split(" (")[0].lower()).strip("-")
        config["run"]["out_dir"] = str(args.run / "mismatch" / slug / "run")
        run_dir, _, summary = audit(config, args.run / "mismatch" / slug)
        figures = read_batch_norm(run_dir)
        batch = f"{figures['accuracy']:.3f} -> {figures['batch_stats_accuracy']:.3f}" if figures else "-"
        print(f"| {name} | {m:g} | {s:g} | {summary['accuracy']:.3f} | {batch} | {model_health(summary)} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
