"""Does a model audited as a torch.export program get the findings it gets as a module? (the .pt2 route, end to end)

A planted-bias benchmark run (bias_detection*.py --out FOLDER) leaves its trained model, its audit data and the
config of each audit in FOLDER. This exports that model with torch.export (a dynamic batch dimension, as
`auditor` asks users to), audits the same data through `model.exported` with every other setting the same, and
compares the two findings.json of each mode: the kinds, classes, severities and regions must match, and the
label-error ranking (label_errors.csv) must list the same images in the same order.

    python benchmarks/route_equivalence.py reports/fashion-benchmark/seed-0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import torch
import yaml

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditor.config import DataConfig, ModelConfig
from auditor.data import AuditDataset, build_samples
from auditor.models import open_model
from benchmarks.planted import audit, quiet_logging, save_exported


def export_model(model_config: dict, example: torch.Tensor, path: Path) -> list[str] | None:
    """The config's model (any route auditor loads) saved as a torch.export program with a dynamic batch; returns
    its class names in logit order (a program keeps none: a Hugging Face folder's id2label must travel along)."""
    loaded = open_model(ModelConfig(**model_config))
    save_exported(loaded.module, example, path)
    return model_config.get("classes") or loaded.classes


def finding_key(finding: dict) -> tuple:
    region = tuple(round(v, 3) for v in finding["region"]) if finding.get("region") else None
    return finding["kind"], tuple(finding["classes"]), finding["severity"], region


def compare(a: Path, b: Path) -> dict:
    """Findings of run directory a against b, and their label-error rankings."""
    fa = [finding_key(f) for f in json.loads((a / "findings.json").read_text())["findings"]]
    fb = [finding_key(f) for f in json.loads((b / "findings.json").read_text())["findings"]]
    la = pd.read_csv(a / "label_errors.csv", keep_default_na=False)["id"].tolist()
    lb = pd.read_csv(b / "label_errors.csv", keep_default_na=False)["id"].tolist()
    return {"findings": len(fa), "only_module": sorted(set(fa) - set(fb), key=str),
            "only_exported": sorted(set(fb) - set(fa), key=str), "same_order": fa == fb,
            "label_errors": len(la), "same_ranking": la == lb}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a bias_detection*.py --out folder")
    args = parser.parse_args(argv)
    quiet_logging()
    configs = [c for c in sorted(args.folder.glob("config-*/config.yaml")) if not c.parent.name.endswith("-exported")]
    if not configs:
        sys.exit(f"route_equivalence: {args.folder} holds no config-*/config.yaml (run a benchmark with --out).")
    # One program for every mode, exported before any audit: in one process, exporting again after auditing a
    # Hugging Face program failed inside torch.export's input checks (torch 2.14).
    first = yaml.safe_load(configs[0].read_text())
    data = DataConfig(**first["data"])
    example = AuditDataset(build_samples(data, None)[0][:1], data)[0]["image"][None].repeat(2, 1, 1, 1)
    exported = args.folder / "model.pt2"
    classes = export_model(first["model"], example, exported)
    rows = []
    for path in configs:
        mode = path.parent.name.removeprefix("config-")
        config = yaml.safe_load(path.read_text())
        module_run = Path(config["run"]["out_dir"])
        config["model"] = {"exported": str(exported), **({"classes": classes} if classes else {})}
        config["run"]["out_dir"] = str(args.folder / f"run-{mode}-exported")
        run_dir, _, _ = audit(config, args.folder / f"config-{mode}-exported")
        rows.append((mode, compare(module_run, run_dir)))
    print(f"\n| {args.folder} | findings | same findings | same order | label_errors.csv rows | same ranking |")
    print("|---|---:|---|---|---:|---|")
    for mode, r in rows:
        same = not r["only_module"] and not r["only_exported"]
        print(f"| {mode} | {r['findings']} | {'yes' if same else 'no'} | {'yes' if r['same_order'] else 'no'} | "
              f"{r['label_errors']} | {'yes' if r['same_ranking'] else 'no'} |")
        for name in ("only_module", "only_exported"):
            for key in r[name]:
                print(f"  {name.replace('_', ' ')}: {key}")
    return 0 if all(not r["only_module"] and not r["only_exported"] for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
