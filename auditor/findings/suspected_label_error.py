"""Rule: images whose label is likely wrong, ranked over the whole run, reported per pair true -> pred.

Candidates come from cleanlab (confident learning, Northcutt et al. 2021) on every image's full probability vector
(probs.npy): `find_label_issues` says which images are suspect (by default every mistake: the ranking sorts them),
and confident learning's per-class threshold which of them the model predicts confidently. The order holds in the
two regimes users audit (`label_error_suspects`): a model trained on the same noisy labels, and a held-out test set
whose annotation errors the model never learned. Masks, where given, are a second, independent test.
label_errors.csv lists every suspect in that one global order, whatever its pair.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd

from auditor.config import FindingsConfig
from auditor.findings.context import Context, class_object_score, informative, object_scores
from auditor.findings.place_evidence import (
    TESTED_PLACE_KINDS, erasure_effect, transplant_effect, what_erasing_did, what_pasting_did,
)
from auditor.findings.record import Finding, Kind, metrics
from auditor.findings.stats import auc_standard_error, object_score, rank_auc

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


def sureness(p_pred: pd.Series, threshold: pd.Series, cfg: FindingsConfig) -> pd.Series:
    """How sure the model is of its prediction against what makes a prediction sure, capped at 1 (sure): the
    predicted class's own images' mean self-confidence (`self_confidence_threshold`), and more probability than
    all other classes together (label_error_min_p_pred), since a hard class's threshold is low (shirts': 0.3)."""
    return (p_pred / np.maximum(threshold, cfg.label_error_min_p_pred)).clip(upper=1.0).fillna(0.0)


def confident_learning(records: pd.DataFrame, probs, cfg: FindingsConfig) -> tuple[pd.Series, int]:
    """Per image: whether cleanlab flags its label; and cleanlab's estimate of how many labels in the run are wrong.

    Without probs.npy (run directories written before it) confident learning on p_true and p_pred alone: an
    image is flagged when p_pred reaches the predicted class's mean self-confidence (its per-class threshold),
    whatever label_error_filter says.
    """
    index = records.index
    labels = records["label_idx"].to_numpy()
    usable = np.isfinite(records["p_pred"].to_numpy(dtype=float))
    if probs is not None:  # the rows first, then one float32 copy: [N, C] copies are what grows with classes (in
        # float32 cleanlab flagged the same images and estimated the same count as in float64 on 40 saved
        # benchmark audits and a 100- and a 1,000-class run; probs.npy holds float16 anyway)
        probs = np.asarray(probs[records["row"].to_numpy()], dtype=np.float32)
        usable &= np.isfinite(probs).all(axis=1)
    flagged, estimate = np.zeros(len(records), bool), 0
    if probs is not None and usable.sum() > probs.shape[1] and len(np.unique(labels[usable])) > 1:
        from cleanlab.count import num_label_issues  # noqa: PLC0415 - cleanlab pulls in much on import
        from cleanlab.filter import find_label_issues  # noqa: PLC0415

        p = probs if usable.all() else probs[usable]
        p /= p.sum(axis=1, keepdims=True)  # float16 storage: renormalise (in place: probs is not read again)
        with warnings.catch_warnings():  # cleanlab warns about small classes; the suspects are what they are
            warnings.simplefilter("ignore")
            flagged[usable] = find_label_issues(labels[usable], p, filter_by=cfg.label_error_filter, n_jobs=1)
            estimate = int(num_label_issues(labels[usable], p))
    else:
        threshold = self_confidence_threshold(records).to_numpy(dtype=float)
        flagged = usable & ~records["correct"].to_numpy(bool) & (records["p_pred"].to_numpy(dtype=float) >= threshold)
        estimate = int(flagged.sum())
    return pd.Series(flagged, index=index), estimate


WITHIN_PAIR = 0.01  # the within-pair term orders a fault pair's images; pair scores differ by more between pairs


def label_independence(records: pd.DataFrame, probs, suspects: pd.DataFrame, cfg: FindingsConfig) -> pd.DataFrame:
    """Per suspect: how little the model's belief in the label tells which of its pair's confident predictions
    carry that label (column label_independence), and how little it surely tells (independence_low).

    Take the images the model predicts surely as the suspect's predicted class p (`sureness`: as surely as p's own
    images usually are, and at more than half), labelled p or the suspect's label t.
    Where the two classes look alike, the images labelled t are the more t-like ones: the model's p(t) ranks them
    first (AUC well above 0.5). Where labels were put in the wrong class regardless of what the image shows, the
    label is independent of the image and p(t) ranks them no better than chance (AUC near 0.5), whether the model
    learned to give t some probability on every such image (trained on the same noise) or none (a held-out test
    set). Only confident predictions count: ambiguous images, hard or look-alike, would say the label is
    explained when the confidently predicted ones say it is not. label_independence is 1 - 2 x max(AUC - 0.5, 0):
    1 for labels the images do not explain, 0 for labels they fully explain, and 0 for a pair with no confident
    prediction labelled t. independence_low is the same with the AUC one standard error higher
    (`auc_standard_error`): a few images give a rough AUC, so a small pair's independence is less sure than a large
    one's. Without probs.npy (run directories written before it) every pair gets 1 and 1: nothing says otherwise.
    """
    if probs is None or suspects.empty:
        return pd.DataFrame({"label_independence": 1.0, "independence_low": 1.0}, index=suspects.index)
    rows = records["row"].to_numpy()
    label_of, pred_of = records["label_idx"].to_numpy(), records["pred_idx"].to_numpy()
    confident = (sureness(records["p_pred"], self_confidence_threshold(records), cfg) >= 1.0).to_numpy()
    predicted_as = {p: np.flatnonzero((pred_of == p) & confident) for p in set(suspects["pred_idx"])}
    independence = {}
    for t, p in set(zip(suspects["label_idx"], suspects["pred_idx"])):
        members = predicted_as[p][np.isin(label_of[predicted_as[p]], (t, p))]
        label_prob = np.asarray(probs[rows[members], t], dtype=np.float64)
        labelled_t = (label_of[members] == t)[np.isfinite(label_prob)]
        label_prob = label_prob[np.isfinite(label_prob)]
        auc = rank_auc(labelled_t, label_prob) if labelled_t.any() else 1.0
        high = auc + auc_standard_error(auc, int(labelled_t.sum()), int((~labelled_t).sum()))
        independence[t, p] = (1.0 - 2.0 * max(auc - 0.5, 0.0), 1.0 - 2.0 * min(max(high - 0.5, 0.0), 0.5))
    pairs = list(zip(suspects["label_idx"], suspects["pred_idx"]))
    return pd.DataFrame([independence[pair] for pair in pairs], index=suspects.index,
                        columns=["label_independence", "independence_low"])


def label_error_suspects(records: pd.DataFrame, cfg: FindingsConfig, probs=None, context: Context | None = None,
                        shortcut_classes=frozenset()):
    """Every suspected label error of the run, most likely first (one global order), with `in_top` marking the
    first of them up to cleanlab's estimate of the number of wrong labels, and `labelling_fault` the suspects of a
    labelling fault (ranked first).

    A suspect is flagged by cleanlab (label_error_filter) and predicted as another class. With a mask, a suspect
    whose predicted-class map is off the object, where the model's maps of that class normally sit on its objects,
    may be a context mistake (column context_driven): it keeps its place in cleanlab's order, where a wrong label the
    model is sure of ranks high whatever its map shows, but is never part of a labelling fault or a label card
    (`pair_findings`); context_confusion judges those. Dropping them lost wrong labels: errors spread one or two a
    pair, 3 of 40 on Fashion-MNIST seed 25 (benchmarks/label_regimes.py).

    The floor is cleanlab's own order, self-confidence: the less probability the model gives an image's label, the
    likelier the label is wrong. It holds where the errors are spread over many pairs, as in most real test sets,
    and where the model never learned them (a held-out set: sure of the true class). It fails where many wrong
    labels fill one pair: a model trained on the same labels learns part of that noise, so a flipped image keeps as
    much probability of its label as a hard or look-alike image; and a big pair of look-alike classes holds many sure
    mistakes too. What tells such a pair apart: among the images the model predicts as surely as its class's own
    (confident learning's joint; `sureness`), the label is independent of the image (`label_independence`). So
    a pair whose labels are surely that independent (independence_low, the AUC one standard error higher, reaches
    label_error_min_independence) and that holds label_error_min_pair_sure sure mistakes or more is a labelling
    fault: its suspects come first, pairs ordered by independence_low, and within a pair surest first
    (`sureness`, plus label_error_object_weight x how much more the object draws the predicted class's map than the
    label's, where a mask exists: a 7 carrying a 1's stroke draws both maps). suspicion = 1 + that pair score
    + 0.01 x that. Every other suspect follows in cleanlab's order, suspicion = 1 - p(label).

    No pair labelled one of `shortcut_classes` is a fault: classes the model recognises by a cue (`shortcut_cues`),
    whose images without the cue it mistakes surely and with labels as independent as wrong ones (colour: diamonds
    without their sticker, predicted triangle), so their pair figures cannot tell a labelling fault from the
    shortcut's cost; their own probabilities still rank a wrong label the model never
    learned high. Surely, not by the point estimate: a big pair of look-alikes just past the bar (Fashion-MNIST seed
    23's shirts predicted T-shirt, 0.76, and 0.67 within one standard error) buried errors spread one or two a pair
    below cleanlab's order, while a small labelling fault whose AUC may be chance (13 sure mistakes) goes to
    cleanlab's order: never below it (benchmarks/README.md, `label_regimes.py`).
    """
    suspects, fault_order, may_be_fault, estimate = (  # independent of shortcut_classes: scored once a run, though
        # with_shortcut_costs orders the suspects again once it knows the cue classes (2.3 s at 50,000 x 1,000)
        context.cached("label_scores", lambda: _scored(records, cfg, probs, context)) if context is not None
        else _scored(records, cfg, probs, context))
    fault = may_be_fault & ~suspects["label"].astype(str).isin(list(shortcut_classes))
    suspicion = fault_order.where(fault, 1.0 - suspects["p_true"].fillna(1.0))
    suspects = suspects.assign(suspicion=suspicion, labelling_fault=fault).sort_values(
        ["suspicion", "p_pred"], ascending=False, kind="stable")
    return suspects.assign(in_top=np.arange(len(suspects)) < max(estimate, 1))


def _scored(records: pd.DataFrame, cfg: FindingsConfig, probs, context: Context | None):
    """`label_error_suspects`' figures, before any order: the suspects (with label_independence and
    independence_low), the suspicion each would have in a labelling-fault pair (1 + pair score + WITHIN_PAIR x
    within-pair term), whether its pair clears the two fault bars, and cleanlab's estimate of the wrong labels."""
    reference = context.class_score if context is not None else class_object_score(object_scores(records, cfg), cfg)
    flagged, estimate = confident_learning(records, probs, cfg)
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
        context_driven=context_driven,
    )
    suspects = suspects.join(label_independence(records, probs, suspects, cfg))
    pair_score = suspects["independence_low"]  # how surely the pair's labels are independent
    surely = sureness(suspects["p_pred"], suspects["threshold"], cfg)
    confident = ((surely >= 1.0) & ~context_driven).groupby([suspects["label_idx"], suspects["pred_idx"]]).transform(
        "sum")
    may_be_fault = ((pair_score >= cfg.label_error_min_independence) & (confident >= cfg.label_error_min_pair_sure)
                    & ~context_driven)
    on_object = suspects[["object_score", "label_object_score"]].clip(0, 1).fillna(0)
    speaks_for_pred = on_object["object_score"] - on_object["label_object_score"]
    within = surely + cfg.label_error_object_weight * speaks_for_pred
    return suspects, 1.0 + pair_score + WITHIN_PAIR * within, may_be_fault, estimate


