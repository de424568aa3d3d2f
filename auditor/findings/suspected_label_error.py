"""Rule: images whose label is likely wrong, ranked over the whole run, reported per pair true -> pred.

Candidates and their certainty come from cleanlab (confident learning, Northcutt et al. 2021), on every image's
full probability vector (probs.npy): `find_label_issues` says which images are suspect (by default every mistake:
the ranking sorts them), `get_label_quality_scores` how sure the model is, and confident learning's per-class
threshold which of a pair's suspects count toward its severity. Masks, where given, are a second, independent
test (see `label_error_suspects`), and whether the images explain their pair's labels (`label_independence`) sets
the order: label_errors.csv lists every suspect in that one global order, whatever its pair.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from auditor.config import FindingsConfig
from auditor.findings.context import Context, class_object_score, informative, object_scores
from auditor.findings.record import Finding, Kind, metrics
from auditor.findings.stats import object_score, rank_auc

KIND = Kind(
    name="suspected_label_error",
    scope="pair",
    needs_masks=False,
    advice=(
        "Check the labels of the listed images labelled {true} and predicted {pred}: relabel those that really "
        "show {pred}; drop the ambiguous ones."
    ),
)

LABEL_ERROR_COLUMNS = (
    "rank", "id", "path", "label", "pred", "p_pred", "p_true", "threshold", "object_score", "label_object_score",
    "suspicion", "finding", "reason",
)  # fmt: skip


def self_confidence_threshold(records: pd.DataFrame) -> pd.Series:
    """Per image: its predicted class's mean self-confidence (p_true over the images labelled that class),
    confident learning's per-class threshold: a wrong label makes the model at least this sure of the other class."""
    return records["pred_idx"].map(records.groupby("label_idx")["p_true"].mean())


def confident_learning(records: pd.DataFrame, probs, cfg: FindingsConfig) -> tuple[pd.Series, pd.Series, int]:
    """Per image: whether cleanlab flags its label, and its suspicion (1 - label quality, higher = likelier
    wrong); and cleanlab's estimate of how many labels in the run are wrong.

    Without probs.npy (run directories written before it) confident learning on p_true and p_pred alone: an
    image is flagged when p_pred reaches the predicted class's mean self-confidence (its per-class threshold),
    whatever label_error_filter says, since without the probabilities no label independence ranks the ordinary
    mistakes below the wrong labels; its suspicion is 1 - p_true.
    """
    index = records.index
    labels = records["label_idx"].to_numpy()
    usable = np.isfinite(records["p_pred"].to_numpy(dtype=float))
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float64)[records["row"].to_numpy()]
        usable &= np.isfinite(probs).all(axis=1)
    flagged, suspicion, estimate = np.zeros(len(records), bool), np.full(len(records), np.nan), 0
    if probs is not None and usable.sum() > probs.shape[1] and len(np.unique(labels[usable])) > 1:
        from cleanlab.count import num_label_issues  # noqa: PLC0415 - cleanlab pulls in much on import
        from cleanlab.filter import find_label_issues  # noqa: PLC0415
        from cleanlab.rank import get_label_quality_scores  # noqa: PLC0415

        p = probs[usable] / probs[usable].sum(axis=1, keepdims=True)  # float16 storage: renormalise
        with warnings.catch_warnings():  # cleanlab warns about small classes; the suspects are what they are
            warnings.simplefilter("ignore")
            flagged[usable] = find_label_issues(labels[usable], p, filter_by=cfg.label_error_filter, n_jobs=1)
            suspicion[usable] = 1.0 - get_label_quality_scores(labels[usable], p, method=cfg.label_error_quality)
            estimate = int(num_label_issues(labels[usable], p))
    else:
        threshold = self_confidence_threshold(records).to_numpy(dtype=float)
        flagged = usable & ~records["correct"].to_numpy(bool) & (records["p_pred"].to_numpy(dtype=float) >= threshold)
        suspicion = 1.0 - records["p_true"].to_numpy(dtype=float)
        estimate = int(flagged.sum())
    return pd.Series(flagged, index=index), pd.Series(suspicion, index=index), estimate


WITHIN_PAIR = 0.01  # the certainty term orders images within a pair; pair scores differ by more between pairs


