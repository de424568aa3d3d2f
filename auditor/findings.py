"""Bias findings: rules that turn the run directory's records and maps into a short list a reviewer can act on.

Every rule is a pure function `rule(records, maps, masks, classes, cfg) -> list[Finding]` (ydata-profiling's
alerts), with every threshold in `FindingsConfig`, so the rules are tested on hand-made tables without a model.
`find_all` runs them, `write_findings` writes `findings.json` into a run directory.

Attention is judged with the *object score* (see `object_score`): a map spread evenly puts the mask's area
share on the object, so energy_in_mask alone would make every small object look like background reliance.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.linalg
from scipy import ndimage
from scipy.sparse.csgraph import laplacian
from sklearn.cluster import SpectralClustering
from sklearn.neighbors import kneighbors_graph

from auditor.config import FindingsConfig
from auditor.runs import clean_floats, load_run, write_atomic, write_json

SCHEMA_VERSION = 1
SEVERITIES = ("high", "medium", "low")
KINDS = (
    "background_reliance", "spatial_shortcut", "strategy_cluster", "recognised_without_object",  # about one class
    "context_confusion", "suspected_label_error",  # about a pair
)  # fmt: skip
CLASS_KINDS = KINDS[:4]  # the causal check (auditor.causal) speaks to these; it adds recognised_without_object
FINDING_KEYS = ("id", "kind", "severity", "classes", "pair", "region", "samples", "metrics", "message")


@dataclass(kw_only=True)
class Finding:
    """One entry of findings.json; the fields are its keys, in its order."""

    id: str = ""  # assigned by `number` once all rules have run
    kind: str
    severity: str
    classes: list[str]
    pair: dict[str, str] | None = None  # {"true": name, "pred": name} for a confused pair
    region: list[float] | None = None  # [x0, y0, x1, y1] normalised to [0, 1] of the input
    samples: list[str] = field(default_factory=list)  # sample ids, most telling first
    metrics: dict[str, float] = field(default_factory=dict)
    message: str

    def to_dict(self) -> dict:
        return clean_floats(dataclasses.asdict(self))


# ---------------------------------------------------------------------------------------------- shared helpers


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


def attention_share(maps) -> np.ndarray:
    """Maps [n, S, S] as distributions of positive attention (sum 1); an all-zero map becomes even (no place)."""
    maps = np.clip(np.asarray(maps, dtype=np.float32), 0.0, None)
    total = maps.sum(axis=(1, 2), keepdims=True)
    even = np.full_like(maps, 1.0 / (maps.shape[1] * maps.shape[2]))
    return np.where(total > 0, maps / np.where(total > 0, total, 1.0), even)


def hot_region(mean_map: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """Cell box (y0, y1, x0, x1), end exclusive, around the peak's connected cells at >= threshold * peak."""
    peak = np.unravel_index(np.argmax(mean_map), mean_map.shape)
    labels, _ = ndimage.label(mean_map >= threshold * mean_map.max())
    ys, xs = np.nonzero(labels == labels[peak])
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def box_share(share: np.ndarray, box) -> np.ndarray:
    y0, y1, x0, x1 = box
    return share[:, y0:y1, x0:x1].sum(axis=(1, 2))


