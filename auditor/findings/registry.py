"""The rules, in one explicit list, and what is read from their kinds.

Adding a rule is one new module (a `KIND` and a `find(records, maps, masks, classes, cfg, context=None)`; copy
`background_reliance.py` and its tests in tests/test_findings.py) and one line in `RULES`. The order of `RULES`
is the order findings of equal severity are listed in.
"""

from __future__ import annotations

import dataclasses
import re

from auditor.config import FindingsConfig
from auditor.findings import (
    background_reliance,
    causal_evidence,
    context_confusion,
    duplicate_conflict,
    model_health,
    property_shortcut,
    repeated_mark,
    spatial_shortcut,
    strategy_cluster,
    suspected_label_error,
)
from auditor.findings.context import Context
from auditor.findings.places import regions_overlap
from auditor.findings.record import SEVERITIES, Finding, Kind, more_severe

# Every module that declares a kind; those with a `find` are run by `find_all`, in this order. The causal
# check's kind (recognised_without_object) is made from causal.csv instead (see run.apply_causal), and
# repeated_mark from the images (auditor.mark_search); property_shortcut is found here, then tested on the model
# by auditor.properties.
RULES = (
    model_health,
    background_reliance,
    spatial_shortcut,
    strategy_cluster,
    repeated_mark,
    causal_evidence,
    context_confusion,
    suspected_label_error,
    duplicate_conflict,
    property_shortcut,
)
KINDS: dict[str, Kind] = {module.KIND.name: module.KIND for module in RULES}


def scope_of(kind: str) -> str:
    """"run", "class" or "pair" (an unknown kind, as from a newer findings.json, is about neither)."""
    return KINDS[kind].scope if kind in KINDS else "other"


def number(findings: list[Finding]) -> list[Finding]:
    """Order by severity then kind (a rule's own order kept within) and assign ids F001, F002, ..."""
    kind_rank = {kind: i for i, kind in enumerate(KINDS)}
    ordered = sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), kind_rank.get(f.kind, len(KINDS)), f.kind))
    return [dataclasses.replace(f, id=f"F{i:03d}") for i, f in enumerate(ordered, start=1)]


# Which finding tells a problem at a place best: the one kept when two kinds report the same class and place.
PLACE_PRIORITY = ("spatial_shortcut", "strategy_cluster", "background_reliance")
SAME_GROUP = 0.9  # a cluster whose maps peaking at a shortcut's place are this share of the class's that peak there
# is the images the shortcut stands for (a frame on two thirds of a class: 66 % of the class, 66 % hit rate)


def same_problem(a: Finding, b: Finding, cfg: FindingsConfig) -> bool:
    """Two class findings about one problem: the same class, and the same place, or off the object both.

    A strategy cluster of a minority of its class at the same place as a shortcut of the whole class is a
    different group of images, unless the cluster's maps peaking there are nearly all of the class's maps that
    peak there (SAME_GROUP): then the shortcut is that cluster, seen in the class's mean. One holding most of the
    class (over spray_majority_share) is the class's own strategy, said twice. A background_reliance (no region:
    the class looks off its objects) and a place finding checked against masks (the place is off the object)
    describe one shortcut.
    """
    if a.classes != b.classes or scope_of(a.kind) != "class" or scope_of(b.kind) != "class" or a.kind == b.kind:
        return False
    kinds = {a.kind, b.kind}
    if kinds == {"spatial_shortcut", "strategy_cluster"}:
        cluster, other = (a, b) if a.kind == "strategy_cluster" else (b, a)
        share = cluster.metrics.get("cluster_share", 0.0)
        its_peaks = share * cluster.metrics.get("hit_rate", 0.0) >= SAME_GROUP * other.metrics.get("hit_rate", 1.0)
        return (cluster.region is not None and other.region is not None
                and (share > cfg.spray_majority_share or its_peaks)
                and regions_overlap(cluster.region, other.region))  # fmt: skip
    if kinds == {"spatial_shortcut", "background_reliance"}:
        place = a if a.kind == "spatial_shortcut" else b
        return "place_on_object" in place.metrics
    return False


