"""Rule: is the model working at all? Run first, because every other finding explains a model that works.

A model at chance, one that names one class for almost everything, one whose probabilities are nearly uniform,
or one whose maps are empty gives heatmaps that explain nothing about the data. Such a run gets one high
`model_health` finding saying what is wrong, and every other finding is capped at low (`cap_findings`). A model
barely above chance, with dead classes, or whose batch-norm running statistics do not fit the data
(`auditor.batch_norm_check`) is suspect: a medium finding, nothing capped.
"""

from __future__ import annotations

import numpy as np

from auditor.config import FindingsConfig
from auditor.findings.context import Context
from auditor.findings.record import SEVERITIES, Finding, Kind, metrics

KIND = Kind(
    name="model_health",
    scope="run",
    needs_masks=False,
    advice=(
        "Check the model before reading any other finding: that the checkpoint holds the trained weights, that "
        "model.classes lists the classes in logit order, and that data.resize, data.crop, data.mean and data.std "
        "match the model's training preprocessing."
    ),
)
HEALTH = {"high": "broken", "medium": "suspect"}  # severity of the model_health finding -> summary.json model_health


def mean_normalised_entropy(probs, rows: np.ndarray) -> float:
    """Mean over `rows` of each probability vector's entropy over log(classes): 1 for a uniform guess. Read in
    blocks of about a million values, so memory stays flat in the number of classes (1,000 classes x 8,000 images
    in one piece took 200 MB of float64 copies)."""
    if len(rows) == 0:
        return float("nan")
    block = max(1, 2**20 // probs.shape[1])
    total = 0.0
    for start in range(0, len(rows), block):
        p = np.asarray(probs[rows[start : start + block]], dtype=np.float64)
        p /= np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
        total += float(-(p * np.log(np.clip(p, 1e-12, None))).sum())
    return total / len(rows) / np.log(probs.shape[1])


def health_figures(records, probs, cfg: FindingsConfig) -> dict[str, float]:
    """The figures the verdict rests on, each next to what a working model would show."""
    valid = records[np.isfinite(records["p_pred"].to_numpy(dtype=float))]
    k = max(int(records["label_idx"].max()) + 1, probs.shape[1] if probs is not None else 0, 2)
    labels, preds = valid["label_idx"].to_numpy(), valid["pred_idx"].to_numpy()
    recall = {int(c): np.mean(preds[labels == c] == c) for c in np.unique(labels)}
    balanced = float(np.mean(list(recall.values()))) if recall else float("nan")
    dead = [c for c, r in recall.items() if r <= cfg.health_dead_recall and (labels == c).sum() >= cfg.min_support]
    pred_share = np.bincount(preds, minlength=k) / max(len(preds), 1)
    label_share = np.bincount(labels, minlength=k) / max(len(labels), 1)
    top = int(pred_share.argmax())
    if probs is not None:
        uniformity = mean_normalised_entropy(probs, valid["row"].to_numpy())
    else:  # the top probability's excess over 1/k, inverted: 1 when p_pred is 1/k everywhere
        uniformity = float(1.0 - (valid["p_pred"].mean() - 1.0 / k) / (1.0 - 1.0 / k)) if len(valid) else 1.0
    cam = records["pred_cam_max"].to_numpy(dtype=float) if "pred_cam_max" in records else np.ones(len(records))
    return {
        "n": len(records),
        "n_classes": k,
        "accuracy": float(valid["correct"].mean()) if len(valid) else 0.0,
        "balanced_accuracy": balanced,
        "chance_accuracy": 1.0 / k,
        "skill": (balanced - 1.0 / k) / (1.0 - 1.0 / k),  # 0 at chance, 1 perfect (Cohen's kappa idea)
        "top_pred_share": float(pred_share[top]),
        "top_pred_label_share": float(label_share[top]),
        "classes_predicted": int((pred_share > 0).sum()),
        "mean_normalised_entropy": uniformity,
        "non_finite_share": 1.0 - len(valid) / max(len(records), 1),
        "empty_map_share": float(np.mean(~(np.isfinite(cam) & (cam > 0)))) if len(cam) else 0.0,
        "dead_classes": len(dead),
        "top_pred": top,
        "dead": dead,
    }


def find(records, maps, masks, classes, cfg: FindingsConfig, context: Context | None = None) -> list[Finding]:
    """One finding when the model looks broken (high) or suspect (medium); nothing for a working model."""
    probs = context.probs if context is not None else None
    fig = health_figures(records, probs, cfg)
    broken, suspect = [], []
    if fig["non_finite_share"] >= cfg.health_max_bad_share:
        broken.append(f"{fig['non_finite_share']:.0%} of the images get non-finite scores")
    if fig["empty_map_share"] >= cfg.health_max_bad_share:
        broken.append(
            f"{fig['empty_map_share']:.0%} of the maps are empty (no positive evidence at the target layer: check "
            "model.target_layer)"
        )
    skill = fig["skill"]
    if skill <= cfg.health_broken_skill:
        broken.append(
            f"its balanced accuracy is {fig['balanced_accuracy']:.1%}, at chance ({fig['chance_accuracy']:.1%} for "
            f"{fig['n_classes']} classes)"
        )
    elif skill <= cfg.health_suspect_skill:
        suspect.append(
            f"its balanced accuracy is {fig['balanced_accuracy']:.1%}, barely above chance "
            f"({fig['chance_accuracy']:.1%})"
        )
    dead = fig.pop("dead")
    if dead:
        names = ", ".join(repr(classes[c]) for c in dead[:5]) + (f" and {len(dead) - 5} more" if len(dead) > 5 else "")
        suspect.append(
            f"it names {len(dead)} of its classes for almost none of their images ({names}: recall at most "
            f"{cfg.health_dead_recall:.0%})"
        )
    collapse = fig["top_pred_share"] - fig["top_pred_label_share"]
    if fig["top_pred_share"] >= cfg.health_collapse_share and collapse >= cfg.health_collapse_excess:
        broken.append(
            f"it predicts {classes[fig['top_pred']]!r} for {fig['top_pred_share']:.0%} of the images, which are "
            f"{fig['top_pred_label_share']:.0%} {classes[fig['top_pred']]!r}"
        )
    batch_norm = context.batch_norm if context is not None else None
    if batch_norm:
        gain = batch_norm["batch_stats_accuracy"] - batch_norm["accuracy"]  # on the same sample of images
        fig.update(batch_stats_accuracy=batch_norm["batch_stats_accuracy"], batch_stats_gain=gain)
        if gain >= cfg.health_batch_norm_gain:
            suspect.append(
                f"with each batch's own statistics in its batch-norm layers it is right on "
                f"{batch_norm['batch_stats_accuracy']:.0%} of {batch_norm['n']} images instead of "
                f"{batch_norm['accuracy']:.0%}, so its running statistics do not fit these images (statistics that "
                f"lag the end of training, or a preprocessing other than training's)"
            )
    if fig["mean_normalised_entropy"] >= cfg.health_max_entropy:
        broken.append(
            f"its probabilities are nearly uniform (mean normalised entropy {fig['mean_normalised_entropy']:.2f})"
        )
    if not broken and not suspect:
        return []
    severity = "high" if broken else "medium"
    state = HEALTH[severity]
    top = fig.pop("top_pred")
    return [Finding(
        kind=KIND.name,
        severity=severity,
        classes=[classes[top]],  # the class it names most: where a collapsed model's answers go
        metrics=metrics(**fig),
        message=(
            f"The model looks {state}: {'; '.join(broken + suspect)}. "
            + ("Every other finding is capped at low: it would explain a model that does not work."
               if broken else "Read the other findings with care.")
        ),
    )]  # fmt: skip


def state(findings) -> str:
    """summary.json's model_health: ok | suspect | broken, from the findings (objects or findings.json dicts)."""
    for f in findings:
        kind, severity = (f.kind, f.severity) if isinstance(f, Finding) else (f["kind"], f["severity"])
        if kind == KIND.name:
            return HEALTH.get(severity, "ok")
    return "ok"


def cap_findings(findings: list[Finding]) -> list[Finding]:
    """In a run whose model is broken, every other finding at low, saying why."""
    if state(findings) != "broken":
        return findings
    out = []
    for f in findings:
        if f.kind != KIND.name and SEVERITIES.index(f.severity) < SEVERITIES.index("low"):
            f = Finding(**{**f.__dict__, "severity": "low",
                           "message": f"{f.message} (Capped at low: the model itself looks broken.)"})
        out.append(f)
    return out
