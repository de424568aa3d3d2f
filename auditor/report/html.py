"""Render report.html from a run directory: one self-contained file, no model, no GPU, no network.

The page is a Jinja2 template with autoescape on, so every string from the data (class names, paths,
messages) is escaped. Figure data travels as one JSON block with <, > and & written as \\u003c etc., so no
string in it can close the script element. Plotly.js is inlined once.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from auditor import __version__
from auditor.config import Config, DataConfig, ReportConfig, config_from_dict
from auditor.baseline import accepted_findings
from auditor.findings import KINDS, model_health_state
from auditor.findings.registry import merged_sentences
from auditor.localisation import BOX_COLUMNS as CAM_BOX_COLUMNS
from auditor.property_names import PROPERTIES
from auditor.report import figures, images, tables
from auditor.runs import Run, _json_default, clean_floats, load_run, write_atomic

log = logging.getLogger("auditor")
TEMPLATES = Path(__file__).parent / "templates"
SAMPLE_IDS_LISTED = 50  # sample ids named in a finding card's "images to review" list
PAGE_ROWS = 50  # a longer list (per-class rows, low findings) shows this many at a time, most at issue first
LOW_GROUP_OVER = 20  # more low findings than this are collapsed into one group, so the serious ones stay in view
METADATA_CELL_CHARS = 120  # a longer metadata value is summarised, its text behind a <details>
METADATA_DETAIL_CHARS = 4000  # and cut there (the run directory holds it whole)


def render_report(run_dir: str | Path, config: ReportConfig | None = None) -> Path:
    """Write RUN_DIR/report.html atomically and return its path; logs its size and render time.

    `config` overrides the report settings recorded in the run (for re-rendering with other caps).
    """
    started = time.perf_counter()
    run = load_run(run_dir)
    run_config = _run_config(run)
    context = build_context(run, config or run_config.report, run_config.data)
    page = environment().get_template("report.html").render(**context)
    out = run.path / "report.html"
    write_atomic(out, page)
    size = out.stat().st_size
    log.info(
        "report: wrote %s (%s bytes, %.2f MB) in %.2f s", out, f"{size:,}", size / 1e6, time.perf_counter() - started
    )
    return out


def environment() -> Environment:
    """Jinja2 with autoescape for every template (HTML, and the CSS/JS included into it)."""
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt_number
    env.filters["pct"] = fmt_percent
    env.filters["sortkey"] = sort_key
    return env


def safe_json(obj) -> Markup:
    """JSON that can sit inside <script type="application/json">: no raw <, >, & or line separators."""
    text = json.dumps(clean_floats(obj), default=_json_default, allow_nan=False, separators=(",", ":"))
    return Markup(_escape_json(text))


def _escape_json(text: str) -> str:
    for char, code in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, code)
    return text


def plotly_js() -> Markup:
    """The plotly.js bundle of the installed plotly package, inlined so the report opens offline."""
    from plotly.offline import get_plotlyjs

    return Markup(get_plotlyjs().replace("</script", "<\\/script"))


def fmt_number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}f}"
    return str(value)


def fmt_percent(value, digits: int = 1) -> str:
    if value is None or not isinstance(value, (int, float, np.number)) or not math.isfinite(float(value)):
        return "–"
    return f"{100 * float(value):.{digits}f}%"


def sort_key(value) -> str:
    """The data-value a sortable cell carries: the raw number, or empty (sorted last) where missing."""
    if value is None or (isinstance(value, (float, np.floating)) and not math.isfinite(float(value))):
        return ""
    return str(value)


def _run_config(run: Run) -> Config:
    """The run's recorded config; defaults if it no longer parses (a run written by an older version)."""
    try:
        return config_from_dict(run.manifest.get("config") or {})
    except Exception as err:
        log.warning("report: the run's recorded config does not load (%s); using default report settings", err)
        return Config()