def suspects_of(context: Context, shortcut_classes=frozenset()) -> pd.DataFrame:
    """The run's suspects, computed once per set of shortcut classes: the rule groups them, label_errors.csv lists
    them."""
    shortcut_classes = frozenset(shortcut_classes)
    return context.cached(("label_suspects", shortcut_classes), lambda: label_error_suspects(
        context.records, context.cfg, probs=context.probs, context=context, shortcut_classes=shortcut_classes
    ))


def find(records, maps, masks, classes, cfg: FindingsConfig, context: Context | None = None) -> list[Finding]:
    """Suspects grouped by pair true -> pred, each pair judged by how many of the run's top-ranked suspects
    (up to cleanlab's estimate of the wrong labels) it holds that the model predicts at least as surely as the
    predicted class's own images (confident learning's per-class threshold) and with more probability than all
    other classes together (label_error_min_p_pred; a hard class's threshold is low), not by its count alone: every
    mistake is listed, but a wrong label makes the model sure of the other class, a hard image seldom, and a pair
    whose suspects all rank low is likelier two similar classes than a labelling fault. High severity also needs a label
    independence of at least label_error_min_independence, surely (`independence_low`, the AUC one standard error
    higher): where the images explain their labels, the pair is two classes that look alike, worth a look (medium at
    most) but not a labelling fault, and a pair of look-alikes just past the bar may be that too (Fashion-MNIST seed
    23's shirts predicted T-shirt: 0.76, and 0.67 within one standard error). In a labelling fault (labels surely
    that independent, no shortcut class: `label_error_suspects`) every top-ranked suspect counts toward the rates
    (`counted_rate`), sure or not: a model trained on the same wrong labels gives each such image the noise's share
    of the label's probability, so fewer of them are sure (MNIST seed 25, flips in both splits: 35 of 61 sure, 9.6 %
    of the 1s, medium, against 16.8 % counted).

    A pair with fewer than label_error_min_count suspects among them gets no finding: every mistake is a suspect, and
    such a pair is ordinary confusion, or one or two of the errors a real test set spreads over many pairs, which
    cleanlab's order ranks each on its own (its suspects stay in label_errors.csv, in the global order; a card each
    put a dozen low cards on a planted-bias audit). A finding lists up to
    label_error_max_samples of its suspects, most suspect first: unlike a class finding's examples, each is an
    image to relabel. Pairs come in the order of their best suspect in the global ranking.
    """
    return pair_findings(suspects_of(Context.of(context, records, maps, masks, classes, cfg)), records, classes, cfg)