def peaks(share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell (ys, xs) of each map's maximum."""
    return np.unravel_index(share.reshape(len(share), -1).argmax(axis=1), share.shape[1:])


def peak_in_box(peak_cells, box) -> np.ndarray:
    y0, y1, x0, x1 = box
    ys, xs = peak_cells
    return (ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)


def box_area(box, size: int) -> float:
    y0, y1, x0, x1 = box
    return (y1 - y0) * (x1 - x0) / size**2


def normalised_box(box, size: int, pad: int = 0) -> list[float]:
    """Cell box (y0, y1, x0, x1) as [x0, y0, x1, y1] in [0, 1], grown by `pad` cells on each side."""
    y0, y1, x0, x1 = max(0, box[0] - pad), min(size, box[1] + pad), max(0, box[2] - pad), min(size, box[3] + pad)
    return [round(x0 / size, 4), round(y0 / size, 4), round(x1 / size, 4), round(y1 / size, 4)]


def reported_region(box, size: int, cfg: FindingsConfig) -> list[float]:
    """A finding's region: the hot cells grown by cfg.region_pad_cells, because the upsampled map spreads each
    coarse feature cell over its neighbours, so the cells at half the peak can sit beside the artefact's
    centre rather than on it; a region that errs wide still holds the artefact (and the causal check erases it)."""
    return normalised_box(box, size, cfg.region_pad_cells)


def describe_place(box, size: int) -> str:
    """'top-right corner', 'left edge', 'centre': words a reviewer finds in the image."""
    y0, y1, x0, x1 = box
    cy, cx = (y0 + y1) / (2 * size), (x0 + x1) / (2 * size)
    vertical = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else None
    horizontal = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else None
    if vertical and horizontal:
        return f"{vertical}-{horizontal} corner"
    if vertical or horizontal:
        return f"{vertical or horizontal} edge"
    return "centre"


def masked_rows(group: pd.DataFrame) -> np.ndarray | None:
    """Which of the group's images have a mask, or None when fewer than half do (too few to judge by)."""
    masked = group["has_mask"].to_numpy(dtype=bool)
    return masked if masked.any() and 2 * masked.sum() >= len(group) else None


def place_on_object(group: pd.DataFrame, share: np.ndarray, masks, box) -> float:
    """Mean share of the attention inside the box that falls on the object (NaN without enough masks).

    High when the objects themselves sit at the place: then the place is the object, not a shortcut.
    """
    masked = masked_rows(group)
    if masked is None:
        return math.nan
    y0, y1, x0, x1 = box
    inside = share[masked, y0:y1, x0:x1]
    obj = np.asarray(masks[group["row"].to_numpy()[masked], y0:y1, x0:x1], dtype=np.float32)
    return float(((inside * obj).sum(axis=(1, 2)) / np.maximum(inside.sum(axis=(1, 2)), 1e-12)).mean())


def peak_spread(group: pd.DataFrame, share: np.ndarray, masks, box) -> tuple[float, float]:
    """Spread of the peaks that fall in the box, in the image and around the object's centre (NaN without masks).

    A place the attention returns to while the objects move stays put in the image; attention on a part of the
    object moves with it, and stays put relative to the object instead. Maps peaking elsewhere (on the object,
    beside a patch that draws only part of the attention) say nothing about the box.
    """
    masked = masked_rows(group)
    if masked is None:
        return math.nan, math.nan
    obj = np.asarray(masks[group["row"].to_numpy()[masked]], dtype=np.float32)
    weight = obj.sum(axis=(1, 2))
    peak_cells = peaks(share[masked])
    keep = (weight > 0) & peak_in_box(peak_cells, box)
    if not keep.any():
        return math.nan, math.nan
    centre = (np.arange(obj.shape[1]) + 0.5) / obj.shape[1]
    cy, cx = (obj.sum(axis=2) @ centre)[keep] / weight[keep], (obj.sum(axis=1) @ centre)[keep] / weight[keep]
    py, px = centre[peak_cells[0][keep]], centre[peak_cells[1][keep]]
    return float(np.hypot(py.std(), px.std())), float(np.hypot((py - cy).std(), (px - cx).std()))


def on_the_object(group: pd.DataFrame, share: np.ndarray, masks, box, cfg: FindingsConfig) -> tuple[bool, dict]:
    """Whether masks show a place is the object: attention there falls on it, or the peaks move with it."""
    on_object = place_on_object(group, share, masks, box)
    in_image, around_object = peak_spread(group, share, masks, box)
    follows = around_object <= cfg.place_follow_ratio * in_image  # False when unmeasured (NaN)
    evidence = {"place_on_object": on_object, "peak_spread": in_image, "peak_spread_around_object": around_object}
    return bool(on_object > cfg.place_max_on_object or follows), evidence


def focus(share: np.ndarray) -> float:
    """Peak of the mean map over the mean peak of the maps: 1 when every map peaks at the same cells.

    A watermark draws the same spot each time; objects that merely cluster in one area spread the mean map out.
    """
    return float(share.mean(axis=0).max() / share.max(axis=(1, 2)).mean())


def informative(records: pd.DataFrame, energy_column: str, cfg: FindingsConfig) -> pd.Series:
    """Rows whose mask can tell object from background: a mask, a measured energy, an object that is not all."""
    area = records["mask_area"]
    return (
        records["has_mask"].astype(bool) & records[energy_column].notna()
        & (area > 0) & (area <= cfg.max_mask_area)
    )  # fmt: skip


def sample_ids(records: pd.DataFrame, order, cfg: FindingsConfig) -> list[str]:
    """Ids of records in the given order (most telling first), capped at cfg.max_samples."""
    order = np.asarray(order)[: cfg.max_samples]
    return [str(i) for i in records["id"].to_numpy()[order]]


def metrics(**values) -> dict[str, float]:
    """Finite values only (findings.json holds numbers, not nulls), floats rounded for reading."""
    out = {}
    for name, value in values.items():
        if value is None or not np.isfinite(value):
            continue
        out[name] = int(value) if isinstance(value, (int, np.integer)) else round(float(value), 4)
    return out


def correct_by_class(records: pd.DataFrame, min_support: int) -> dict[int, pd.DataFrame]:
    """Correctly classified images per class, for classes with at least min_support of them."""
    correct = records[records["correct"].astype(bool)]
    return {int(c): g for c, g in correct.groupby("label_idx") if len(g) >= min_support}


def class_maps(maps, group: pd.DataFrame) -> np.ndarray:
    """Predicted-class attention shares of a group's images (for correct images: also the true class's)."""
    return attention_share(maps[group["row"].to_numpy(), 0])


# ----------------------------------------------------------------------------------------------------- rules


def object_scores(records: pd.DataFrame, cfg: FindingsConfig) -> pd.DataFrame:
    """The correct, informative images, each with its object score."""
    use = records[records["correct"].astype(bool) & informative(records, "pred_energy_in_mask", cfg)]
    return use.assign(score=object_score(use["pred_energy_in_mask"], use["mask_area"]))


def class_object_score(scored: pd.DataFrame, cfg: FindingsConfig) -> pd.Series:
    """Mean object score per class (label_idx) over classes with min_support correct, informative images.

    This is how the model looks at a class's objects when it is right: the yardstick rules 1, 5 and 6 use.
    """
    counts = scored.groupby("label_idx")["score"].agg(["mean", "size"])
    return counts.loc[counts["size"] >= cfg.min_support, "mean"]


def background_reliance(records, maps, masks, classes, cfg: FindingsConfig) -> list[Finding]:
    """Rule 1: a class whose correct predictions look mostly outside the object.

    Judged against chance (object score 0) and against the median of the other classes, with a bootstrap
    interval. High: at chance while the other classes clearly look at their objects; medium: near chance and
    clearly below them; low: near chance where the other classes are too (the maps do not track objects here).
    """
    scored = object_scores(records, cfg)
    class_score = class_object_score(scored, cfg)
    findings = []
    for c in class_score.index:
        group = scored[scored["label_idx"] == c]
        energy = group["pred_energy_in_mask"].mean()
        mean, lo, hi = bootstrap_mean(group["score"], cfg)
        others = class_score.drop(c)
        reference = float(others.median()) if len(others) else math.nan
        chance = hi <= cfg.uniform_score
        near_chance = hi < cfg.on_object_score  # small objects score low by blur alone, but not this low
        below_others = reference - hi >= cfg.background_min_gap  # the gap's lower bound; False when NaN
        contrast = reference >= cfg.on_object_score  # the others do look at their objects
        clear = reference >= cfg.clear_object_score  # ... clearly enough to trust the maps alone with a high
        if energy >= cfg.background_max_energy or not near_chance or not (chance or below_others):
            continue
        severity = "high" if chance and below_others and clear else "medium" if below_others and contrast else "low"
        name, area = classes[int(c)], group["mask_area"].mean()
        findings.append(Finding(
            kind="background_reliance",
            severity=severity,
            classes=[name],
            samples=sample_ids(group, np.argsort(group["score"].to_numpy(), kind="stable"), cfg),
            metrics=metrics(
                n=len(group), energy_in_mask=energy, mask_area=area, object_score=mean, object_score_ci_low=lo,
                object_score_ci_high=hi, others_object_score=reference, gap=reference - mean,
                gap_ci_low=reference - hi, gap_ci_high=reference - lo,
            ),
            message=(
                f"Class {name!r} is recognised mostly outside its object: correct predictions put {energy:.0%} of "
                f"their attention on objects covering {area:.0%} of the image (object score {mean:.2f}, "
                f"{_others(reference)}), so look for a background or context that comes with this class."
            ),
        ))  # fmt: skip
    return sorted(findings, key=lambda f: f.metrics["object_score"])


def _others(reference: float) -> str:
    return f"other classes {reference:.2f}" if np.isfinite(reference) else "no other class to compare"


def class_summaries(records: pd.DataFrame, maps, cfg: FindingsConfig) -> dict[int, tuple[np.ndarray, tuple]]:
    """Mean attention map and each map's peak cell, per class with min_support correct images.

    What a class's place is compared with; kept instead of the maps themselves to bound memory.
    """
    summaries = {}
    for c, group in correct_by_class(records, cfg.min_support).items():
        share = class_maps(maps, group)
        summaries[c] = (share.mean(axis=0), peaks(share))
    return summaries


def others_at(summaries: dict, c: int, box, size: int) -> tuple[float, float]:
    """Median over the other classes of (attention share, peak rate) in the box; chance without other classes."""
    others = [v for k, v in summaries.items() if k != c]
    if not others:
        return box_area(box, size), box_area(box, size)
    share = np.median([box_share(mean_map[None], box)[0] for mean_map, _ in others])
    hits = np.median([peak_in_box(peak_cells, box).mean() for _, peak_cells in others])
    return float(share), float(hits)


def spatial_shortcut(records, maps, masks, classes, cfg: FindingsConfig) -> list[Finding]:
    """Rule 2: a class whose attention keeps returning to one small place (watermark, ruler, logo, border).

    Needs no masks: the place is compared with where the other classes look. With masks, a place where the
    attention falls on the object, or whose peaks move with the object, is the object, not a shortcut; without
    masks the finding stays medium because that cannot be ruled out.
    """
    summaries = class_summaries(records, maps, cfg)
    findings = []
    for c, group in correct_by_class(records, cfg.min_support).items():
        mean_map, peak_cells = summaries[c]
        size = mean_map.shape[0]
        box = hot_region(mean_map, cfg.region_threshold)
        area = box_area(box, size)
        hits = peak_in_box(peak_cells, box).mean()
        if area > cfg.max_region_area or hits < cfg.shortcut_min_hit_rate:
            continue
        others_share, others_hits = others_at(summaries, c, box, size)
        share = class_maps(maps, group)
        in_box = box_share(share, box)
        mean, lo, hi = bootstrap_mean(in_box, cfg)
        is_object, evidence = on_the_object(group, share, masks, box, cfg)
        if lo - others_share < cfg.shortcut_min_gap or is_object:
            continue
        strong = hits >= cfg.shortcut_high_hit_rate and lo - others_share >= cfg.shortcut_high_gap
        checked = np.isfinite(evidence["place_on_object"])
        name, place = classes[c], describe_place(box, size)
        unchecked = "" if checked else " (no masks to rule out that the object sits there)"
        findings.append(Finding(
            kind="spatial_shortcut",
            severity="high" if strong and checked else "medium",
            classes=[name],
            region=reported_region(box, size, cfg),
            samples=sample_ids(group, np.argsort(-in_box, kind="stable"), cfg),
            metrics=metrics(
                n=len(group), hit_rate=hits, others_hit_rate=others_hits, share=mean, share_ci_low=lo,
                share_ci_high=hi, others_share=others_share, gap=mean - others_share,
                gap_ci_low=lo - others_share, region_area=area, focus=focus(share), **evidence,
            ),
            message=(
                f"Class {name!r} keeps looking at the {place}: {hits:.0%} of its correct maps peak there "
                f"(other classes {others_hits:.0%}) with {mean:.0%} of their attention, so check these images "
                f"for a watermark, logo, ruler or border there{unchecked}."
            ),
        ))  # fmt: skip
    return sorted(findings, key=lambda f: -f.metrics["gap"])


def downsample(share: np.ndarray, size: int) -> np.ndarray:
    """Block sums to size x size (any S >= size), so each downsampled map still sums to 1."""
    edges = np.linspace(0, share.shape[1], size + 1).astype(int)[:-1]
    return np.add.reduceat(np.add.reduceat(share, edges, axis=1), edges, axis=2)


def knn_affinity(features: np.ndarray, neighbors: int) -> np.ndarray:
    """Symmetric k-nearest-neighbour connectivity, the affinity SpRAy (Lapuschkin et al. 2019) uses."""
    graph = kneighbors_graph(features, n_neighbors=min(neighbors, len(features) - 1), include_self=False)
    graph = graph.toarray()
    return 0.5 * (graph + graph.T)


def eigengap(affinity: np.ndarray, max_clusters: int) -> tuple[int, float]:
    """Number of clusters k <= max_clusters at the largest gap lambda_(k+1) - lambda_k of the normalised Laplacian.

    Each well-separated group adds an eigenvalue near 0 (lambda_1 = 0 <= lambda_2 ...), so the jump counts them.
    """
    top = min(max_clusters, len(affinity) - 1)
    values = scipy.linalg.eigh(laplacian(affinity, normed=True), eigvals_only=True, subset_by_index=[0, top])
    gaps = np.diff(values)
    k = int(np.argmax(gaps)) + 1
    return k, float(gaps[k - 1])


def spray_clusters(share: np.ndarray, cfg: FindingsConfig) -> tuple[np.ndarray, int, float]:
    """SpRAy: spectral clustering of downsampled maps, the number of clusters chosen by the eigengap."""
    features = downsample(share, cfg.spray_size).reshape(len(share), -1)
    affinity = knn_affinity(features, cfg.spray_neighbors)
    k, gap = eigengap(affinity, cfg.spray_max_clusters)
    if k == 1:
        return np.zeros(len(share), dtype=int), 1, gap
    with warnings.catch_warnings():  # separate groups are the point, not a problem
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        labels = SpectralClustering(
            n_clusters=k, affinity="precomputed", assign_labels="cluster_qr", random_state=cfg.seed
        ).fit_predict(affinity)
    return labels, k, gap


def strategy_cluster(records, maps, masks, classes, cfg: FindingsConfig) -> list[Finding]:
    """Rule 3: a subgroup of a class recognised differently (SpRAy): at a fixed place and/or off the object.

    Finds shortcuts only part of a class carries, which the class means of rules 1 and 2 dilute. With masks the
    off-object part of the maps is clustered (see `off_object`), and clusters at the same place are merged (see
    `strategies`). Classes with more than spray_max_images correct images are judged on a seeded sample of them.
    """
    summaries = class_summaries(records, maps, cfg)
    findings = []
    for c, group in correct_by_class(records, cfg.spray_min_support).items():
        if len(group) > cfg.spray_max_images:
            group = group.sample(n=cfg.spray_max_images, random_state=cfg.seed)
        share = class_maps(maps, group)
        labels, k, gap = spray_clusters(off_object(share, group, masks), cfg)
        for member in strategies(share, labels, k, cfg):
            if cfg.spray_min_cluster_share <= member.mean() <= cfg.spray_max_cluster_share:
                finding = _cluster_finding(classes[c], group, share, member, masks, cfg, summaries, c, k, gap)
                if finding is not None:
                    findings.append(finding)
    return findings


def off_object(share: np.ndarray, group: pd.DataFrame, masks) -> np.ndarray:
    """The part of each map that lies off the object where every image has a mask, else the maps as they are.

    What SpRAy clusters. Whole maps cluster mostly by where each object happens to lie; their off-object part
    groups the images by what they attend to besides the object, which is where a partial shortcut shows.
    """
    if masks is None or not group["has_mask"].astype(bool).all():
        return share
    coverage = np.asarray(masks[group["row"].to_numpy()], dtype=np.float32)
    return share * (1.0 - np.clip(coverage, 0.0, 1.0))


def box_iou(a, b) -> float:
    """IoU of two cell boxes (y0, y1, x0, x1), end exclusive."""
    h = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    w = max(0, min(a[3], b[3]) - max(a[2], b[2]))
    union = (a[1] - a[0]) * (a[3] - a[2]) + (b[1] - b[0]) * (b[3] - b[2]) - h * w
    return h * w / union if union else 0.0


def strategies(share: np.ndarray, labels: np.ndarray, k: int, cfg: FindingsConfig) -> list[np.ndarray]:
    """SpRAy's clusters, with clusters that attend to the same place merged into one strategy (member masks).

    Objects move, so the spectral clusters of a class also split by where its objects lie: a shortcut half the
    class carries comes out as several clusters that share the shortcut's place but differ in the object's.
    Judged one by one, each is a small cluster whose "rest" still holds the others; merged, they are the group.
    """
    members = [labels == j for j in range(k)]
    boxes = [hot_region(share[m].mean(axis=0), cfg.region_threshold) for m in members]
    groups: list[list[int]] = []
    for j in range(k):  # greedy single linkage: a cluster joins the first group holding a box like its own
        home = next((g for g in groups if any(box_iou(boxes[j], boxes[i]) >= cfg.spray_merge_iou for i in g)), None)
        if home is None:
            groups.append([j])
        else:
            home.append(j)
    return [np.logical_or.reduce([members[j] for j in g]) for g in groups]


def _cluster_finding(name, group, share, member, masks, cfg, summaries, c, n_clusters, eigengap) -> Finding | None:
    """A finding for one SpRAy cluster if its attention differs in kind from the rest of its class.

    At a fixed place: the cluster's maps peak in one small box (focus) where neither the rest of the class nor
    the other classes peak, and (with masks) not on the object. Off the object: its object score is well below
    the rest's.
    """
    size = share.shape[1]
    box = hot_region(share[member].mean(axis=0), cfg.region_threshold)
    hits = peak_in_box(peaks(share), box)
    hit_rate, rest_hit_rate = hits[member].mean(), hits[~member].mean()
    others_share, others_hit_rate = others_at(summaries, c, box, size)
    place_gap = hit_rate - max(rest_hit_rate, others_hit_rate)
    is_object, evidence = on_the_object(group[member], share[member], masks, box, cfg)
    cluster_focus = focus(share[member])
    in_box = box_share(share, box)
    place_share, rest_place_share = in_box[member].mean(), in_box[~member].mean()
    share_gap = place_share - max(rest_place_share, others_share)
    peaks_there = hit_rate >= cfg.shortcut_min_hit_rate and place_gap >= cfg.spray_min_gap
    # A patch next to the object may draw a steady share of the attention without winning the peak of every map.
    attention_there = share_gap >= cfg.spray_min_share_gap
    at_place = (
        box_area(box, size) <= cfg.max_region_area and (peaks_there or attention_there)
        and cluster_focus >= cfg.spray_min_focus and not is_object
    )  # fmt: skip
    usable = informative(group, "pred_energy_in_mask", cfg).to_numpy()
    score = object_score(group["pred_energy_in_mask"], group["mask_area"]).to_numpy()
    inside, outside = score[member & usable], score[~member & usable]
    off_object = (
        len(inside) > 0 and len(outside) > 0 and outside.mean() - inside.mean() >= cfg.spray_min_gap
        and group["pred_energy_in_mask"].to_numpy()[member & usable].mean() < cfg.background_max_energy
    )  # fmt: skip
    if not (at_place or off_object):
        return None
    what = []
    if at_place:
        what.append(
            f"they put {place_share:.0%} of their attention at the {describe_place(box, size)} (rest of the class "
            f"{rest_place_share:.0%}) and {hit_rate:.0%} of their maps peak there (rest {rest_hit_rate:.0%})"
        )
    if off_object:
        what.append(f"they look off the object (object score {inside.mean():.2f} vs {outside.mean():.2f})")
    order = np.flatnonzero(member)
    order = order[np.argsort(-in_box[order] if at_place else np.nan_to_num(score[order]), kind="stable")]
    return Finding(
        kind="strategy_cluster",
        severity="high" if at_place and off_object else "medium",
        classes=[name],
        region=reported_region(box, size, cfg) if at_place else None,
        samples=sample_ids(group, order, cfg),
        metrics=metrics(
            n=len(group), cluster_size=int(member.sum()), cluster_share=member.mean(), n_clusters=n_clusters,
            eigengap=eigengap, hit_rate=hit_rate, rest_hit_rate=rest_hit_rate, others_hit_rate=others_hit_rate,
            place_gap=place_gap, place_share=place_share, rest_place_share=rest_place_share, share_gap=share_gap,
            focus=cluster_focus, **evidence, object_score=inside.mean() if len(inside) else None,
            rest_object_score=outside.mean() if len(outside) else None,
        ),
        message=(
            f"{member.sum()} of {len(group)} correct images of {name!r} are recognised by another strategy: "
            f"{' and '.join(what)}; inspect them for a shortcut that only part of the class carries."
        ),
    )  # fmt: skip


def context_confusion(records, maps, masks, classes, cfg: FindingsConfig) -> list[Finding]:
    """Rule 5: a confused pair true -> pred whose predicted-class maps fall off the object (context).

    Only where the model looks at the true class's objects when it is right, else an off-object map says
    nothing. Pairs confused while looking at the object are reported as low severity, as similar objects, not
    bias; pairs in between are left alone.
    """
    reference = class_object_score(object_scores(records, cfg), cfg)
    wrong = records[~records["correct"].astype(bool) & informative(records, "pred_energy_in_mask", cfg)]
    wrong = wrong.assign(score=object_score(wrong["pred_energy_in_mask"], wrong["mask_area"]))
    class_size = records.groupby("label_idx").size()
    findings = []
    for (t, p), group in wrong.groupby(["label_idx", "pred_idx"]):
        if len(group) < cfg.pair_min_count:
            continue
        mean, lo, hi = bootstrap_mean(group["score"], cfg)
        true_score = reference.get(t, reference.median())
        rate = len(group) / class_size[t]
        true, pred = classes[int(t)], classes[int(p)]
        energy = group["pred_energy_in_mask"].mean()
        if hi < cfg.context_max_score and true_score >= cfg.on_object_score:
            high = rate >= cfg.context_high_rate and true_score >= cfg.clear_object_score
            severity, order = ("high" if high else "medium"), group["score"].to_numpy()
            message = (
                f"{len(group)} images of {true!r} are predicted {pred!r} from context: the {pred!r} maps put only "
                f"{energy:.0%} of their attention on the object (object score {mean:.2f}, {true_score:.2f} when "
                f"{true!r} is recognised), so look for a background or co-occurring object these images share "
                f"with {pred!r}."
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
            kind="context_confusion", severity=severity, classes=[true, pred], pair={"true": true, "pred": pred},
            samples=sample_ids(group, np.argsort(order, kind="stable"), cfg),
            metrics=metrics(
                count=len(group), rate=rate, energy_in_mask=energy, mask_area=group["mask_area"].mean(),
                object_score=mean, object_score_ci_low=lo, object_score_ci_high=hi, true_class_object_score=true_score,
            ),
            message=message,
        ))  # fmt: skip
    return sorted(findings, key=lambda f: -f.metrics["count"])