@dataclass
class _Gallery:
    """Builds gallery items, caching thumbnails so an image shown twice is decoded and encoded once."""

    run: Run
    cfg: ReportConfig
    data_cfg: DataConfig

    def __post_init__(self):
        self._cache: dict[int, dict] = {}
        self._index = pd.Index(self.run.records["id"].astype(str))
        self._against = self.run.counterfactual_maps()

    @property
    def has_counterfactuals(self) -> bool:
        return bool(self._against)

    def positions_of_ids(self, ids) -> list[int]:
        """Positions in the records table of the given sample ids (unknown ids are dropped)."""
        if not ids:
            return []
        found = self._index.get_indexer([str(i) for i in ids])
        return [int(p) for p in found if p >= 0]

    def items(self, positions) -> list[dict]:
        return [self.item(p) for p in list(positions)[: max(0, self.cfg.gallery_size)]]

    def item(self, position: int) -> dict:
        if position not in self._cache:
            record = self.run.records.iloc[position]
            row = int(record["row"])
            image = images.load_display(record["path"], self.data_cfg, self.cfg.thumb_px)
            mask = np.asarray(self.run.masks[row], dtype=np.float32) if bool(record["has_mask"]) else None
            maps = np.asarray(self.run.maps[row], dtype=np.float32)
            against = self._against.get(str(record["id"]))
            uris = images.triptych(
                image, maps[0], maps[1], mask, self.cfg.thumb_px, self.cfg.jpeg_quality, self.cfg.overlay_alpha,
                against_map=None if against is None else np.asarray(against[1], dtype=np.float32),
                cam_box=tuple(float(record[c]) for c in CAM_BOX_COLUMNS) if CAM_BOX_COLUMNS[0] in record else None,
            )
            self._cache[position] = {
                "id": str(record["id"]),
                "path": str(record["path"]),
                "label": str(record["label"]),
                "pred": str(record["pred"]),
                "correct": bool(record["correct"]),
                "p_pred": float(record["p_pred"]),
                "pred_energy": _float(record.get("pred_energy_in_mask")),
                "true_energy": _float(record.get("true_energy_in_mask")),
                "has_image": image is not None,
                **{f"{name}_uri": uri for name, uri in uris.items()},
            }
        return self._cache[position]


