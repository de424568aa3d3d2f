"""Label-error precision at k in both regimes, against the floor (cleanlab's self_confidence), from saved runs.

Reads the run directories the planted-bias benchmarks leave (`<out>/run-masks`, `<out>/run-no-masks`, and
`<out>/flipped.json`), ranks their suspects again with the current code (`label_error_suspects` on records.parquet
and probs.npy, with the classes the model recognises by a shortcut cue in the run's findings.json as the audit
ranks them, `shortcut_cues`: no model, no audit) and prints, per run, the precision at k of that ranking and of
cleanlab's `get_label_quality_scores(method="self_confidence")` on the same probabilities; k = the flips the model
predicts as their true class, as planted.py scores it. With --keep-flips below 1, a seeded share of the flipped images is
dropped from the run first: a smaller flip share (the audit of issue 26 had 12 % of a class flipped, the benchmarks
25 %) without training again. With --into-cue-class N, a third regime, simulated: N images of the flips' source class
that the model gets right are relabelled, per class the model recognises by a shortcut cue (the run's findings:
`shortcut_cues`), as that class. Those are label errors into a class whose images without the cue the model also
mistakes, so the model alone cannot tell the two apart. The model never learned these labels, so the simulation is
exact for a held-out set (their true-class maps were not drawn: the mask evidence of the label is left out).
With --scatter N, the regime of most real test sets: N right predictions, not flipped, each relabelled as a seeded
random other class, so the errors spread over many pairs instead of filling one (ImageNet's validation errors are
spread like this); with --keep-flips 0 they are the only errors. Exact for a held-out set, as above.

    python benchmarks/bias_detection.py --seed 0 --out /tmp/f0                          # flips in training and audit
    python benchmarks/bias_detection.py --seed 0 --flips audit-only --out /tmp/f0-audit  # flips in the audit only
    python benchmarks/label_regimes.py /tmp/f0 /tmp/f0-audit --keep-flips 1 0.5 0.3
    python benchmarks/label_regimes.py /tmp/f0 /tmp/f0-audit --keep-flips 1 0.3 --into-cue-class 0 10 30
    python benchmarks/label_regimes.py /tmp/f0 /tmp/f0-audit --keep-flips 1 0 --scatter 40 120
    python benchmarks/label_regimes.py /tmp/f0 --keep-flips 0.3 --pairs   # which pairs rank first, and why
    python benchmarks/label_regimes.py /tmp/f0 /tmp/f0-audit --keep-flips 1 0 --scatter 0 40 --fault-discount 0 0.01 1

With --fault-discount, the audit's order is mixed with cleanlab's (`discounted`): measured on 15 saved runs, every
mix that lifts the spread errors costs the planted flips as much (benchmarks/README.md).
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
from auditor.findings.record import Finding  # noqa: E402
from auditor.findings.suspected_label_error import label_error_suspects, shortcut_cues, sureness  # noqa: E402


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


def relabel(records: pd.DataFrame, probs: np.ndarray, pick, label_idx, labels: list[str]) -> None:
    """In place: the `pick` rows labelled `label_idx` / `labels`, wrong now, with the model's probability of the new
    label as p_true, and no true-class map figures (the sweep drew none for the new label)."""
    records.loc[pick, "label_idx"] = label_idx
    records.loc[pick, "label"] = labels
    records.loc[pick, "correct"] = False
    records.loc[pick, "p_true"] = np.asarray(probs[records.loc[pick, "row"].to_numpy(), label_idx], dtype=np.float32)
    records.loc[pick, [c for c in records.columns if c.startswith("true_")]] = np.nan


def relabelled_into(records: pd.DataFrame, probs: np.ndarray, source: str, flipped: set[str], into: list[str],
                    n: int, seed: int = 0) -> tuple[pd.DataFrame, set[str]]:
    """The records with, per class in `into`, n seeded images of `source` that the model gets right (and that
    were not flipped) labelled that class; and their ids."""
    if not n or not into:
        return records, set()
    records = records.copy()
    index = dict(zip(records["label"].astype(str), records["label_idx"]))
    rng = np.random.default_rng([seed, 11])
    moved: set[str] = set()
    for name in (name for name in into if name != source):
        pool = records.index[(records["label"].astype(str) == source) & records["correct"].astype(bool)
                             & ~records["id"].isin(flipped | moved)]
        pick = rng.choice(pool, size=min(n, len(pool)), replace=False)
        relabel(records, probs, pick, np.full(len(pick), index[name]), [name] * len(pick))
        moved |= set(records.loc[pick, "id"])
    return records, moved


def scattered(records: pd.DataFrame, probs: np.ndarray, flipped: set[str], n: int,
              seed: int = 0) -> tuple[pd.DataFrame, set[str]]:
    """The records with n seeded images that the model gets right (and that were not flipped) each labelled a
    seeded random other class; and their ids."""
    if not n:
        return records, set()
    records = records.copy()
    rng = np.random.default_rng([seed, 23])
    names = dict(zip(records["label_idx"], records["label"].astype(str)))
    pool = records.index[records["correct"].astype(bool) & ~records["id"].isin(flipped)]
    pick = rng.choice(pool, size=min(n, len(pool)), replace=False)
    new = (records.loc[pick, "label_idx"].to_numpy() + rng.integers(1, probs.shape[1], size=len(pick))) % probs.shape[1]
    relabel(records, probs, pick, new, [names[t] for t in new])
    return records, set(records.loc[pick, "id"])


def discounted(ranked: pd.DataFrame, discount: float) -> pd.Series:
    """The ids in the order where a suspect of a labelling-fault pair (suspicion above 1) ranks as if the model gave
    its label `discount` x its probability, and every other suspect by its probability (cleanlab's order): 0 is the
    audit's order (the fault pairs first), 1 cleanlab's over the same suspects; between, the two orders mixed."""
    if discount <= 0:
        return ranked["id"]
    p_label = ranked["p_true"].fillna(1.0).astype(float)
    key = p_label.where(ranked["suspicion"] <= 1, p_label * discount)
    return ranked.assign(key=-key).sort_values(["key", "p_pred"], ascending=False, kind="stable")["id"]


def pair_summary(ranked: pd.DataFrame, errors: set[str], cfg: FindingsConfig) -> str:
    """In ranking order, the pairs of the fault tier (marked *) and the pairs holding 3 or more of the errors:
    label>pred, its sure mistakes (`sureness`), its label independence and how surely (independence_low, which
    decides the fault tier), the errors in it."""
    sure = sureness(ranked["p_pred"], ranked["threshold"], cfg) >= 1.0
    flagged = ranked.assign(sure=sure, error=ranked["id"].isin(errors), fault=ranked["suspicion"] > 1)
    parts = []
    for (label, pred), pair in flagged.groupby(["label", "pred"], sort=False, observed=True):
        if pair["fault"].any() or pair["error"].sum() >= 3:
            first = pair.iloc[0]
            parts.append(f"{label}>{pred}{'*' if pair['fault'].any() else ''} sure {int(pair['sure'].sum())} "
                         f"indep {first['label_independence']:.2f} surely {first['independence_low']:.2f} "
                         f"errors {int(pair['error'].sum())}")
    return "; ".join(parts)


def score_run(run_dir: Path, flipped: set[str], keep: float, into: int = 0, scatter: int = 0,
              pairs: bool = False, discounts=(0.0,)) -> list[dict]:
    records = pd.read_parquet(run_dir / "records.parquet")
    probs = np.load(run_dir / "probs.npy")
    records = thinned(records, flipped, keep)
    kept = records[records["id"].isin(flipped)]
    wrong = kept[~kept["correct"].astype(bool)]  # a model that learned the flips predicts many as their label
    source = wrong["pred"].astype(str).value_counts().index[0] if len(wrong) else None  # the flips' true class
    relevant = set(kept["id"][kept["pred"].astype(str) == source])  # k: the flips predicted as their true class
    cues: list[str] = []
    if (run_dir / "findings.json").is_file():
        doc = json.loads((run_dir / "findings.json").read_text())
        cues = sorted(shortcut_cues([Finding(**f) for f in doc.get("findings", [])], FindingsConfig()))
    records, moved = relabelled_into(records, probs, source, flipped, cues, into if source else 0)
    records, spread = scattered(records, probs, flipped, scatter)
    relevant |= moved | spread
    k = len(relevant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about small classes
        ranked = label_error_suspects(records, FindingsConfig(), probs=probs,
                                      shortcut_classes=set(cues))  # as the audit
        floor = cleanlab_ranking(records, probs)
    scores = []
    for discount in discounts:
        score = {"into cue classes": ",".join(c for c in cues if c != source) if moved else "", "k": k,
                 "fault discount": discount,
                 "label_errors.csv": precision_at_k(discounted(ranked, discount), relevant, k),
                 "cleanlab self_confidence": precision_at_k(floor, relevant, k)}
        scores.append({**score, "pairs": pair_summary(ranked, relevant, FindingsConfig())} if pairs else score)
    return scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outs", nargs="+", type=Path, help="planted-bias benchmark --out folders")
    parser.add_argument("--keep-flips", type=float, nargs="+", default=[1.0], help="shares of the flips kept")
    parser.add_argument("--into-cue-class", type=int, nargs="+", default=[0], metavar="N",
                        help="images relabelled into each class the model recognises by a shortcut cue")
    parser.add_argument("--scatter", type=int, nargs="+", default=[0], metavar="N",
                        help="right predictions relabelled each as a random other class (errors spread over pairs)")
    parser.add_argument("--fault-discount", type=float, nargs="+", default=[0.0], metavar="D",
                        help="also rank a labelling-fault pair's suspects as if the model gave their label D x its "
                             "probability (0: the audit's order; 1: cleanlab's): how the two orders trade the regimes")
    parser.add_argument("--pairs", action="store_true",
                        help="a column with the fault tier's pairs and those holding the errors (sure mistakes, label "
                             "independence)")
    args = parser.parse_args(argv)
    rows = []
    for out in args.outs:
        flipped = set(json.loads((out / "flipped.json").read_text()))
        scores = json.loads((out / "scores.json").read_text()) if (out / "scores.json").is_file() else {}
        for mode in ("masks", "no-masks"):
            if not (out / f"run-{mode}" / "probs.npy").is_file():
                continue
            for keep in args.keep_flips:
                for into in args.into_cue_class:
                    for scatter in args.scatter:
                        for score in score_run(out / f"run-{mode}", flipped, keep, into, scatter, args.pairs,
                                               args.fault_discount):
                            if score["k"]:  # no label error left to find (every flip dropped, none relabelled)
                                rows.append({"family": scores.get("benchmark", "?"), "seed": scores.get("seed", "?"),
                                             "flips in": scores.get("flips", "train-and-audit"), "mode": mode,
                                             "flips kept": keep, "relabelled into": into, "scattered": scatter,
                                             **score})
    table = pd.DataFrame(rows)
    columns = list(table.columns)
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |")
    print()
    regimes = ["fault discount", "flips kept", "relabelled into", "scattered"]
    for (discount, keep, into, scatter), part in table.groupby(regimes):
        below = part[part["label_errors.csv"] < part["cleanlab self_confidence"]]
        order = f"fault discount {discount:g}, " if len(args.fault_discount) > 1 else ""
        print(f"{order}flips kept {keep:g}, relabelled into each cue class {into}, scattered {scatter}: runs below the "
              f"floor {len(below)} of {len(part)}; below 0.8: {(part['label_errors.csv'] < 0.8).sum()}; mean precision "
              f"at k {part['label_errors.csv'].mean():.2f} (cleanlab {part['cleanlab self_confidence'].mean():.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