LABEL_ERROR_COLUMNS = (
    "rank", "id", "path", "label", "pred", "p_pred", "p_true", "threshold", "object_score", "label_object_score",
    "suspicion", "finding",
)  # fmt: skip


def label_error_suspects(records: pd.DataFrame, cfg: FindingsConfig) -> pd.DataFrame:
    """Every suspected label error of the run, most suspect first: rule 6's ranking before it groups by pair.

    An image labelled i predicted j is suspect when p_j reaches class j's mean self-confidence (confident
    learning's per-class threshold: the mean p_true of images labelled j). Where a mask exists, the maps of both
    classes must agree: the predicted-class map sits on the object (else it is context, rule 5, where the
    model's maps of class j normally sit on j's objects), and more so than the labelled class's map (by more
    than label_error_min_label_gap in object score): a mislabelled object is evidence for what it is, not for
    its label, while an object that looks like both classes (a shirt that could be a T-shirt) is ambiguous,
    not mislabelled. The more the predicted-class map sits on the object, the higher the image ranks.
    """
    self_confidence = records.groupby("label_idx")["p_true"].mean()
    reference = class_object_score(object_scores(records, cfg), cfg)
    threshold = records["pred_idx"].map(self_confidence)
    wrong = records[~records["correct"].astype(bool) & (records["p_pred"] >= threshold)]
    checked = informative(wrong, "pred_energy_in_mask", cfg)
    score = object_score(wrong["pred_energy_in_mask"], wrong["mask_area"]).where(checked)
    label_score = object_score(wrong["true_energy_in_mask"], wrong["mask_area"]).where(checked)
    context = (score < cfg.label_error_min_object_score) & (wrong["pred_idx"].map(reference) >= cfg.on_object_score)
    ambiguous = score - label_score <= cfg.label_error_min_label_gap  # False where either is unmeasured (NaN)
    suspicion = wrong["p_pred"] - wrong["p_true"] + cfg.label_error_object_weight * score.clip(0, 1).fillna(0)
    suspects = wrong.assign(
        threshold=threshold[wrong.index], object_score=score, label_object_score=label_score, suspicion=suspicion
    )[~context & ~ambiguous]
    return suspects.sort_values("suspicion", ascending=False, kind="stable")