def pair_findings(suspects: pd.DataFrame, records: pd.DataFrame, classes: list[str], cfg: FindingsConfig):
    """The findings of `find`, one per pair true -> pred, from the run's ranked suspects less the context-driven
    ones (context_confusion's to judge)."""
    class_size = records.groupby("label_idx").size()
    n_top = max(int(suspects["in_top"].sum()), 1)
    findings = []
    for (t, p), group in suspects[~suspects["context_driven"]].groupby(["label_idx", "pred_idx"], sort=False):
        top = int(group["in_top"].sum())
        if top < cfg.label_error_min_count:  # too few among the likely wrong labels: confusion, or errors spread
            continue  # one or two a pair, each in label_errors.csv in the global order
        surely = sureness(group["p_pred"], group["threshold"], cfg) >= 1.0
        sure = int((group["in_top"] & surely).sum())
        rate = sure / class_size[t]
        independence = float(group["label_independence"].iloc[0])
        independence_low = float(group["independence_low"].iloc[0])
        surely_independent = independence_low >= cfg.label_error_min_independence  # so independence is, too
        counted_rate = top / class_size[t] if group["labelling_fault"].iloc[0] else rate
        severity = (
            "high" if counted_rate >= cfg.label_error_high_rate and surely_independent
            else "medium" if counted_rate >= cfg.label_error_medium_rate else "low"
        )
        true, pred = classes[int(t)], classes[int(p)]
        threshold = float(group["threshold"].iloc[0])
        findings.append(Finding(
            kind=KIND.name, severity=severity, classes=[true, pred], pair={"true": true, "pred": pred},
            samples=[str(i) for i in group["id"].to_numpy()[: cfg.label_error_max_samples]],  # already ranked
            metrics=metrics(
                count=len(group), rate=rate, counted_rate=counted_rate, top_ranked=top, confident_top_ranked=sure,
                share_of_top_ranked=top / n_top,
                count_rate=len(group) / class_size[t], threshold=threshold, p_pred=group["p_pred"].mean(),
                p_true=group["p_true"].mean(), suspicion=group["suspicion"].mean(),
                label_independence=independence, independence_low=independence_low,
                object_score=group["object_score"].mean(), label_object_score=group["label_object_score"].mean(),
            ),
            message=(
                f"{len(group)} images labelled {true!r} are predicted {pred!r} ({top} of them among the "
                f"run's {n_top} most likely label errors, {sure} as surely as {pred!r}'s own images usually are and "
                f"at p >= {cfg.label_error_min_p_pred:.2f})"
                f"{_label_evidence(group)}. "
                f"{_independence(independence, independence_low, cfg, true, pred)} Check whether their label should "
                f"be {pred!r}."
            ),
        ))  # fmt: skip
    return findings  # in the global order of their best suspect, as label_errors.csv lists them