def label_independence(records: pd.DataFrame, probs, suspects: pd.DataFrame) -> pd.Series:
    """Per suspect: how little the model's belief in the label tells which images of its pair carry that label.

    Take every image predicted as the suspect's predicted class p and labelled either p or the suspect's label t.
    Where the two classes look alike, the images labelled t are the more t-like ones: the model's p(t) ranks them
    first (AUC well above 0.5). Where labels were put in the wrong class regardless of what the image shows, the
    label is independent of the image and p(t) ranks them no better than chance (AUC near 0.5), even though the
    model, trained on the same noise, learned to give t some probability on every such image. Returns
    1 - 2 x max(AUC - 0.5, 0): 1 for labels the images do not explain, 0 for labels they fully explain. Without
    probs.npy (run directories written before it) every pair gets 1, and pair size alone ranks.
    """
    if probs is None or suspects.empty:
        return pd.Series(1.0, index=suspects.index)
    rows = records["row"].to_numpy()
    label_of, pred_of = records["label_idx"].to_numpy(), records["pred_idx"].to_numpy()
    predicted_as = {p: np.flatnonzero(pred_of == p) for p in set(suspects["pred_idx"])}  # one pass per class
    independence = {}
    for t, p in set(zip(suspects["label_idx"], suspects["pred_idx"])):
        members = predicted_as[p][np.isin(label_of[predicted_as[p]], (t, p))]
        label_prob = np.asarray(probs[rows[members], t], dtype=np.float64)
        labelled_t = (label_of[members] == t)[np.isfinite(label_prob)]
        label_prob = label_prob[np.isfinite(label_prob)]
        auc = rank_auc(labelled_t, label_prob)
        independence[t, p] = 1.0 - 2.0 * max(auc - 0.5, 0.0)
    pairs = zip(suspects["label_idx"], suspects["pred_idx"])
    return pd.Series([independence[pair] for pair in pairs], index=suspects.index)


def label_error_suspects(records: pd.DataFrame, cfg: FindingsConfig, probs=None, context: Context | None = None):
    """Every suspected label error of the run, most likely first (one global order), with `in_top` marking the
    first of them up to cleanlab's estimate of the number of wrong labels.

    A suspect is flagged by cleanlab (label_error_filter) and predicted as another class. With a mask, the
    predicted-class map must sit on the object (else it is context, where the model's maps of the predicted class
    normally sit on its objects). Whether the object also draws the labelled class's map only orders suspects
    within their pair: a 7 that carries a 1's stroke draws both maps and may still be a 7 labelled 1; whether such
    labels are noise or look-alikes is the pair's question (`label_independence`), not the image's.

    A model trained on the same labels learns part of their noise, so an image's probabilities alone say little
    about whether its label is wrong or the image is merely hard: both come out as confident mistakes. Its pair
    says more (`label_independence`): labels the images explain are look-alike classes, labels they do not
    explain were put in the wrong class. Suspects are ranked by their pair's label independence, shrunk for small
    pairs (x n / (n + label_error_pair_pseudo_count)), then within the pair by how sure the model is
    (1 - cleanlab's label quality, plus label_error_object_weight x how much more the object draws the predicted
    class's map than the label's, in object score, where a mask exists): suspicion = pair score + 0.01 x that.
    """
    reference = context.class_score if context is not None else class_object_score(object_scores(records, cfg), cfg)
    flagged, certainty, estimate = confident_learning(records, probs, cfg)
    threshold = self_confidence_threshold(records)
    wrong = records[flagged & ~records["correct"].astype(bool) & records["p_pred"].notna()]
    checked = informative(wrong, "pred_energy_in_mask", cfg)
    score = object_score(wrong["pred_energy_in_mask"], wrong["mask_area"]).where(checked)
    label_score = object_score(wrong["true_energy_in_mask"], wrong["mask_area"]).where(checked)
    context_driven = (score < cfg.label_error_min_object_score) & (
        wrong["pred_idx"].map(reference) >= cfg.on_object_score
    )
    suspects = wrong.assign(
        threshold=threshold[wrong.index], object_score=score, label_object_score=label_score,
    )[~context_driven]
    independent = label_independence(records, probs, suspects)
    size = suspects.groupby(["label_idx", "pred_idx"])["id"].transform("size").astype(float)
    pair_score = independent * size / (size + cfg.label_error_pair_pseudo_count)
    on_object = suspects[["object_score", "label_object_score"]].clip(0, 1).fillna(0)
    speaks_for_pred = on_object["object_score"] - on_object["label_object_score"]
    sure = certainty[suspects.index] + cfg.label_error_object_weight * speaks_for_pred
    suspects = suspects.assign(label_independence=independent, suspicion=pair_score + WITHIN_PAIR * sure)
    suspects = suspects.sort_values(["suspicion", "p_pred"], ascending=False, kind="stable")
    return suspects.assign(in_top=np.arange(len(suspects)) < max(estimate, 1))


def suspects_of(context: Context) -> pd.DataFrame:
    """The run's suspects, computed once: the rule groups them, label_errors.csv lists them."""
    return context.cached("label_suspects", lambda: label_error_suspects(
        context.records, context.cfg, probs=context.probs, context=context
    ))