def suspected_label_error(records, maps, masks, classes, cfg: FindingsConfig) -> list[Finding]:
    """Rule 6: confident wrong predictions (see `label_error_suspects`), grouped by pair true -> pred.

    A finding lists up to label_error_max_samples of its suspects, most suspect first: unlike a class finding's
    examples, each is an image to relabel. cleanlab is not used: it needs the full probability vector, and the
    records keep p_true and p_pred only.
    """
    suspects = label_error_suspects(records, cfg)
    class_size = records.groupby("label_idx").size()
    findings = []
    for (t, p), group in suspects.groupby(["label_idx", "pred_idx"], sort=False):
        if len(group) < cfg.label_error_min_count:
            continue
        rate = len(group) / class_size[t]
        severity = (
            "high" if rate >= cfg.label_error_high_rate else "medium" if rate >= cfg.label_error_medium_rate else "low"
        )
        true, pred = classes[int(t)], classes[int(p)]
        threshold = float(group["threshold"].iloc[0])
        findings.append(Finding(
            kind="suspected_label_error", severity=severity, classes=[true, pred], pair={"true": true, "pred": pred},
            samples=[str(i) for i in group["id"].to_numpy()[: cfg.label_error_max_samples]],  # already ranked
            metrics=metrics(
                count=len(group), rate=rate, threshold=threshold, p_pred=group["p_pred"].mean(),
                p_true=group["p_true"].mean(), object_score=group["object_score"].mean(),
                label_object_score=group["label_object_score"].mean(),
            ),
            message=(
                f"{len(group)} images labelled {true!r} are confidently predicted {pred!r} (p >= {threshold:.2f}, "
                f"the mean confidence of {pred!r}){_label_evidence(group)}; check whether their label should be "
                f"{pred!r}."
            ),
        ))  # fmt: skip
    return sorted(findings, key=lambda f: -f.metrics["count"])


