"""Rule: a class whose images depart from the other classes' in a global property (brighter, bluer, blurrier,
smaller, greyscale), then judged by whether the model uses it (`auditor.properties.property_check`).

Such a cue covers the whole image, so no heatmap can point at it. Datalab and Deepchecks report the correlation of
these properties with the label; a correlation alone says nothing about the model, so the rule reports it at low,
and only the model check raises it: normalising the property on the class's own images must lose the class, or
shifting other classes' images toward it must turn them into the class, beyond a control edit of the same size
that leaves the property alone. A property the model does not use stays low (a fact about the data, worth a look
when collecting more, never a finding about the model), as repeated_mark's marks do.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from auditor.config import FindingsConfig
from auditor.findings.context import Context
from auditor.findings.record import Finding, Kind, metrics
from auditor.findings.stats import bootstrap_mean
from auditor.property_names import COLUMN, PIXEL_PROPERTIES, PROPERTIES

WORDS = {"brightness": ("brighter", "darker"), "contrast": ("more contrasted", "flatter"),
         "cast_rg": ("redder", "greener"), "cast_yb": ("yellower", "bluer"), "saturation": ("more saturated", "paler"),
         "sharpness": ("sharper", "blurrier"), "greyscale": ("more often greyscale", "less often greyscale"),
         "size": ("larger", "smaller"), "aspect": ("wider", "taller")}

KIND = Kind(
    name="property_shortcut",
    scope="class",
    needs_masks=False,
    advice=(
        "Compare the images of {classes} with other classes' on the named property (the histogram): if it comes "
        "from how they were collected (a camera, a setting, a source), add images of {classes} without it and of "
        "other classes with it, or normalise it in preprocessing and augmentation, then retrain."
    ),
)


def departure(ours: np.ndarray, rest: np.ndarray, cfg: FindingsConfig) -> tuple[float, float, float] | None:
    """How far the class's values lie from the other classes' mean, in standard deviations of all the values
    (Cohen's d against the whole run, so a binary property such as greyscale has one too), with a bootstrap
    interval over the class's images. None where every value is the same."""
    spread = float(np.concatenate([ours, rest]).std())
    if len(ours) == 0 or len(rest) == 0 or spread <= 1e-9:
        return None
    return bootstrap_mean((ours - rest.mean()) / spread, cfg)


def find(records, maps, masks, classes, cfg: FindingsConfig, context: Context | None = None) -> list[Finding]:
    """Per class (min_support images or more, and as many of the others), its most departing property whose
    effect's interval lies beyond property_min_effect standard deviations: low, until the model check tests it."""
    names = [name for name in PROPERTIES if COLUMN + name in records]
    if not names or not cfg.property_min_effect:
        return []
    labels = records["label_idx"].to_numpy()
    findings = []
    for c in np.unique(labels):
        ours = labels == c
        if ours.sum() < cfg.min_support or (~ours).sum() < cfg.min_support:
            continue
        departing = []
        for name in names:
            values = records[COLUMN + name].to_numpy(dtype=np.float64)
            finite = np.isfinite(values)
            found = departure(values[ours & finite], values[~ours & finite], cfg)
            if found is not None and min(abs(found[1]), abs(found[2])) >= cfg.property_min_effect \
                    and found[1] * found[2] > 0:
                departing.append((min(abs(found[1]), abs(found[2])), name, found, values, finite))
        if departing:
            departing.sort(key=lambda d: -d[0])
            findings.append(_finding(records, classes, int(c), ours, departing, cfg))
    return sorted(findings, key=lambda f: -abs(f.metrics["effect"]))


def _finding(records, classes, c: int, ours, departing: list, cfg: FindingsConfig) -> Finding:
    """One finding per class, about its most departing property; every departing one's figures in the metrics
    (<name>_class_mean, <name>_rest_mean, <name>_effect, ...), for the model check to test each."""
    _, name, (effect, _, _), values, finite = departing[0]
    mine, rest = values[ours & finite], values[~ours & finite]
    order = np.argsort(-np.sign(effect) * values[ours], kind="stable")  # the most departing images first
    ids = records["id"].to_numpy()[ours][order][: cfg.max_samples]
    each = {}
    for _, other, (e, e_lo, e_hi), v, ok in departing:
        each.update({f"{other}_class_mean": float(v[ours & ok].mean()),
                     f"{other}_rest_mean": float(v[~ours & ok].mean()),
                     f"{other}_effect": e, f"{other}_effect_ci_low": e_lo, f"{other}_effect_ci_high": e_hi})
    f = Finding(
        kind=KIND.name, severity="low", classes=[classes[c]], samples=[str(i) for i in ids],
        metrics=metrics(n=len(mine), class_median=float(np.median(mine)), rest_median=float(np.median(rest)),
                        **each),
        message="",
    )  # fmt: skip
    untested = "not tested on the model" if name in PIXEL_PROPERTIES else (
        "a property of the file, which the model input loses in resizing: not tested on the model")
    return about(f, name, untested)


def about(f: Finding, name: str, tested: str) -> Finding:
    """The finding told about property `name` (its headline metrics: property, class_mean, rest_mean, effect),
    ending with what the model check found, `tested`."""
    m = f.metrics
    effect, lo, hi = m[f"{name}_effect"], m[f"{name}_effect_ci_low"], m[f"{name}_effect_ci_high"]
    others = [p for p in PROPERTIES if f"{p}_effect" in m and p != name]
    also = f"; it also departs on {', '.join(others)}" if others else ""
    word = WORDS[name][0 if effect > 0 else 1]
    headline = {"property": PROPERTIES.index(name), "class_mean": m[f"{name}_class_mean"],
                "rest_mean": m[f"{name}_rest_mean"], "effect": effect, "effect_ci_low": lo, "effect_ci_high": hi}
    return dataclasses.replace(f, metrics={**m, **headline}, message=(
        f"'{f.classes[0]}' images are {word} than other classes' ({name} {headline['class_mean']:.3g} against "
        f"{headline['rest_mean']:.3g}, {abs(effect):.1f} standard deviations, interval {lo:.1f} to {hi:.1f}){also}; "
        f"{tested}."))


def judged(f: Finding, figures: dict[str, dict], cfg: FindingsConfig) -> Finding:
    """The finding re-judged on the model's figures (`auditor.properties.property_check`, per property tested),
    about the property the model reacts to most, each figure net of its control: high when shifting it turns
    many other classes' images into the class (the place evidence's transplant_min_gap), medium when it turns
    some (transplant_min_effect) or normalising it loses the class for some of its own images
    (erasure_min_effect), else low: the model does not use it."""
    def net(fig):
        return (fig["shifted_gained"] - fig["shifted_gained_control"],
                fig["normalised_lost"] - fig["normalised_lost_control"])

    name = max(figures, key=lambda n: max(net(figures[n])))
    fig = figures[name]
    gained, lost = net(fig)
    if gained >= cfg.transplant_min_gap:
        level = "high"
    elif gained >= cfg.transplant_min_effect or lost >= cfg.erasure_min_effect:
        level = "medium"
    else:
        level = "low"
    tested = (f"normalising {name} on {fig['normalised_n']} of its images lost the class for "
              f"{fig['normalised_lost']:.0%} (control edit {fig['normalised_lost_control']:.0%}), shifting "
              f"it on {fig['shifted_n']} other classes' images turned {fig['shifted_gained']:.0%} into it "
              f"(control {fig['shifted_gained_control']:.0%})")
    others = [n for n in figures if n != name]
    verdict = "the model uses it" if level != "low" else "the model does not use it" + (
        f" (nor {', '.join(others)})" if others else "")
    f = dataclasses.replace(f, severity=level, metrics={**f.metrics, **metrics(**fig, shifted_effect=gained,
                                                                               normalised_effect=lost)})
    return about(f, name, f"{tested}: {verdict}")
