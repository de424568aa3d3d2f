"""Rule: a subgroup of a class recognised differently (SpRAy, Lapuschkin et al. 2019): at a fixed place and/or
off the object. Finds shortcuts only part of a class carries, which the class means of the other rules dilute."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.linalg
from scipy import ndimage
from scipy.sparse.csgraph import laplacian
from sklearn.cluster import SpectralClustering
from sklearn.neighbors import kneighbors_graph

from auditor.config import FindingsConfig
from auditor.findings.context import Context, class_maps, informative, others_at, sample_ids
from auditor.findings.places import (
    box_iou,
    box_share,
    describe_place,
    downsample,
    focus,
    hot_region,
    on_the_object,
    peak_in_box,
    is_border,
    peaks,
    place_of,
    place_region,
)
from auditor.findings.record import Finding, Kind, metrics
from auditor.findings.stats import object_score

KIND = Kind(
    name="strategy_cluster",
    scope="class",
    needs_masks=False,
    advice=(
        "Compare the listed images of {classes} (the odd group) with the rest of the class: if they share a "
        "source or an artefact, clean or rebalance that subset."
    ),
)


def find(records, maps, masks, classes, cfg: FindingsConfig, context: Context | None = None) -> list[Finding]:
    """SpRAy per class; each cluster whose attention differs in kind from the rest of its class is a finding.

    With masks the off-object part of the maps is clustered (see `off_object`), and clusters at the same place
    are merged (see `strategies`). Classes with more than spray_max_images correct images are judged on a seeded
    sample of them.
    """
    context = Context.of(context, records, maps, masks, classes, cfg)
    findings = []
    for c, group in context.correct(cfg.spray_min_support).items():
        if len(group) > cfg.spray_max_images:
            group = group.sample(n=cfg.spray_max_images, random_state=cfg.seed)
        share = class_maps(maps, group)
        features = off_object(share, group, masks)
        if features is share:  # no masks: the peak's blob stands in for the object (ACoL's erasing)
            features = beside_the_peak(share, cfg.region_threshold)
        labels, k, gap = spray_clusters(features, cfg)
        for member in strategies(share, labels, k, cfg):
            if cfg.spray_min_cluster_share <= member.mean() <= cfg.spray_max_cluster_share:
                finding = _cluster_finding(classes[c], group, share, member, masks, cfg, context.summaries, c, k, gap)
                if finding is not None:
                    findings.append(finding)
    return findings


def knn_affinity(features: np.ndarray, neighbors: int) -> np.ndarray:
    """Symmetric k-nearest-neighbour connectivity, the affinity SpRAy uses."""
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


def off_object(share: np.ndarray, group: pd.DataFrame, masks) -> np.ndarray:
    """The part of each map that lies off the object where every image has a mask, else the maps as they are.

    What SpRAy clusters. Whole maps cluster mostly by where each object happens to lie; their off-object part
    groups the images by what they attend to besides the object, which is where a partial shortcut shows.
    """
    if masks is None or not group["has_mask"].astype(bool).all():
        return share
    coverage = np.asarray(masks[group["row"].to_numpy()], dtype=np.float32)
    return share * (1.0 - np.clip(coverage, 0.0, 1.0))


def beside_the_peak(share: np.ndarray, threshold: float) -> np.ndarray:
    """Each map with its most discriminative region erased: the connected cells around its peak at >= threshold
    of the peak set to 0 (ACoL, Zhang et al. 2018, erases it to find what else the model uses).

    Without masks, what SpRAy clusters: whole maps group by where each object lies, and a patch that draws a
    few per cent of the attention beside the object never separates them; with the main blob gone, the images
    that carry the patch still hold it and the others hold little.
    """
    out = share.copy()
    for i, one in enumerate(share):
        labels, _ = ndimage.label(one >= threshold * one.max())
        peak = np.unravel_index(np.argmax(one), one.shape)
        out[i][labels == labels[peak]] = 0.0
    return out


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
    the rest's. Without masks a place finding stays low until the place is shown not to be the object.
    """
    size = share.shape[1]
    mean_map = share[member].mean(axis=0)
    box = hot_region(mean_map, cfg.region_threshold)
    found = place_of(mean_map, box, cfg)
    place = box if found is None else found  # no place: its figures are still the cluster's, for the reader
    hits = peak_in_box(peaks(share), place)
    hit_rate, rest_hit_rate = hits[member].mean(), hits[~member].mean()
    others_share, others_hit_rate = others_at(summaries, c, place, size)
    place_gap = hit_rate - max(rest_hit_rate, others_hit_rate)
    is_object, evidence = on_the_object(group[member], share[member], masks, place, cfg)
    cluster_focus = focus(share[member])
    in_box = box_share(share, place)
    place_share, rest_place_share = in_box[member].mean(), in_box[~member].mean()
    share_gap = place_share - max(rest_place_share, others_share)
    peaks_there = hit_rate >= cfg.shortcut_min_hit_rate and place_gap >= cfg.spray_min_gap
    # A patch next to the object may draw a steady share of the attention without winning the peak of every map.
    attention_there = share_gap >= cfg.spray_min_share_gap
    # A spot draws every map's attention to the same cells (focus); a frame spreads it along the border instead.
    fixed = is_border(place) or (found is not None and cluster_focus >= cfg.spray_min_focus)
    at_place = fixed and (peaks_there or attention_there) and not is_object
    usable = informative(group, "pred_energy_in_mask", cfg).to_numpy()
    score = object_score(group["pred_energy_in_mask"], group["mask_area"]).to_numpy()
    inside, outside = score[member & usable], score[~member & usable]
    off_object = (
        len(inside) > 0 and len(outside) > 0 and outside.mean() - inside.mean() >= cfg.spray_min_gap
        and group["pred_energy_in_mask"].to_numpy()[member & usable].mean() < cfg.background_max_energy
    )  # fmt: skip
    if not (at_place or off_object):
        return None
    checked = off_object or np.isfinite(evidence["place_on_object"])
    what = []
    if at_place:
        where = describe_place(place, size)
        what.append(
            f"they put {place_share:.0%} of their attention at the {where} (rest of the class "
            f"{rest_place_share:.0%}) and {hit_rate:.0%} of their maps peak there (rest {rest_hit_rate:.0%})"
        )
    if off_object:
        what.append(f"they look off the object (object score {inside.mean():.2f} vs {outside.mean():.2f})")
    order = np.flatnonzero(member)
    order = order[np.argsort(-in_box[order] if at_place else np.nan_to_num(score[order]), kind="stable")]
    unchecked = "" if checked else " (no masks to rule out that the object sits there)"
    return Finding(
        kind=KIND.name,
        severity=("high" if at_place and off_object else "medium") if checked else "low",
        classes=[name],
        region=place_region(place, mean_map, cfg) if at_place else None,
        samples=sample_ids(group, order, cfg),
        metrics=metrics(
            n=len(group), cluster_size=int(member.sum()), cluster_share=member.mean(), n_clusters=n_clusters,
            eigengap=eigengap, hit_rate=hit_rate, rest_hit_rate=rest_hit_rate, others_hit_rate=others_hit_rate,
            place_gap=place_gap, place_share=place_share, rest_place_share=rest_place_share, share_gap=share_gap,
            focus=cluster_focus, **evidence, object_score=inside.mean() if len(inside) else None,
            border_band=cfg.frame_band if at_place and is_border(place) else None,
            rest_object_score=outside.mean() if len(outside) else None,
        ),
        message=(
            f"{member.sum()} of {len(group)} correct images of {name!r} are recognised by another strategy: "
            f"{' and '.join(what)}; inspect them for a shortcut that only part of the class carries{unchecked}."
        ),
    )  # fmt: skip