def _label_evidence(group: pd.DataFrame) -> str:
    pred, label = group["object_score"].mean(), group["label_object_score"].mean()
    if not (np.isfinite(pred) and np.isfinite(label)):
        return ""
    return (
        f" and their objects draw the {pred:.2f} object score of the predicted class's maps against {label:.2f} "
        "of the label's"
    )


def label_error_table(records: pd.DataFrame, findings: list[dict], cfg: FindingsConfig) -> pd.DataFrame:
    """label_errors.csv: every suspect, in the order a reviewer should check them (rank 1 first).

    Grouped by pair in the findings' order (the most severe, most systematic pair first: a pair many confident
    suspects share is likelier a labelling fault than any single confident mistake), most suspect first within a
    pair, then the suspects of pairs too small to be reported. `finding` is the id of the pair's finding.
    """
    suspects = label_error_suspects(records, cfg)
    pair_finding = {
        (f["pair"]["true"], f["pair"]["pred"]): f["id"] for f in findings if f["kind"] == "suspected_label_error"
    }
    finding = [pair_finding.get((t, p), "") for t, p in zip(suspects["label"], suspects["pred"])]
    order = [int(f[1:]) if f[1:].isdigit() else math.inf for f in finding]  # F007 -> 7; unreported last
    table = suspects.assign(finding=finding, order=order).sort_values("order", kind="stable")  # keeps suspicion order
    table = table.assign(rank=np.arange(1, len(table) + 1))
    return table.loc[:, list(LABEL_ERROR_COLUMNS)].round(
        {"p_pred": 6, "p_true": 6, "threshold": 6, "object_score": 6, "label_object_score": 6, "suspicion": 6}
    )


