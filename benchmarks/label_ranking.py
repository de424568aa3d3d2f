"""How long ranking a large run's label-error suspects takes, with the pair AUC by ranks (`rank_auc`) against
sklearn's roc_auc_score, measured in one run on the same synthetic data (a ratio, since machines are shared); and,
in an audit's Context, the second ordering `with_shortcut_costs` asks for once a class needs its cue.

Every mistake is a suspect, so a run of N images and C classes has thousands of confused pairs, each needing the
AUC of its label independence. The data: N images, C classes, 30 % of them confidently given another class.

    python benchmarks/label_ranking.py                 # 50,000 images x 1,000 classes
    python benchmarks/label_ranking.py --images 5000 --classes 100
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a script: make `auditor` importable from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditor.config import FindingsConfig
from auditor.findings import suspected_label_error
from auditor.findings.context import Context


def synthetic_run(n: int, k: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Records and float16 probabilities of a run without masks: 30 % of the images confidently another class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0.0, 1.0, (n, k))
    logits[np.arange(n), labels] += 6.0
    wrong = rng.random(n) < 0.3
    logits[np.flatnonzero(wrong), rng.integers(0, k, n)[wrong]] += 9.0
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    pred = probs.argmax(axis=1)
    rows = np.arange(n)
    records = pd.DataFrame({
        "row": rows, "id": rows.astype(str), "label_idx": labels, "pred_idx": pred, "label": labels.astype(str),
        "pred": pred.astype(str), "p_true": probs[rows, labels], "p_pred": probs[rows, pred], "correct": pred == labels,
        "has_mask": False, "mask_area": np.nan, "pred_energy_in_mask": np.nan, "true_energy_in_mask": np.nan,
    })  # fmt: skip
    return records, probs.astype(np.float16)


def sklearn_auc(positive, score) -> float:
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(positive, score) if 0 < np.sum(positive) < len(positive) else 0.5


def timed(records: pd.DataFrame, probs: np.ndarray) -> tuple[pd.DataFrame, float]:
    start = time.perf_counter()
    suspects = suspected_label_error.label_error_suspects(records, FindingsConfig(), probs=probs)
    return suspects, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=1_000)
    args = parser.parse_args(argv)
    records, probs = synthetic_run(args.images, args.classes)
    ranked, by_ranks = timed(records, probs)
    with mock.patch.object(suspected_label_error, "rank_auc", sklearn_auc):
        reference, by_sklearn = timed(records, probs)
    pairs = ranked.groupby(["label_idx", "pred_idx"]).ngroups
    print(f"{args.images} images x {args.classes} classes: {len(ranked)} suspects in {pairs} confused pairs")
    print(f"label_error_suspects with rank_auc: {by_ranks:.1f} s; with sklearn's roc_auc_score: {by_sklearn:.1f} s; "
          f"ratio {by_sklearn / by_ranks:.1f}x")
    print(f"same order: {list(ranked['id']) == list(reference['id'])}")
    context = Context(records, None, None, [str(c) for c in range(args.classes)], FindingsConfig(), probs=probs)
    start = time.perf_counter()
    suspected_label_error.suspects_of(context)
    first = time.perf_counter() - start
    start = time.perf_counter()
    suspected_label_error.suspects_of(context, {"0"})  # as with_shortcut_costs, once a class needs its cue
    print(f"in an audit (Context): first order {first:.1f} s; again with one shortcut class "
          f"{time.perf_counter() - start:.2f} s (the scores are cached, only the order is redone)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