def _independence(independence: float, independence_low: float, cfg: FindingsConfig, true: str, pred: str) -> str:
    """The card's sentence on label independence. Independent labels are wrong labels or an inconsistent line
    between two classes: the model's figures cannot tell the two apart (Fashion-MNIST's short-sleeved shirts,
    predicted T-shirt, have labels as independent as planted flips; benchmarks/README.md). A pair is high only when
    its labels are surely that independent (`independence_low`): the AUC of a few images, or of a look-alike pair
    just past the bar, may be chance."""
    auc = 0.5 + (1.0 - independence) / 2.0
    if independence < cfg.label_error_min_independence:
        return (
            f"Among the images predicted {pred!r}, those labelled {true!r} are the more {true!r}-like (AUC {auc:.2f}): "
            "the two classes look alike, so many of these may be hard images rather than wrong labels."
        )
    sentence = (
        f"Among the images predicted {pred!r}, the model's probability of {true!r} does not tell which carry "
        f"the label {true!r} (AUC {auc:.2f}, 0.5 = chance): the labels do not follow what the images show, so "
        f"either labels were put in the wrong class or the annotators drew the line between {true!r} and "
        f"{pred!r} inconsistently (compare these images with {pred!r}'s own: either way the labels need a rule)."
    )
    if independence_low >= cfg.label_error_min_independence:
        return sentence
    high = 0.5 + (1.0 - independence_low) / 2.0
    return (
        f"{sentence} Not surely, though: within one standard error the AUC may be {high:.2f}, where the images would "
        "explain the labels, so the pair is medium at most."
    )


