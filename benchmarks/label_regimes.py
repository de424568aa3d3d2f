"""Label-error precision at k in both regimes, against the floor (cleanlab's self_confidence), from saved runs.

Reads the run directories the planted-bias benchmarks leave (`<out>/run-masks`, `<out>/run-no-masks`, and
`<out>/flipped.json`), ranks their suspects again with the current code (`label_error_suspects` on records.parquet
and probs.npy: no model, no audit) and prints, per run, the precision at k of that ranking and of cleanlab's
`get_label_quality_scores(method="self_confidence")` on the same probabilities; k = the flips the model predicts as
their true class, as planted.py scores it. With --keep-flips below 1, a seeded share of the flipped images is
dropped from the run first: a smaller flip share (the audit of issue 26 had 12 % of a class flipped, the benchmarks
25 %) without training again.

    python benchmarks/bias_detection.py --seed 0 --out /tmp/f0                          # flips in training and audit
    python benchmarks/bias_detection.py --seed 0 --flips audit-only --out /tmp/f0-audit  # flips in the audit only
    python benchmarks/label_regimes.py /tmp/f0 /tmp/f0-audit --keep-flips 1 0.5 0.3
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a script: make `auditor` importable from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditor.config import FindingsConfig  # noqa: E402
from auditor.findings.suspected_label_error import label_error_suspects  # noqa: E402


def precision_at_k(ranking, flipped: set[str], k: int) -> float:
    return sum(i in flipped for i in list(ranking)[:k]) / k if k else float("nan")


def cleanlab_ranking(records: pd.DataFrame, probs: np.ndarray) -> np.ndarray:
    """Every id, least likely label first, by cleanlab's self_confidence (the floor)."""
    from cleanlab.rank import get_label_quality_scores  # noqa: PLC0415

    p = np.asarray(probs, dtype=np.float64)[records["row"].to_numpy()]
    quality = get_label_quality_scores(records["label_idx"].to_numpy(), p / p.sum(axis=1, keepdims=True),
                                       method="self_confidence")
    return records["id"].to_numpy()[np.argsort(quality, kind="stable")]


def thinned(records: pd.DataFrame, flipped: set[str], keep: float, seed: int = 0) -> pd.DataFrame:
    """The records less a seeded (1 - keep) share of the flipped images."""
    if keep >= 1:
        return records
    flips = records.index[records["id"].isin(flipped)]
    drop = np.random.default_rng(seed).choice(flips, size=int(round(len(flips) * (1 - keep))), replace=False)
    return records.drop(index=drop).reset_index(drop=True)


def score_run(run_dir: Path, flipped: set[str], keep: float) -> dict:
    records = pd.read_parquet(run_dir / "records.parquet")
    probs = np.load(run_dir / "probs.npy")
    records = thinned(records, flipped, keep)
    kept = records[records["id"].isin(flipped)]
    source = kept["pred"].astype(str).value_counts().index[0]  # the class the flips came from
    k = int((kept["pred"].astype(str) == source).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about small classes
        ours = label_error_suspects(records, FindingsConfig(), probs=probs)["id"]
        floor = cleanlab_ranking(records, probs)
    return {"k": k, "label_errors.csv": precision_at_k(ours, flipped, k),
            "cleanlab self_confidence": precision_at_k(floor, flipped, k)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outs", nargs="+", type=Path, help="planted-bias benchmark --out folders")
    parser.add_argument("--keep-flips", type=float, nargs="+", default=[1.0], help="shares of the flips kept")
    args = parser.parse_args(argv)
    rows = []
    for out in args.outs:
        flipped = set(json.loads((out / "flipped.json").read_text()))
        scores = json.loads((out / "scores.json").read_text()) if (out / "scores.json").is_file() else {}
        for mode in ("masks", "no-masks"):
            if not (out / f"run-{mode}" / "probs.npy").is_file():
                continue
            for keep in args.keep_flips:
                rows.append({"family": scores.get("benchmark", "?"), "seed": scores.get("seed", "?"),
                             "flips in": scores.get("flips", "train-and-audit"), "mode": mode, "flips kept": keep,
                             **score_run(out / f"run-{mode}", flipped, keep)})
    table = pd.DataFrame(rows)
    columns = list(table.columns)
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |")
    below = table[table["label_errors.csv"] < table["cleanlab self_confidence"]]
    print(f"\nruns below the floor: {len(below)} of {len(table)}; below 0.8: {(table['label_errors.csv'] < 0.8).sum()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