RULES = (background_reliance, spatial_shortcut, strategy_cluster, context_confusion, suspected_label_error)
NEEDS_MASKS = ("background_reliance", "context_confusion")


# ------------------------------------------------------------------------------------------ running, writing


def number(findings: list[Finding]) -> list[Finding]:
    """Order by severity then kind (a rule's own order kept within) and assign ids F001, F002, ..."""
    kind_rank = {kind: i for i, kind in enumerate(KINDS)}
    ordered = sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), kind_rank.get(f.kind, len(KINDS)), f.kind))
    return [dataclasses.replace(f, id=f"F{i:03d}") for i, f in enumerate(ordered, start=1)]


def regions_overlap(a, b) -> bool:
    """Whether two normalised [x0, y0, x1, y1] regions share any area."""
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def without_repeats(findings: list[Finding], cfg: FindingsConfig) -> list[Finding]:
    """Drop a strategy_cluster holding most of its class (over spray_majority_share) where a spatial_shortcut of
    the class reports the same place: the class's own strategy is reported once, by the whole-class rule."""
    shortcuts = [f for f in findings if f.kind == "spatial_shortcut"]
    return [
        f for f in findings
        if not (f.kind == "strategy_cluster" and f.region is not None
                and f.metrics.get("cluster_share", 0.0) > cfg.spray_majority_share
                and any(s.classes == f.classes and regions_overlap(s.region, f.region) for s in shortcuts))
    ]  # fmt: skip