def _label_evidence(group: pd.DataFrame) -> str:
    pred, label = group["object_score"].mean(), group["label_object_score"].mean()
    if not (np.isfinite(pred) and np.isfinite(label)):
        return ""
    return (
        f" and their objects draw the {pred:.2f} object score of the predicted class's maps against {label:.2f} "
        "of the label's"
    )


NEEDS_CUE = 0.5  # erasing a place's cue loses the class for this many more of its carriers than a control erasure:
# the model recognises the class by the cue (planted stickers and watermarks: 0.9-1.0), so images of the class
# without it are mistaken for other classes whatever their labels


def shortcut_cues(findings: list[Finding], cfg: FindingsConfig) -> dict[str, Finding]:
    """Class -> the first place finding (medium or above) whose cue the model recognises the class by: its images
    need it (erasing it loses the class for NEEDS_CUE more of its carriers than a control erasure), or it makes the
    class by itself (pasting it onto other classes' images turns transplant_min_effect more of them into the class
    than a control paste, the place check's own bar). Either way images of the class without the cue are
    mistaken for other classes whatever their labels: Fashion-MNIST seed 26's pullovers, a patch on 59 % of them,
    none lost when it is erased but 21 % of other images turned by it (3 % by a control): all 51 pullovers predicted
    shirt lacked it, a pair whose labels read as surely independent as the planted flips'."""
    cues = {}
    for f in findings:
        if f.kind in TESTED_PLACE_KINDS and f.severity != "low" and f.classes and (
                erasure_effect(f) >= NEEDS_CUE or transplant_effect(f) >= cfg.transplant_min_effect):
            cues.setdefault(f.classes[0], f)
    return cues