def merge(keep: Finding, other: Finding) -> Finding:
    """One finding with both kinds of evidence: the other's metrics prefixed by its kind, its sentence added."""
    extra = {f"{other.kind}.{name}": value for name, value in other.metrics.items()}
    return dataclasses.replace(
        keep,
        severity=more_severe(keep.severity, other.severity),
        metrics={**keep.metrics, **extra},
        message=f"{keep.message} Also {other.kind.replace('_', ' ')}: {other.message}",
    )


_ALSO = re.compile(r" Also ([a-z]+(?: [a-z]+)*): ")  # how `merge` joins the sentences; no rule writes "Also x: "


def merged_sentences(message: str) -> list[tuple[str, str]]:
    """A finding's message as (kind in words, sentence) pairs, the finding's own first with kind "": the report
    shows the sentences of the findings merged into it (`merge`, nested or not) each on its own line."""
    parts = _ALSO.split(message)
    return [("", parts[0])] + list(zip(parts[1::2], parts[2::2], strict=True))


def without_repeats(findings: list[Finding], cfg: FindingsConfig) -> list[Finding]:
    """One problem, one finding (`same_problem`). A majority strategy cluster at a shortcut's place is the
    class's own strategy found twice from the same maps: dropped. Findings of two kinds of evidence about one
    problem are merged into the one that tells the place best (`PLACE_PRIORITY`), keeping both; a shortcut that is
    a minority cluster's images is merged into that cluster, which says which images carry it."""
    out: list[Finding] = []
    for f in findings:
        twin = next((i for i, g in enumerate(out) if same_problem(f, g, cfg)), None)
        if twin is None:
            out.append(f)
        else:
            out[twin] = one_problem(out[twin], f, cfg)
    return out


def one_problem(g: Finding, f: Finding, cfg: FindingsConfig) -> Finding:
    """The one finding for two class findings of different kinds about one problem (`without_repeats`)."""
    keep, other = (f, g) if PLACE_PRIORITY.index(f.kind) < PLACE_PRIORITY.index(g.kind) else (g, f)
    if other.kind == "strategy_cluster" and other.metrics.get("cluster_share", 1.0) <= cfg.spray_majority_share:
        return merge(other, keep)  # the shortcut is part of the class: the cluster names which images
    return keep if other.kind == "strategy_cluster" else merge(keep, other)


def find_all(records, maps, masks, classes, cfg: FindingsConfig, probs=None, context: Context | None = None):
    """Run every rule; return the numbered findings and notes on what could not be judged and why."""
    if not cfg.enabled:
        return [], ["Bias findings are switched off (findings.enabled = false)."]
    context = context or Context(records, maps, masks, classes, cfg, probs=probs)
    notes = []
    needs_masks = [m.KIND.name for m in RULES if m.KIND.needs_masks and hasattr(m, "find")]
    if not context.has_masks:
        notes.append(
            f"No image has an object mask, so {' and '.join(needs_masks)} were skipped, and spatial_shortcut and "
            "strategy_cluster could not check against masks that the flagged place is off the object: they stay "
            "low unless the place's pixels are the same across the images (place evidence, which needs the model); "
            "set data.masks to judge attention against objects."
        )
    elif context.maps_miss_objects:
        notes.append(
            f"The maps mostly miss the objects in every class (median class object score "
            f"{context.class_score.median():.2f}), so background_reliance and context_confusion findings are weak "
            "here: check that the masks cover the objects and that the CAM layer is not too coarse, and trust the "
            "causal check over the maps (unless findings.causal is off, it reads every class in such a run)."
        )
    findings: list[Finding] = []
    for module in RULES:
        if hasattr(module, "find") and (context.has_masks or not module.KIND.needs_masks):
            findings += module.find(records, maps, masks, classes, cfg, context=context)
    findings = without_repeats(findings, cfg)
    judged = context.correct(cfg.min_support)  # the class rules have grouped them already
    unjudged = [name for i, name in enumerate(classes) if i not in judged]
    if unjudged:
        shown = ", ".join(unjudged[:10]) + (f" and {len(unjudged) - 10} more" if len(unjudged) > 10 else "")
        notes.append(
            f"{len(unjudged)} classes have fewer than {cfg.min_support} correctly classified images and were not "
            f"judged by the class rules: {shown}."
        )
    return number(model_health.cap_findings(findings)), notes