def find_all(records, maps, masks, classes, cfg: FindingsConfig) -> tuple[list[Finding], list[str]]:
    """Run every rule; return the numbered findings and notes on what could not be judged and why."""
    if not cfg.enabled:
        return [], ["Bias findings are switched off (findings.enabled = false)."]
    notes = []
    has_masks = bool(records["has_mask"].astype(bool).any())
    if not has_masks:
        notes.append(
            f"No image has an object mask, so {' and '.join(NEEDS_MASKS)} were skipped, and spatial_shortcut and "
            "strategy_cluster could not check that the flagged place is off the object (medium severity at most); "
            "set data.masks to judge attention against objects."
        )
    else:
        typical = class_object_score(object_scores(records, cfg), cfg).median()
        if typical < cfg.on_object_score:
            notes.append(
                f"The maps mostly miss the objects in every class (median class object score {typical:.2f}), so "
                "background_reliance and context_confusion findings are weak here: check that the masks cover the "
                "objects and that the CAM layer is not too coarse, and trust the causal check over the maps."
            )
    findings = []
    for rule in RULES:
        if has_masks or rule.__name__ not in NEEDS_MASKS:
            findings += rule(records, maps, masks, classes, cfg)
    findings = without_repeats(findings, cfg)
    judged = correct_by_class(records, cfg.min_support)
    unjudged = [name for i, name in enumerate(classes) if i not in judged]
    if unjudged:
        shown = ", ".join(unjudged[:10]) + (f" and {len(unjudged) - 10} more" if len(unjudged) > 10 else "")
        notes.append(
            f"{len(unjudged)} classes have fewer than {cfg.min_support} correctly classified images and were not "
            f"judged by the class rules: {shown}."
        )
    return number(findings), notes


