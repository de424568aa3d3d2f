"""Rule: a confused pair true -> pred whose predicted-class maps fall off the object (needs masks)."""

from __future__ import annotations

import numpy as np

from auditor.config import FindingsConfig
from auditor.findings.context import Context, informative, sample_ids
from auditor.findings.record import Finding, Kind, metrics
from auditor.findings.stats import bootstrap_mean, object_score

KIND = Kind(
    name="context_confusion",
    scope="pair",
    needs_masks=True,
    advice=(
        "Review the images labelled {true} and predicted {pred}: add examples of {true} in the contexts where "
        "{pred} usually appears, and re-crop images where the object is small or cut off."
    ),
)


def find(records, maps, masks, classes, cfg: FindingsConfig, context: Context | None = None) -> list[Finding]:
    """A confused pair whose predicted-class maps fall off the object: confused by context.

    Only where the model looks at the true class's objects when it is right, else an off-object map says
    nothing; and high only where the predicted class's maps sit on its own objects when it is right, else an
    off-object map of that class is its habit, not this pair's context. Pairs confused while looking at the
    object are reported as low severity, as similar objects, not bias; pairs in between are left alone.
    """
    reference = Context.of(context, records, maps, masks, classes, cfg).class_score
    wrong = records[~records["correct"].astype(bool) & informative(records, "pred_energy_in_mask", cfg)]
    wrong = wrong.assign(score=object_score(wrong["pred_energy_in_mask"], wrong["mask_area"]))
    class_size = records.groupby("label_idx").size()
    findings = []
    for (t, p), group in wrong.groupby(["label_idx", "pred_idx"]):
        if len(group) < cfg.pair_min_count:
            continue
        mean, lo, hi = bootstrap_mean(group["score"], cfg)
        true_score = reference.get(t, reference.median())
        pred_score = reference.get(p, np.nan)
        rate = len(group) / class_size[t]
        true, pred = classes[int(t)], classes[int(p)]
        energy = group["pred_energy_in_mask"].mean()
        if hi < cfg.context_max_score and true_score >= cfg.on_object_score:
            pred_on_object = pred_score >= cfg.on_object_score  # else off-object is how its maps always look
            high = rate >= cfg.context_high_rate and true_score >= cfg.clear_object_score and pred_on_object
            severity, order = ("high" if high else "medium"), group["score"].to_numpy()
            message = (
                f"{len(group)} images of {true!r} are predicted {pred!r} from context: the {pred!r} maps put only "
                f"{energy:.0%} of their attention on the object (object score {mean:.2f}, {true_score:.2f} when "
                f"{true!r} is recognised), so look for a background or co-occurring object these images share "
                f"with {pred!r}."
            )
            if not pred_on_object:
                message += (
                    f" The {pred!r} maps sit off the object even when {pred!r} is right (object score "
                    f"{pred_score:.2f}), so this may be how those maps look rather than this pair's context."
                )
        elif lo >= cfg.context_max_score:
            severity, order = "low", -group["score"].to_numpy()
            message = (
                f"{len(group)} images of {true!r} are predicted {pred!r} while looking at the object "
                f"(object score {mean:.2f}): the objects look alike, which is not a dataset bias; clearer or more "
                "examples of both classes would help."
            )
        else:
            continue
        findings.append(Finding(
            kind=KIND.name, severity=severity, classes=[true, pred], pair={"true": true, "pred": pred},
            samples=sample_ids(group, np.argsort(order, kind="stable"), cfg),
            metrics=metrics(
                count=len(group), rate=rate, energy_in_mask=energy, mask_area=group["mask_area"].mean(),
                object_score=mean, object_score_ci_low=lo, object_score_ci_high=hi, true_class_object_score=true_score,
                pred_class_object_score=pred_score,
            ),
            message=message,
        ))  # fmt: skip
    return sorted(findings, key=lambda f: -f.metrics["count"])