def _cue_evidence(cue: Finding) -> str:
    """What the place check measured that makes `cue` a shortcut cue (`shortcut_cues`), as its own card says it."""
    return what_erasing_did(cue.metrics) if erasure_effect(cue) >= NEEDS_CUE else what_pasting_did(cue.metrics)


def with_shortcut_costs(findings: list[Finding], context: Context) -> list[Finding]:
    """The findings with the label findings judged again now that the place findings' model figures are final.

    A class the model recognises by a cue (`shortcut_cues`) has its images without the cue
    mistaken surely, their labels as independent of what the model sees as wrong labels' (colour seeds 3, 7 and 11:
    diamonds without their sticker, predicted triangle), so no pair labelled it is a labelling fault
    (`label_error_suspects`' shortcut_classes): its suspects go in cleanlab's order, where a wrong label the model
    never learned still ranks high and the shortcut's cost lower. On the saved benchmark runs this halved the runs
    below cleanlab's floor (benchmarks/label_regimes.py; benchmarks/README.md says where it costs). Each such pair's
    card says so, to be compared with the cue's images. The same set ranks label_errors.csv (`write_document`).
    """
    cues = shortcut_cues(findings, context.cfg)
    if not cues:
        return findings
    suspects = suspects_of(context, cues)
    labels = pair_findings(suspects, context.records, context.classes, context.cfg)
    out = [f for f in findings if f.kind != KIND.name]
    for f in labels:
        cue = cues.get(f.pair["true"])
        if cue is not None:
            f = dataclasses.replace(f, message=(
                f"{f.message} The model recognises '{f.pair['true']}' by a cue ({cue.id}: {_cue_evidence(cue)}), so "
                f"images of '{f.pair['true']}' without it are mistaken for other classes too: some of these may be "
                "that shortcut's cost rather than wrong labels, so they are ranked by their own probabilities, not as "
                f"a labelling fault; compare them with {cue.id}'s images."))
        out.append(f)
    return out


def label_error_table(suspects: pd.DataFrame, findings: list[dict], cfg: FindingsConfig) -> pd.DataFrame:
    """label_errors.csv: every suspect in the one global order, most likely label error first (rank 1), with
    the id of its pair's finding (empty for pairs too small to be reported) and why it is listed ("predicted
    <pred>"; findings.duplicate_conflict adds near-duplicates). A suspect labelled a class that the model recognises
    by a cue (`shortcut_cues`) says so in its reason, as its pair's card does: the model mistakes that
    class's images without the cue too, so the row may be the shortcut's cost (a reviewer filtering the file sees it
    on the row, without the card). A context-driven suspect says so too, with its pair's context_confusion card if
    there is one: the predicted class's map is off the object."""
    cards = {(f["kind"], f["pair"]["true"], f["pair"]["pred"]): f["id"] for f in findings
             if f["kind"] in (KIND.name, "context_confusion")}
    finding = [cards.get(("context_confusion" if context else KIND.name, t, p), "")
               for t, p, context in zip(suspects["label"], suspects["pred"], suspects["context_driven"])]
    cues = {name: f.id for name, f in shortcut_cues([Finding(**f) for f in findings], cfg).items()}
    reason = [f"predicted {pred}"
              + (f"; the map of {pred} is off the object, where it usually sits on {pred}'s: may be context rather "
                 "than the label" if context else "")
              + (f"; '{label}' is recognised by a cue ({cues[label]}): may be that shortcut's cost"
                 if label in cues else "")
              for label, pred, context in zip(suspects["label"], suspects["pred"], suspects["context_driven"])]
    table = suspects.assign(finding=finding, rank=np.arange(1, len(suspects) + 1), reason=reason)
    return table.loc[:, list(LABEL_ERROR_COLUMNS)].round(
        {"p_pred": 6, "p_true": 6, "threshold": 6, "object_score": 6, "label_object_score": 6, "suspicion": 6}
    )