def _float(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def build_context(run: Run, cfg: ReportConfig, data_cfg: DataConfig) -> dict:
    """Everything the template shows, computed once from the run directory."""
    records, classes = run.records, run.classes
    k = len(classes)
    findings = tables.sorted_findings(run.findings())
    causal = tables.read_causal(run.path)
    confusion = tables.read_confusion(run.path, records, k)
    pairs = tables.read_pairs(run.path, confusion, classes)
    per_class = tables.per_class_metrics(records, classes, causal)
    class_index = {name: i for i, name in enumerate(classes)}
    gallery = _Gallery(run, cfg, data_cfg)
    fig_json: dict[str, str] = {}

    def add_figure(fig_id: str, fig: dict) -> str:
        fig_json[fig_id] = json.dumps(clean_floats(fig), default=_json_default, allow_nan=False,
                                      separators=(",", ":"))
        return fig_id

    at_issue = tables.classes_at_issue(findings, confusion, classes)  # the per-class table's order
    focus = sorted(at_issue[: max(1, cfg.focus_classes)])  # the classes that get figures when there are many

    regions_by_class: dict[str, list] = {}
    for finding in findings:
        box = tables.region_box(finding.get("region"))
        for name in tables.finding_classes(finding):
            if box is not None:
                regions_by_class.setdefault(str(name), []).append(box)
    class_map_uris: dict[tuple, str] = {}

    def class_map(i: int, boxes: list | None = None) -> str:
        """Class i's average map, boxing the given regions (default: every region flagged for the class)."""
        boxes = regions_by_class.get(classes[i], []) if boxes is None else boxes
        key = (i, tuple(boxes))
        if key not in class_map_uris:
            side = int(cfg.thumb_px * 1.5)
            mean_map, mean_mask = tables.class_mean(records, run.maps, run.masks, i)
            class_map_uris[key] = images.class_map_thumbnail(mean_map, mean_mask, boxes, side, cfg.jpeg_quality)
        return class_map_uris[key]

    pair_cards = _pair_cards(pairs, class_index, records, gallery, cfg)
    finding_cards = _finding_cards(
        findings, class_index, records, gallery, cfg, causal, class_map, pair_cards, add_figure
    )
    label_errors = _label_errors(tables.read_label_errors(run.path), finding_cards, gallery, cfg)
    accepted = accepted_findings(run.path)  # by the run's baseline (auditor.baseline)
    for card in finding_cards:
        card["accepted"] = accepted.get(card["id"])
    class_findings: dict[str, list[dict]] = {}
    for card in finding_cards:
        for name in card["classes"]:
            class_findings.setdefault(name, []).append(card)

    add_figure(
        "fig-confusion",
        figures.confusion_figure(confusion[np.ix_(focus, focus)], [classes[i] for i in focus], len(focus) <= 20),
    )
    pred_stats, true_stats = [], []
    masked = records[records["has_mask"].astype(bool)]
    for i in focus:
        of_class = masked[masked["label_idx"] == i]
        pred_stats.append(figures.quartiles(of_class["pred_energy_in_mask"].to_numpy(dtype=float)))
        true_stats.append(figures.quartiles(of_class["true_energy_in_mask"].to_numpy(dtype=float)))
    has_energy = any(s is not None for s in pred_stats + true_stats)
    if has_energy:
        add_figure("fig-energy", figures.energy_by_class_figure([classes[i] for i in focus], pred_stats, true_stats))
    correct = records["correct"].astype(bool).to_numpy()
    p_pred = records["p_pred"].to_numpy(dtype=float)
    add_figure("fig-confidence", figures.confidence_figure(p_pred[correct], p_pred[~correct]))
    if causal is not None and len(causal):
        add_figure("fig-causal", figures.causal_figure(list(causal["class"]), _causal_rows(causal)))

    counts = records["label_idx"].value_counts()
    class_maps = [
        {
            "name": classes[i],
            "index": i,
            "n": int(counts.get(i, 0)),
            "uri": class_map(i),
            "energy": per_class.loc[i, "true_energy_in_mask"],
            "pointing": per_class.loc[i, "pointing_accuracy"],
            "findings": class_findings.get(classes[i], []),
        }
        for i in focus
    ]

    config_dict = run.manifest.get("config") or {}
    summary = run.summary
    figure_blob = "{" + ",".join(f"{json.dumps(key)}:{value}" for key, value in fig_json.items()) + "}"
    page_data = Markup(_escape_json(f'{{"figures":{figure_blob},"matrix_classes":{json.dumps(focus)}}}'))
    return {
        "title": f"Audit report: {_model_name(config_dict)}",
        "header": _header(run, config_dict, findings),
        "counts": tables.severity_counts(findings),
        "findings": finding_cards,
        "notes": _findings_notes(run.path),
        "classes": classes,
        "matrix_limited": len(focus) < k,
        "n_focus": len(focus),
        "per_class": _per_class_rows(per_class.loc[at_issue], class_findings),
        "page_rows": PAGE_ROWS,
        "low_group": _low_group(finding_cards),
        "class_columns": tables.per_class_columns(),
        "has_causal": causal is not None and len(causal) > 0,
        "causal": _causal_rows(causal) if causal is not None else [],
        "causal_cap": _causal_cap(run, causal),
        "pairs": pair_cards,
        "n_pairs_total": len(pairs),
        "label_errors": label_errors,
        "class_maps": class_maps,
        "has_energy": has_energy,
        "skipped": _skipped(run, summary, cfg),
        "metadata": _metadata(run, config_dict),
        "matrix_index": focus,
        "matrix_rows": [{"name": classes[i], "values": [int(confusion[i, j]) for j in focus]} for i in focus],
        "has_findings_file": (run.path / "findings.json").is_file(),
        "has_against": gallery.has_counterfactuals,
        "localisation": _localisation(summary.get("localisation")),
        "colorbar": images.jpeg_data_uri(images.colormap(np.tile(np.linspace(0, 1, 120), (10, 1))), 90),
        "version": __version__,
        "cfg": cfg,
        "page_data": page_data,
        "plotly_js": plotly_js(),
    }


def _localisation(summary: dict | None) -> dict | None:
    """summary.json's `localisation` for the attention section, None where no image had a ground-truth box."""
    if not summary or not summary.get("n_images"):
        return None
    return {**summary, "by_delta": sorted((summary.get("max_box_acc") or {}).items())}


def _findings_notes(run_dir: Path) -> list[str]:
    """What the rules could not judge and why (findings.json "notes")."""
    path = run_dir / "findings.json"
    notes = json.loads(path.read_text()).get("notes", []) if path.is_file() else []
    return [str(note) for note in notes]


def _model_name(config: dict) -> str:
    model = config.get("model") or {}
    name = model.get("arch") or model.get("torchscript") or model.get("factory") or "model"
    return Path(str(name)).name if model.get("torchscript") else str(name)


def _readable_time(stamp) -> str:
    """ISO time as '2024-05-01 12:00 UTC+00:00'; anything unparseable is shown as recorded."""
    try:
        moment = datetime.fromisoformat(str(stamp))
    except ValueError:
        return str(stamp) if stamp else "–"
    zone = f" {moment.tzname()}" if moment.tzinfo else ""
    return moment.strftime("%Y-%m-%d %H:%M") + zone


def _header(run: Run, config: dict, findings: list[dict]) -> dict:
    model = config.get("model") or {}
    data = config.get("data") or {}
    checkpoint = model.get("checkpoint")
    fingerprints = run.manifest.get("fingerprints") or {}
    return {
        "model": _model_name(config) + (f" ({Path(str(checkpoint)).name})" if checkpoint else ""),
        "data": data.get("root") or data.get("manifest") or "–",
        "created": _readable_time(run.manifest.get("created")),
        "device": run.manifest.get("device", "–"),
        "digest": tables.config_digest(config),
        "model_fingerprint": str(fingerprints.get("model", "–"))[:12],
        "data_fingerprint": str(fingerprints.get("data", "–"))[:12],
        "methods": ", ".join(run.manifest.get("methods") or []) or "–",
        "n_images": run.summary.get("n_images", len(run.records)),
        "n_skipped": run.summary.get("n_skipped", len(run.skipped)),
        "accuracy": run.summary.get("accuracy"),
        "n_classes": len(run.classes),
        "n_findings": len(findings),
        "model_health": run.summary.get("model_health") or model_health_state(findings),
        "health_message": next((str(f.get("message")) for f in findings if f.get("kind") == "model_health"), ""),
    }


def _pair_cards(pairs, class_index, records, gallery: _Gallery, cfg: ReportConfig) -> list[dict]:
    """The top confused pairs, each with its gallery: the listed ids, else its most confident errors."""
    cards = []
    for pair in pairs:
        if len(cards) >= max(0, cfg.top_pairs):
            break
        true, pred = str(pair.get("true")), str(pair.get("pred"))
        if true not in class_index or pred not in class_index or true == pred:
            continue
        i, j = class_index[true], class_index[pred]
        positions = gallery.positions_of_ids(pair.get("ids"))
        if not positions:
            positions = _pair_positions(records, i, j)
        cards.append(
            {
                "anchor": f"pair-{i}-{j}",
                "true": true,
                "pred": pred,
                "count": pair.get("count"),
                "rate": pair.get("rate"),
                "gallery": gallery.items(positions),
            }
        )
    return cards


LABEL_ERROR_ROWS = 20  # label_errors.csv rows listed in the report; the file has them all


def _label_errors(table: pd.DataFrame | None, finding_cards: list[dict], gallery: _Gallery,
                  cfg: ReportConfig) -> dict | None:
    """label_errors.csv in the report: its first rows, each linked to its pair's card, and a gallery of the first
    suspects that no card shows. A pair gets a card only with several of the run's likeliest errors, so errors spread
    one or two a pair, as most test sets have them, would otherwise be in the file alone."""
    if table is None or table.empty:
        return None
    anchors = {card["id"]: card["anchor"] for card in finding_cards}
    carded = table["finding"].notna() & table["finding"].isin(list(anchors))
    alone = table.loc[~carded, "id"]
    head = table.head(LABEL_ERROR_ROWS)
    return {
        "n": len(table),
        "n_carded": int(carded.sum()),
        "rows": [
            {"rank": row.get("rank", n + 1), "id": row["id"], "label": row["label"], "pred": row["pred"],
             "p_true": row.get("p_true"), "p_pred": row.get("p_pred"), "finding": row["finding"] if carded[i] else None,
             "anchor": anchors.get(row["finding"]) if carded[i] else None}
            for n, (i, row) in enumerate(head.iterrows())
        ],
        "alone": gallery.items(gallery.positions_of_ids(list(alone.head(max(0, cfg.gallery_size))))),
    }


def _pair_positions(records: pd.DataFrame, true_idx: int, pred_idx: int) -> list[int]:
    """Positions of the images of a confused pair, most confident mistakes first."""
    chosen = np.flatnonzero(
        (records["label_idx"].to_numpy() == true_idx) & (records["pred_idx"].to_numpy() == pred_idx)
    )
    order = np.argsort(-records["p_pred"].to_numpy(dtype=float)[chosen], kind="stable")
    return [int(p) for p in chosen[order]]


def _finding_cards(findings, class_index, records, gallery, cfg, causal, class_map, pair_cards, add_figure):
    """One card per finding, most severe first; only the first cfg.finding_galleries get images."""
    pair_anchors = {(c["true"], c["pred"]): c["anchor"] for c in pair_cards}
    cards = []
    for n, finding in enumerate(findings):
        classes = tables.finding_classes(finding)
        pair = tables.pair_of(finding)
        samples = finding.get("samples") or []
        with_gallery = n < cfg.finding_galleries
        side_by_side = finding.get("kind") == "duplicate_conflict"  # samples are pairs: a, b, a, b, ...
        positions = gallery.positions_of_ids(samples) if with_gallery else []
        if with_gallery and not positions and pair and pair[0] in class_index and pair[1] in class_index:
            positions = _pair_positions(records, class_index[pair[0]], class_index[pair[1]])
        sample_positions = gallery.positions_of_ids(samples[:SAMPLE_IDS_LISTED])
        known = [c for c in classes if c in class_index]
        causal_rows = []
        if causal is not None and known:
            causal_rows = _causal_rows(causal[causal["class"].isin(known)])
        box = tables.region_box(finding.get("region"))
        boxes = [box] if box is not None else []  # only this finding's region, not the class's others
        anchor = f"finding-{n + 1}"
        card = {
            "anchor": anchor,
            "id": str(finding.get("id", anchor)),
            "kind": str(finding.get("kind", "finding")),
            "title": str(finding.get("kind", "finding")).replace("_", " ").capitalize(),
            "severity": str(finding.get("severity", "low")).lower(),
            "sentences": merged_sentences(str(finding.get("message", ""))),  # its own, then each merged one's
            "classes": classes,
            "pair": pair,
            "pair_anchor": pair_anchors.get(pair) if pair else None,
            "has_region": box is not None,
            **_metric_groups(finding.get("metrics") or {}),
            "gallery": gallery.items(positions) if with_gallery and not side_by_side else [],
            "pairs": _side_by_side(samples, gallery) if with_gallery and side_by_side else [],
            "class_maps": [{"name": c, "uri": class_map(class_index[c], boxes)} for c in known[:2]]
            if with_gallery
            else [],
            "causal": causal_rows,
            "causal_figure": None,
            "review": [
                {
                    "id": str(records.iloc[p]["id"]),
                    "path": str(records.iloc[p]["path"]),
                    "label": str(records.iloc[p]["label"]),
                    "pred": str(records.iloc[p]["pred"]),
                }
                for p in sample_positions
            ],
            "n_samples": len(samples),
            "next_steps": next_steps(finding, classes, pair),
        }
        card["property_figure"] = _property_figure(finding, records, n, add_figure) if with_gallery else None
        if with_gallery and len(causal_rows) > 0:
            card["causal_figure"] = add_figure(
                f"fig-causal-{n + 1}", figures.causal_figure([r["class"] for r in causal_rows], causal_rows)
            )
        cards.append(card)
    return cards


def _property_figure(finding: dict, records: pd.DataFrame, n: int, add_figure) -> str | None:
    """A property_shortcut finding's histogram (class against the rest), from the records' prop_ column."""
    at = (finding.get("metrics") or {}).get("property")
    if finding.get("kind") != "property_shortcut" or at is None or not 0 <= int(at) < len(PROPERTIES):
        return None
    name, classes = PROPERTIES[int(at)], tables.finding_classes(finding)
    if f"prop_{name}" not in records or not classes:
        return None
    ours = (records["label"].astype(str) == classes[0]).to_numpy()
    values = records[f"prop_{name}"].to_numpy(dtype=float)
    return add_figure(f"fig-property-{n + 1}", figures.property_figure(name, classes[0], values[ours], values[~ours]))


def _side_by_side(samples: list, gallery: _Gallery) -> list[tuple[dict, dict]]:
    """A duplicate_conflict finding's pairs (its samples two by two), each as two gallery items, up to
    report.gallery_size pairs: both images with their labels, to judge at a glance which label is right."""
    pairs = []
    for a, b in zip(samples[0::2], samples[1::2]):
        found = gallery.positions_of_ids([a, b])
        if len(found) == 2:
            pairs.append((gallery.item(found[0]), gallery.item(found[1])))
    return pairs[: max(0, gallery.cfg.gallery_size)]


def _metric_groups(values: dict) -> dict:
    """A card's own figures, and those of each finding merged into it (keys "<kind>.<name>", as
    `findings.registry.merge` prefixes them, nested where a merged finding had merged another) under that kind: a
    merged card stays readable with its own figures first and the others folded away, one group per merged kind."""
    own, merged = [], {}
    for key, value in values.items():
        kind, dot, name = str(key).rpartition(".")
        if dot:
            merged.setdefault(kind, []).append((name, fmt_metric(value)))
        else:
            own.append((str(key), fmt_metric(value)))
    return {"metrics": own,
            "merged_metrics": [(kind.replace("_", " ").replace(".", " › "), rows) for kind, rows in merged.items()]}


def fmt_metric(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_metric(v) for v in value)
    if isinstance(value, (float, np.floating)):
        return fmt_number(value, 3)
    return fmt_number(value)


GENERIC_STEP = (
    "Review the listed images of {classes}: check that the object is visible and centred; re-crop, relabel or "
    "collect more varied examples where the model attends to something else."
)


def next_steps(finding: dict, classes: list[str], pair: tuple[str, str] | None) -> list[str]:
    """Concrete actions for a finding: advice for its kind, then a diff to confirm the fix."""
    true, pred = pair or (classes[0] if classes else "this class", classes[-1] if classes else "another class")
    kind = KINDS.get(str(finding.get("kind")))  # each rule's module declares its advice with its kind
    template = kind.advice if kind is not None else GENERIC_STEP
    return [
        template.format(classes=", ".join(classes) or "the named classes", true=true, pred=pred),
        "Audit the retrained model and compare the two runs with auditor diff to confirm this is resolved.",
    ]


def _causal_rows(causal: pd.DataFrame) -> list[dict]:
    rows = []
    for record in causal.to_dict("records"):
        row = {"class": str(record.get("class"))}
        for key in (
            "n",
            "accuracy",
            "background_only_accuracy",
            "background_only_baseline",
            "shortcut_removed_accuracy",
            "mixed_same_accuracy",
            "mixed_rand_accuracy",
        ):
            row[key] = _float(record.get(key))
        rows.append(row)
    return rows


def _causal_cap(run: Run, causal: pd.DataFrame | None) -> str:
    """How many images the causal check read, against its bound (findings.causal_max_images) and the images
    its classes have: a capped check is a sample, and the reader should know it."""
    if causal is None or not len(causal) or "n" not in causal:
        return ""
    checked = int(pd.to_numeric(causal["n"], errors="coerce").fillna(0).sum())
    available = int(run.records["label"].astype(str).isin(set(causal["class"].astype(str))).sum())
    cap = ((run.manifest.get("config") or {}).get("findings") or {}).get("causal_max_images")
    bound = f" (findings.causal_max_images: {cap:,}, spread evenly over the classes)" if isinstance(cap, int) else ""
    text = f"Checked on {checked:,} of the {available:,} images of {len(causal)} class(es){bound}"
    return text + (": a seeded sample of each class." if checked < available else ".")


def _low_group(cards: list[dict]) -> dict | None:
    """Where the low findings start and how many there are, when there are enough to collapse (they come last)."""
    lows = [n for n, card in enumerate(cards) if card["severity"] == "low"]
    return {"start": lows[0], "count": len(lows)} if len(lows) > LOW_GROUP_OVER else None


def _per_class_rows(per_class: pd.DataFrame, class_findings: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for record in per_class.to_dict("records"):
        record = {key: (value.item() if isinstance(value, np.generic) else value) for key, value in record.items()}
        record["findings"] = class_findings.get(record["class"], [])
        rows.append(record)
    return rows


def _skipped(run: Run, summary: dict, cfg: ReportConfig) -> dict:
    reasons = summary.get("skipped_reasons") or run.skipped["reason"].value_counts().to_dict()
    rows = run.skipped.head(max(0, cfg.skipped_rows)).fillna("").to_dict("records")
    notes = run.records.get("note", pd.Series("", index=run.records.index))
    noted = run.records.assign(note=notes)[notes != ""]
    return {
        "reasons": sorted(reasons.items(), key=lambda kv: -kv[1]), "rows": rows, "total": len(run.skipped),
        "note_kinds": sorted((summary.get("notes") or {}).items(), key=lambda kv: -kv[1]),
        "note_rows": noted[["id", "path", "note"]].head(max(0, cfg.skipped_rows)).to_dict("records"),
        "notes_total": len(noted),
    }


def _metadata(run: Run, config: dict) -> dict:
    manifest = run.manifest
    return {
        "fingerprints": _meta_rows(sorted((manifest.get("fingerprints") or {}).items()), "manifest.json"),
        "versions": _meta_rows(sorted((manifest.get("versions") or {}).items()), "manifest.json"),
        "timings": _meta_rows((manifest.get("timings") or {}).items(), "manifest.json"),
        "config": _meta_rows(tables.flatten(config), "manifest.json", json.dumps),
        "summary": _meta_rows(run.summary.items(), "summary.json"),
    }


def _meta_rows(items, source: str, show=fmt_metric) -> list[dict]:
    """Key-value rows that stay one line each: a long value (summary.json's per_class at 1,000 classes is
    120,000 px tall in one cell) is summarised, its text collapsed behind a <details> and cut."""
    rows = []
    for key, value in items:
        text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else show(value)
        if len(text) <= METADATA_CELL_CHARS:
            rows.append({"key": key, "value": text, "detail": ""})
        elif key == "per_class" and isinstance(value, dict):  # the per-class table shows it, sortable
            summary = f"per-class figures for {len(value):,} classes: see the per-class table and per_class.csv"
            rows.append({"key": key, "value": summary, "detail": ""})
        else:
            size = f"{len(value):,} entries" if isinstance(value, (dict, list)) else f"{len(text):,} characters"
            cut = len(text) > METADATA_DETAIL_CHARS
            detail = text[:METADATA_DETAIL_CHARS] + (f"… (cut here: {source} holds it whole)" if cut else "")
            rows.append({"key": key, "value": size, "detail": detail})
    return rows