def find(records, maps, masks, classes, cfg: FindingsConfig, context: Context | None = None) -> list[Finding]:
    """Suspects grouped by pair true -> pred, each pair judged by how many of the run's top-ranked suspects
    (up to cleanlab's estimate of the wrong labels) it holds that the model predicts at least as surely as the
    predicted class's own images (confident learning's per-class threshold) and with more probability than all
    other classes together (label_error_min_p_pred; a hard class's threshold is low), not by its count alone: every
    mistake is listed, but a wrong label makes the model sure of the other class, a hard image seldom, and a pair
    whose suspects all rank low is likelier two similar classes than a labelling fault. High severity also needs a label
    independence of at least label_error_min_independence: where the images explain their labels, the pair is
    two classes that look alike, worth a look (medium at most) but not a labelling fault.

    A pair none of whose suspects ranks among them gets no finding: every mistake is a suspect, and such a pair
    is ordinary confusion (its suspects stay in label_errors.csv, ranked low). A finding lists up to
    label_error_max_samples of its suspects, most suspect first: unlike a class finding's examples, each is an
    image to relabel. Pairs come in the order of their best suspect in the global ranking.
    """
    suspects = suspects_of(Context.of(context, records, maps, masks, classes, cfg))
    class_size = records.groupby("label_idx").size()
    n_top = max(int(suspects["in_top"].sum()), 1)
    findings = []
    for (t, p), group in suspects.groupby(["label_idx", "pred_idx"], sort=False):
        top = int(group["in_top"].sum())
        if len(group) < cfg.label_error_min_count or top == 0:  # none among the likely wrong labels: confusion
            continue
        surely = group["p_pred"] >= np.maximum(group["threshold"], cfg.label_error_min_p_pred)
        sure = int((group["in_top"] & surely).sum())
        rate = sure / class_size[t]
        independence = float(group["label_independence"].iloc[0])
        unexplained = independence >= cfg.label_error_min_independence
        severity = (
            "high" if rate >= cfg.label_error_high_rate and unexplained
            else "medium" if rate >= cfg.label_error_medium_rate else "low"
        )
        true, pred = classes[int(t)], classes[int(p)]
        threshold = float(group["threshold"].iloc[0])
        findings.append(Finding(
            kind=KIND.name, severity=severity, classes=[true, pred], pair={"true": true, "pred": pred},
            samples=[str(i) for i in group["id"].to_numpy()[: cfg.label_error_max_samples]],  # already ranked
            metrics=metrics(
                count=len(group), rate=rate, top_ranked=top, confident_top_ranked=sure, share_of_top_ranked=top / n_top,
                count_rate=len(group) / class_size[t], threshold=threshold, p_pred=group["p_pred"].mean(),
                p_true=group["p_true"].mean(), suspicion=group["suspicion"].mean(),
                label_independence=independence,
                object_score=group["object_score"].mean(), label_object_score=group["label_object_score"].mean(),
            ),
            message=(
                f"{len(group)} images labelled {true!r} are predicted {pred!r} ({top} of them among the "
                f"run's {n_top} most likely label errors, {sure} as surely as {pred!r}'s own images usually are and "
                f"at p >= {cfg.label_error_min_p_pred:.2f})"
                f"{_label_evidence(group)}. "
                f"{_independence(independence, unexplained, true, pred)} Check whether their label should be {pred!r}."
            ),
        ))  # fmt: skip
    return findings  # in the global order of their best suspect, as label_errors.csv lists them


def _independence(independence: float, unexplained: bool, true: str, pred: str) -> str:
    auc = 0.5 + (1.0 - independence) / 2.0
    if unexplained:
        return (
            f"Among the images predicted {pred!r}, the model's probability of {true!r} does not tell which carry "
            f"the label {true!r} (AUC {auc:.2f}, 0.5 = chance): labels put in the wrong class, not look-alikes."
        )
    return (
        f"Among the images predicted {pred!r}, those labelled {true!r} are the more {true!r}-like (AUC {auc:.2f}): "
        "the two classes look alike, so many of these may be hard images rather than wrong labels."
    )


def _label_evidence(group: pd.DataFrame) -> str:
    pred, label = group["object_score"].mean(), group["label_object_score"].mean()
    if not (np.isfinite(pred) and np.isfinite(label)):
        return ""
    return (
        f" and their objects draw the {pred:.2f} object score of the predicted class's maps against {label:.2f} "
        "of the label's"
    )


def label_error_table(suspects: pd.DataFrame, findings: list[dict]) -> pd.DataFrame:
    """label_errors.csv: every suspect in the one global order, most likely label error first (rank 1), with
    the id of its pair's finding (empty for pairs too small to be reported) and why it is listed ("predicted
    <pred>"; findings.duplicate_conflict adds near-duplicates)."""
    pair_finding = {
        (f["pair"]["true"], f["pair"]["pred"]): f["id"] for f in findings if f["kind"] == KIND.name
    }
    finding = [pair_finding.get((t, p), "") for t, p in zip(suspects["label"], suspects["pred"])]
    table = suspects.assign(finding=finding, rank=np.arange(1, len(suspects) + 1),
                            reason=[f"predicted {pred}" for pred in suspects["pred"]])
    return table.loc[:, list(LABEL_ERROR_COLUMNS)].round(
        {"p_pred": 6, "p_true": 6, "threshold": 6, "object_score": 6, "label_object_score": 6, "suspicion": 6}
    )