def write_findings(run_dir: str | Path, cfg: FindingsConfig | None = None) -> dict:
    """Judge a finished run directory and write its findings.json (and label_errors.csv) atomically; returns
    the document.

    When the run directory holds causal.csv (auditor.causal), its accuracies are added to the class findings.
    """
    run = load_run(run_dir)
    cfg = cfg if cfg is not None else run.config.findings
    findings, notes = find_all(run.records, run.maps, run.masks, run.classes, cfg)
    causal_path = run.path / "causal.csv"
    if causal_path.is_file():
        from auditor.causal import apply_causal  # imported here: auditor.causal imports this module (and torch)

        causal = pd.read_csv(causal_path, dtype={"class": str}, keep_default_na=False, na_values=[""])
        findings = apply_causal(findings, causal, cfg)
    doc = {"schema_version": SCHEMA_VERSION, "findings": [f.to_dict() for f in findings], "notes": notes}
    problems = validate_findings(doc)
    if problems:
        raise ValueError(f"refusing to write an invalid findings.json: {'; '.join(problems)}")
    write_json(run.path / "findings.json", doc)
    label_errors = label_error_table(run.records, doc["findings"], cfg)
    write_atomic(run.path / "label_errors.csv", label_errors.to_csv(index=False))
    return doc


def validate_findings(doc) -> list[str]:
    """Every way `doc` departs from the findings.json contract, as readable problems (empty when valid)."""
    if not isinstance(doc, dict):
        return ["the document must be a JSON object"]
    problems = []
    extra = set(doc) - {"schema_version", "findings", "notes"}
    if extra:
        problems.append(f"unknown top-level keys {sorted(extra)}")
    if doc.get("schema_version") != SCHEMA_VERSION:
        problems.append(f"schema_version must be {SCHEMA_VERSION}")
    notes = doc.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        problems.append("notes must be a list of strings")
    findings = doc.get("findings")
    if not isinstance(findings, list):
        return problems + ["findings must be a list"]
    last_severity = 0
    for i, finding in enumerate(findings):
        where = f"findings[{i}]"
        if not isinstance(finding, dict) or set(finding) != set(FINDING_KEYS):
            keys = sorted(finding) if isinstance(finding, dict) else type(finding).__name__
            problems.append(f"{where} must have exactly the keys {list(FINDING_KEYS)}, not {keys}")
            continue
        problems += [f"{where}: {p}" for p in _finding_problems(finding, expected_id=f"F{i + 1:03d}")]
        if finding["severity"] in SEVERITIES:
            if SEVERITIES.index(finding["severity"]) < last_severity:
                problems.append(f"{where}: findings must be ordered high, medium, low")
            last_severity = SEVERITIES.index(finding["severity"])
    return problems


def _finding_problems(f: dict, expected_id: str) -> list[str]:
    problems = []
    if f["id"] != expected_id:
        problems.append(f"id must be {expected_id!r} (numbered in order), not {f['id']!r}")
    if not isinstance(f["kind"], str) or not f["kind"].replace("_", "").isalpha() or not f["kind"].islower():
        problems.append(f"kind must be a lower_snake_case name, not {f['kind']!r}")
    if f["severity"] not in SEVERITIES:
        problems.append(f"severity must be one of {SEVERITIES}, not {f['severity']!r}")
    if not _str_list(f["classes"]) or not f["classes"]:
        problems.append("classes must be a non-empty list of class names")
    pair = f["pair"]
    pair_ok = isinstance(pair, dict) and set(pair) == {"true", "pred"} and _str_list([*pair.values()])
    if pair is not None and not pair_ok:
        problems.append("pair must be null or {'true': name, 'pred': name}")
    region = f["region"]
    if region is not None:
        ok = isinstance(region, list) and len(region) == 4 and all(_number(v) and 0 <= v <= 1 for v in region)
        if not ok or region[0] >= region[2] or region[1] >= region[3]:
            problems.append(f"region must be null or [x0, y0, x1, y1] in [0, 1] with x0 < x1, y0 < y1, not {region}")
    if not _str_list(f["samples"]):
        problems.append("samples must be a list of sample ids (strings)")
    metric_values = f["metrics"].items() if isinstance(f["metrics"], dict) else [(None, None)]
    if not all(isinstance(name, str) and _number(value) for name, value in metric_values):
        problems.append("metrics must map names to finite numbers")
    if not isinstance(f["message"], str) or not f["message"].strip():
        problems.append("message must be a non-empty sentence")
    return problems


def _str_list(values) -> bool:
    return isinstance(values, list) and all(isinstance(v, str) for v in values)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
