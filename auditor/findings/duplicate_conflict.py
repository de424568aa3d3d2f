"""Rule: near-duplicate images that carry different labels. One of the two labels is wrong (or the image belongs
in neither class): the cheapest label errors to confirm, one look at two images.

Pairs come from the sweep's pooled features (features.npy, `auditor.duplicates`); a pair whose thumbnails are
identical is an exact copy. A target layer of fewer than findings.duplicate_min_dims channels is not searched: in
so few dims distinct images sit as close as copies do. The rule reads no model, so it runs on a broken model's run too: identical images
give identical features whatever the weights (its severity is then capped at low like every other finding's).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from auditor.config import FindingsConfig
from auditor.findings.context import Context
from auditor.findings.record import Finding, Kind, metrics

KIND = Kind(
    name="duplicate_conflict",
    scope="run",
    needs_masks=False,
    advice="Look at each pair side by side: keep the right label on both copies, or drop one copy.",
)


def duplicate_pairs(context: Context) -> pd.DataFrame:
    """The run's conflicting pairs, computed once (the rule reports them, label_errors.csv lists them): columns
    a, b (records rows, a < b), similarity, exact (identical thumbnails); exact copies first (the surest), then
    the most similar."""

    def compute() -> pd.DataFrame:
        cfg, records = context.cfg, context.records
        # Too few dims and every image has a near twin (a 3-channel layer of 200 colour classes: 946 pairs >= 0.999)
        if context.features is None or context.features.shape[1] < cfg.duplicate_min_dims or len(records) < 2:
            return pd.DataFrame({"a": [], "b": [], "similarity": [], "exact": []})
        # torch only where there are features to search: judging a run directory otherwise never loads it
        from auditor.duplicates import conflicting_pairs, query_rows

        rows = records["row"].to_numpy()
        queries = query_rows(records["p_true"].to_numpy(dtype=float), cfg.duplicate_max_queries)
        pairs = conflicting_pairs(np.asarray(context.features)[rows], records["label_idx"].to_numpy(),
                                  cfg.duplicate_min_similarity, cfg.duplicate_neighbours, queries)
        pairs["a"], pairs["b"] = rows[pairs["a"]], rows[pairs["b"]]  # positions -> records rows
        thumbs = context.thumbs
        pairs["exact"] = [thumbs is not None and bool(np.array_equal(thumbs[a], thumbs[b]))
                          for a, b in zip(pairs["a"], pairs["b"])]
        return pairs.sort_values(["exact", "similarity"], ascending=False, kind="stable").reset_index(drop=True)

    return context.cached("duplicate_pairs", compute)


def find(records, maps, masks, classes, cfg: FindingsConfig, context: Context | None = None) -> list[Finding]:
    """One finding for the run's conflicting pairs. Its severity counts the pixel-identical copies alone (identical
    pixels under two labels is a labelling fault, whatever the model): medium from one, high when duplicate_medium_count
    of them or more hold duplicate_high_rate of the run. Pairs alike only in the model's features stay low: in a
    narrow layer, two look-alike images of one class are as close as copies (the benchmark CNN's Fashion-MNIST seed
    0: 98 such pairs at 0.999, none of them a copy, most a mislabelled trouser beside a trouser)."""
    context = Context.of(context, records, maps, masks, classes, cfg)
    pairs = duplicate_pairs(context)
    if pairs.empty:
        return []
    by_row = records.set_index("row")
    shown = pairs.head(cfg.duplicate_max_pairs)
    samples = [str(by_row.at[int(r), "id"]) for a, b in zip(shown["a"], shown["b"]) for r in (a, b)]
    involved = np.unique(pairs[["a", "b"]].to_numpy())
    rate = len(involved) / len(records)
    exact = int(pairs["exact"].sum())
    copied = np.unique(pairs.loc[pairs["exact"], ["a", "b"]].to_numpy())
    severity = ("high" if len(copied) / len(records) >= cfg.duplicate_high_rate and exact >= cfg.duplicate_medium_count
                else "medium" if exact else "low")
    names = sorted({str(by_row.at[int(r), "label"]) for r in involved}, key=list(classes).index)
    return [Finding(
        kind=KIND.name, severity=severity, classes=names, samples=samples,
        metrics=metrics(pairs=len(pairs), exact_pairs=exact, images=len(involved), rate=rate,
                        min_similarity=float(pairs["similarity"].min())),
        message=(
            f"{len(pairs)} pairs of images carry different labels while the model's features call them alike "
            f"(similarity >= {cfg.duplicate_min_similarity}); {exact} of them are pixel-identical copies, where at "
            "least one label is wrong; the others may be near-duplicates or look-alikes. They are listed in "
            "label_errors.csv with the reason 'near-duplicate of <id> labelled <label>'."
        ),
    )]


def duplicate_rows(context: Context) -> pd.DataFrame:
    """Each member of a conflicting pair once, most similar pair first: records row and its reason(s)."""
    pairs = duplicate_pairs(context)
    by_row = context.records.set_index("row")
    reasons: dict[int, list[str]] = {}
    for a, b in zip(pairs["a"], pairs["b"]):
        for this, other in ((a, b), (b, a)):
            reasons.setdefault(int(this), []).append(
                f"near-duplicate of {by_row.at[int(other), 'id']} labelled {by_row.at[int(other), 'label']}"
            )
    return pd.DataFrame({"row": list(reasons), "reason": ["; ".join(r) for r in reasons.values()]})


def with_duplicates(table: pd.DataFrame, context: Context, findings: list[dict]) -> pd.DataFrame:
    """label_errors.csv with the near-duplicates: its suspects keep their rows, ranks and columns, a pair member
    among them gets its near-duplicate reason added to its `reason`, and the other members follow as rows of
    their own, ranked after the suspects in the pairs' order, their suspect-only columns empty."""
    found = next((f["id"] for f in findings if f["kind"] == KIND.name), "")
    members = duplicate_rows(context)
    records = context.records.set_index("row")
    reason = dict(zip(records.loc[members["row"], "id"].astype(str), members["reason"]))
    ids = table["id"].astype(str)
    table = table.assign(reason=[f"{why}; {reason[i]}" if i in reason else why for i, why in zip(ids, table["reason"])])
    extra = records.loc[members["row"]].assign(reason=members["reason"].to_numpy(), finding=found)
    extra = extra[~extra["id"].astype(str).isin(set(ids))]
    extra = extra.assign(rank=np.arange(len(table) + 1, len(table) + len(extra) + 1))
    extra = extra.loc[:, [c for c in table.columns if c in extra.columns]].round({"p_pred": 6, "p_true": 6})
    return pd.concat([table, extra], ignore_index=True).loc[:, list(table.columns)] if len(extra) else table
