"""Statistics the rules share: chance-corrected attention on the object and bootstrap intervals."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from auditor.config import FindingsConfig


def object_score(energy, area):
    """Chance-corrected share of attention on the object: 0 for a map spread evenly, 1 for all on the object.

    An even map scores the mask's area share, so (energy - area) / (1 - area) lets small and large objects be
    compared (Cohen's kappa idea); it is negative when the map avoids the object.
    """
    return (energy - area) / (1.0 - area)


def bootstrap_mean(values, cfg: FindingsConfig) -> tuple[float, float, float]:
    """Mean and percentile bootstrap interval of the mean, seeded so findings are reproducible."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(cfg.seed)
    n = len(values)
    chunk = max(1, 2_000_000 // n)  # bounds memory for large classes
    means = np.concatenate([
        values[rng.integers(0, n, size=(min(chunk, cfg.bootstrap - start), n))].mean(axis=1)
        for start in range(0, cfg.bootstrap, chunk)
    ])
    alpha = (1.0 - cfg.ci_level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(values.mean()), float(lo), float(hi)


def rank_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of `score` at telling the `positive` (bool) items from the rest, as the Mann-Whitney U over both
    counts (ties count half): sklearn's roc_auc_score, without its per-call validation, which dominated a large
    run's thousands of confused pairs. 0.5 when either side is empty."""
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.5
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an ROC AUC from n_pos positives and n_neg negatives (Hanley & McNeil 1982): how far a
    pair's AUC, and so its label independence, can move by chance with this many images. 0.5 (no knowledge) when
    either side is empty."""
    if n_pos < 1 or n_neg < 1:
        return 0.5
    q1, q2 = auc / (2.0 - auc), 2.0 * auc * auc / (1.0 + auc)
    variance = auc * (1.0 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)
    return float(np.sqrt(max(variance, 0.0) / (n_pos * n_neg)))
