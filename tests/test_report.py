"""The HTML report: content and order, escaping, offline and bounded size, thumbnails, and its numpy helpers."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from markupsafe import escape
from plotly.offline import get_plotlyjs

from auditor.config import DataConfig, ReportConfig, config_from_dict
from auditor.errors import ConfigError
from auditor.findings.record import Finding
from auditor.findings.registry import merge
from auditor.report import images as im
from auditor.report import render_report, tables
from auditor.report.html import next_steps
from tests.synthetic_run import CLASSES, CORNER, HOSTILE, SHORTCUT_CLASS, write_many_class_run, write_synthetic_run

SECTIONS = [
    "verdict",
    "findings",
    "label-errors",
    "confusion",
    "per-class",
    "pairs",
    "class-maps",
    "distributions",
    "skipped",
    "metadata",
]
DATA_URI = re.compile(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One synthetic run rendered once with default settings: (run_dir, html text)."""
    run_dir = write_synthetic_run(tmp_path_factory.mktemp("report") / "run")
    path = render_report(run_dir)
    return run_dir, path.read_text(encoding="utf-8")


def decode(uri_payload: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri_payload))).convert("RGB"))


def page_data(html: str) -> dict:
    block = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(block)


def test_sections_appear_in_review_order(rendered):
    _, html = rendered
    positions = [html.find(f'id="{section}"') for section in SECTIONS]
    assert all(p > 0 for p in positions), dict(zip(SECTIONS, positions, strict=True))
    assert positions == sorted(positions)


def test_verdict_counts_the_findings_by_severity(rendered):
    run_dir, html = rendered
    findings = json.loads((run_dir / "findings.json").read_text())["findings"]
    verdict = html[html.find('id="verdict"') : html.find("</div>", html.find('id="verdict"'))]
    for severity in ("high", "medium", "low"):
        expected = sum(f["severity"] == severity for f in findings)
        assert f'<span class="pill {severity}"><strong>{expected}</strong> {severity}</span>' in verdict


def test_each_finding_has_a_card_with_its_evidence(rendered):
    run_dir, html = rendered
    findings = json.loads((run_dir / "findings.json").read_text())["findings"]
    cards = re.findall(r'<article class="card finding (\w+)" id="(finding-\d+)">', html)
    assert [severity for severity, _ in cards] == [f["severity"] for f in findings]
    shortcut_card = html[html.find('id="finding-1"') : html.find('id="finding-2"')]
    for sample in findings[0]["samples"]:
        assert f'alt="image {sample}"' in shortcut_card  # the evidence gallery shows the rule's samples
    assert "Class-average attention with the flagged region boxed" in shortcut_card
    assert "Causal check" in shortcut_card and "What to do next" in shortcut_card


def test_a_merged_card_shows_its_own_sentence_and_figures_first_and_each_merged_finding_apart(tmp_path):
    """registry.merge prefixes the other finding's metrics with its kind (nested when that one had merged
    another) and adds its sentence: the card shows its own sentence and figures, and each merged kind's sentence on
    its own line and its figures under a closed <details> of their own."""
    run_dir = write_synthetic_run(tmp_path / "run", n_images=24)
    doc = json.loads((run_dir / "findings.json").read_text())
    cluster = Finding(kind="strategy_cluster", severity="medium", classes=["a"], metrics={"share": 0.25},
                      message="A cluster: yes.")
    inner = Finding(kind="spatial_shortcut", severity="low", classes=["a"], metrics={"hit_rate": 0.5},
                    message="A corner.")
    merged = merge(Finding(**doc["findings"][0]), merge(cluster, inner))
    doc["findings"][0] = dataclasses.asdict(merged)
    (run_dir / "findings.json").write_text(json.dumps(doc))
    html = render_report(run_dir).read_text()
    card = html[html.find('id="finding-1"') : html.find('id="finding-2"')]
    own = card[card.find('<dl class="metrics">') : card.find("</dl>")]
    first_key = next(iter(doc["findings"][0]["metrics"]))
    assert f"<dt>{first_key}</dt>" in own and "<dt>share<" not in own and "hit_rate" not in own
    groups = re.findall(r'<details class="merged-metrics">\s*<summary>Numbers of the merged (.*?) finding \((\d+)\)'
                        r"</summary>(.*?)</details>", card, re.S)
    names = [(name, int(n)) for name, n, _ in groups]
    assert names == [("strategy cluster", 1), ("strategy cluster › spatial shortcut", 1)]
    assert "<dt>share</dt><dd>0.250</dd>" in groups[0][2] and "<dt>hit_rate</dt><dd>0.500</dd>" in groups[1][2]
    own_sentence = doc["findings"][0]["message"].split(" Also ")[0]
    assert f"<p>{escape(own_sentence)}</p>" in card  # each finding's sentence on its own line
    assert '<p class="merged-message"><span class="muted">Also strategy cluster:</span> A cluster: yes.</p>' in card
    assert '<p class="merged-message"><span class="muted">Also spatial shortcut:</span> A corner.</p>' in card


def test_label_errors_list_the_files_first_rows_and_show_the_ones_no_card_shows(tmp_path):
    """label_errors.csv's head in its order, each row linked to its pair's card; a gallery of the first suspects
    whose pair has no card (errors spread one or two a pair would otherwise be in the file alone)."""
    run_dir = write_synthetic_run(tmp_path / "run", n_images=24)
    records = pd.read_parquet(run_dir / "records.parquet")
    wrong = records[~records["correct"].astype(bool)]
    carded, alone = wrong["id"].iloc[0], list(wrong["id"].iloc[1:3])
    rows = [{"rank": n + 1, "id": i, "path": "x.png", "label": "a", "pred": "b", "p_pred": 0.9, "p_true": 0.01 * n,
             "finding": "F002" if i == carded else "", "reason": "predicted b"} for n, i in enumerate([carded, *alone])]
    pd.DataFrame(rows).to_csv(run_dir / "label_errors.csv", index=False)
    html = render_report(run_dir).read_text()
    section = html[html.find('<section id="label-errors">') : html.find('<section id="confusion">')]
    assert "ranks 3 suspected label errors, most likely first; 1 of them belong to a pair with a card above" in section
    table = section[section.find('id="label-error-table"') : section.find("</table>")]
    assert re.findall(r'<td class="mono">(.*?)</td>', table) == [carded, *alone]  # the file's order
    assert table.count('<a href="#finding-2">F002</a>') == 1  # F002: the synthetic context_confusion pair's card
    gallery = section[section.find("The likeliest label errors that no card shows") :]
    assert [i for i in alone if f'alt="image {i}"' in gallery] == alone and f'alt="image {carded}"' not in gallery
    (run_dir / "label_errors.csv").unlink()
    assert "No suspected label errors" in render_report(run_dir).read_text()


def test_hostile_class_name_is_escaped_everywhere(rendered):
    _, html = rendered
    assert HOSTILE not in html  # neither in the HTML nor raw inside the figure JSON
    assert "<b>bad002</b>" not in html  # a skipped path is data too
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    figure_json = json.dumps(page_data(html))
    assert "&lt;img src=x onerror=alert(1)&gt;" in figure_json  # plotly gets the entity form: shown as text


def test_plotly_is_inlined_once_and_nothing_is_fetched(rendered):
    _, html = rendered
    bundle = get_plotlyjs()
    assert html.count(bundle[:200]) == 1
    assert not re.search(r"<script[^>]*\bsrc=", html)
    assert not re.search(r"<link[^>]*href=\"?https?:", html)
    # plotly's own bundle names a CDN (for geo maps, unused); base64 thumbnails may spell "cdn" by chance
    text = re.sub(r'"data:[^"]*"', '""', html.replace(bundle, ""))
    assert "cdn" not in text.lower() and "http://" not in text and "https://" not in text


def test_confusion_figure_carries_the_run_counts(rendered):
    run_dir, html = rendered
    data = page_data(html)
    counts = pd.read_csv(run_dir / "confusion.csv", index_col=0).to_numpy()
    z = data["figures"]["fig-confusion"]["data"][0]["z"]
    assert np.array_equal(np.asarray(z), counts)
    assert data["matrix_classes"] == list(range(len(CLASSES)))


def test_the_causal_figure_and_table_show_each_class_on_its_own_and_on_others_backgrounds(rendered):
    run_dir, html = rendered
    causal = pd.read_csv(run_dir / "causal.csv")
    traces = {t["name"]: t["y"] for t in page_data(html)["figures"]["fig-causal"]["data"]}
    assert traces["object on other classes' backgrounds"] == pytest.approx(causal["mixed_rand_accuracy"].tolist())
    assert traces["object on its own class's backgrounds"] == pytest.approx(causal["mixed_same_accuracy"].tolist())
    assert "others' backgrounds</th>" in html and ">15.0%</td>" in html  # the shortcut class on others' backgrounds


def test_every_confused_pair_gets_an_anchored_gallery(rendered):
    run_dir, html = rendered
    pairs = json.loads((run_dir / "confused_pairs.json").read_text())
    for pair in pairs[: ReportConfig().top_pairs]:
        i, j = CLASSES.index(pair["true"]), CLASSES.index(pair["pred"])
        start = html.find(f'<article class="card pair" id="pair-{i}-{j}">')
        assert start > 0, pair
        card = html[start : html.find("</article>", start)]
        assert card.count('<figure class="example">') == min(pair["count"], ReportConfig().gallery_size)


def test_thumbnails_decode_and_show_the_image(rendered):
    run_dir, html = rendered
    payloads = DATA_URI.findall(html)
    assert len(payloads) > 20
    for payload in payloads:
        assert decode(payload).size > 0
    records = pd.read_parquet(run_dir / "records.parquet")
    sample = json.loads((run_dir / "findings.json").read_text())["findings"][0]["samples"][0]
    payload = re.search(rf'<img src="data:image/jpeg;base64,([^"]+)" alt="image {sample}"', html).group(1)
    thumb = decode(payload).astype(float)
    assert thumb.shape[:2] == (ReportConfig().thumb_px, ReportConfig().thumb_px)
    original = np.asarray(Image.open(records.set_index("id").loc[sample, "path"]).convert("RGB"))
    expected = im.fit_image(original, ReportConfig().thumb_px).astype(float)
    # JPEG and the mask outline change a few pixels; a gray stand-in would be ~90 levels off on average
    assert np.median(np.abs(thumb - expected)) < 12


def test_missing_image_falls_back_to_gray_and_still_renders(tmp_path):
    run_dir = write_synthetic_run(tmp_path / "run", n_images=16)
    shutil.rmtree(tmp_path / "images")
    html = render_report(run_dir).read_text()
    assert "image unavailable" in html
    payload = re.search(r'<img src="data:image/jpeg;base64,([^"]+)" alt="image img\d+"', html).group(1)
    thumb = decode(payload)
    assert abs(float(np.median(thumb)) - im.BACKGROUND_GRAY) < 4


def test_galleries_respect_the_caps(tmp_path):
    run_dir = write_synthetic_run(tmp_path / "run", n_images=80)
    html = render_report(run_dir, config=ReportConfig(gallery_size=2, top_pairs=1, finding_galleries=1)).read_text()
    assert html.count('<article class="card pair"') == 1
    assert html.count('<figure class="example">') <= 2 * 2  # one pair gallery and one finding gallery
    assert "(report.top_pairs)" in html


def test_runs_without_optional_files_render(tmp_path):
    run_dir = write_synthetic_run(tmp_path / "run", n_images=24, with_findings=False, with_causal=False)
    for name in ("confusion.csv", "confused_pairs.json", "skipped.csv"):
        (run_dir / name).unlink()
    html = render_report(run_dir).read_text()
    assert "No bias findings" in html
    assert 'id="fig-causal"' not in html
    counts = np.asarray(page_data(html)["figures"]["fig-confusion"]["data"][0]["z"])
    records = pd.read_parquet(run_dir / "records.parquet")
    assert counts.sum() == len(records) and np.trace(counts) == records["correct"].sum()
    assert '<article class="card pair"' in html  # pairs recomputed from the records


def test_render_logs_size_and_time_and_leaves_no_temp_file(tmp_path, caplog):
    run_dir = write_synthetic_run(tmp_path / "run", n_images=16)
    with caplog.at_level(logging.INFO, logger="auditor"):
        path = render_report(run_dir)
    size = path.stat().st_size
    assert any(f"{size:,} bytes" in r.getMessage() and " MB) in " in r.getMessage() for r in caplog.records)
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".report.html")] == []


def test_report_of_100k_images_stays_under_15_mb(tmp_path):
    classes = [f"class{i}" for i in range(9)] + [HOSTILE]
    run_dir = write_synthetic_run(
        tmp_path / "run", n_images=100_000, map_size=8, image_px=64, distinct_images=200, classes=classes
    )
    # Many findings with many samples each: the caps, not the data, must bound the page.
    records = pd.read_parquet(run_dir / "records.parquet")
    findings = [
        {
            "id": f"F{n:03d}",
            "kind": "context_confusion",
            "severity": "medium",
            "classes": [classes[n % 10]],
            "pair": {"true": classes[n % 10], "pred": classes[(n + 1) % 10]},
            "region": CORNER,
            "samples": records["id"].iloc[n::40][:500].tolist(),
            "metrics": {"n": 500},
            "message": "synthetic",
        }
        for n in range(40)
    ]
    (run_dir / "findings.json").write_text(json.dumps({"schema_version": 1, "findings": findings, "notes": []}))
    size = render_report(run_dir).stat().st_size
    print(f"100,000-image report: {size:,} bytes ({size / 1e6:.2f} MB)")
    assert size < 15e6


def test_report_of_1000_classes_keeps_long_lists_short(tmp_path):
    """At 1,000 classes with 626 low findings: no raw per-class dump in the metadata, the low findings in one
    collapsed group, the per-class table most at issue first, and the run-wide finding without a class map."""
    run_dir = write_many_class_run(tmp_path / "run")
    html = render_report(run_dir).read_text()
    assert len(html) - len(get_plotlyjs()) < 3e6  # 2.2 MB measured; plotly.js is the other 4.8 MB
    metadata = html[html.index('<section id="metadata"') :]
    cells = re.findall(r"<td>(.*?)</td>", metadata, re.S)
    assert max(len(c) for c in cells if "<details>" not in c) < 200
    assert "per-class figures for 1,000 classes: see the per-class table and per_class.csv" in metadata
    assert '"class0500"' not in metadata  # summary.json's per_class is not in the page

    findings = json.loads((run_dir / "findings.json").read_text())["findings"]
    lows = sum(f["severity"] == "low" for f in findings)
    group = html[html.index('<details class="finding-group" id="low-findings"') : html.index('<section id="confusion"')]
    assert group.count('<article class="card finding low"') == lows == 626
    assert html.count('<article class="card finding') - lows == 3  # high and medium stay in view
    assert 'id="finding-search"' in html and 'value="low" checked' in html

    health = html[html.index("<h3>Model health</h3>") : html.index("</article>", html.index("<h3>Model health</h3>"))]
    assert 'class="chip"' not in health and "inline-maps" not in health  # run-wide: no class, no class map
    table = html[html.index('id="per-class-table"') : html.index("</table>", html.index('id="per-class-table"'))]
    rows = re.findall(r"<tr>\s*<td>([^<]*)</td>", table)
    assert len(rows) == 1000 and rows[0] == "class0003"  # the high finding's class first
    assert rows[1:3] == ["class0000", "class0002"] and "class0005" not in rows[:30]  # not model_health's class
    assert 'data-page="50"' in html


# ------------------------------------------------------------------------------------------- pure helpers


def test_per_class_metrics_on_a_hand_sized_table():
    records = pd.DataFrame(
        {
            "label_idx": [0, 0, 0, 1, 1],
            "pred_idx": [0, 0, 1, 1, 0],
            "has_mask": [True, True, False, True, True],
            "pred_energy_in_mask": [0.8, 0.6, np.nan, 0.2, 0.4],
            "true_energy_in_mask": [0.8, 0.6, np.nan, 0.2, 0.5],
            "true_pointing_hit": [1.0, 0.0, np.nan, 1.0, 1.0],
        }
    )
    causal = pd.DataFrame({"class": ["b"], "background_only_accuracy": [0.9]})
    table = tables.per_class_metrics(records, ["a", "b", "c"], causal).set_index("class")
    assert table.loc["a", "precision"] == pytest.approx(2 / 3) and table.loc["a", "recall"] == pytest.approx(2 / 3)
    assert table.loc["b", "precision"] == pytest.approx(1 / 2) and table.loc["b", "recall"] == pytest.approx(1 / 2)
    assert table.loc["a", "pred_energy_in_mask"] == pytest.approx(0.7)  # the image without a mask is left out
    assert table.loc["b", "true_energy_in_mask"] == pytest.approx(0.35)
    assert table.loc["a", "pointing_accuracy"] == pytest.approx(0.5)
    assert table.loc["b", "background_only_accuracy"] == pytest.approx(0.9)
    assert np.isnan(table.loc["a", "background_only_accuracy"])
    assert table.loc["c", "support"] == 0 and np.isnan(table.loc["c", "recall"])


def test_class_mean_averages_maps_per_true_class():
    maps = np.zeros((3, 2, 2, 2), np.float16)
    maps[0, 1, 0, 0], maps[1, 1, 1, 1], maps[2, 1, 0, 1] = 1, 1, 1
    masks = np.zeros((3, 2, 2), np.float16)
    masks[2] = 1
    records = pd.DataFrame({"row": [2, 0, 1], "label_idx": [1, 0, 0], "has_mask": [True, False, False]})
    (map_0, mask_0), (map_1, mask_1) = (tables.class_mean(records, maps, masks, c) for c in (0, 1))
    assert np.allclose(map_0, [[0.5, 0], [0, 0.5]]) and np.allclose(map_1, [[0, 1], [0, 0]])
    assert np.allclose(mask_0, 0) and np.allclose(mask_1, 1)
    assert np.allclose(tables.class_mean(records, maps, masks, 5)[0], 0)  # a class with no image: zeros


def test_region_box_is_the_findings_fractions():
    """findings.json holds regions as [x0, y0, x1, y1] fractions of the image, or none (class-free findings)."""
    assert tables.region_box([0, 0, 0.25, 0.5]) == (0, 0, 0.25, 0.5)
    assert tables.region_box(None) is None


def test_finding_key_ignores_class_order_but_not_pair_direction():
    a = {"kind": "context_confusion", "classes": ["x", "y"], "pair": {"true": "x", "pred": "y"}}
    b = {"kind": "context_confusion", "classes": ["y", "x"], "pair": {"true": "x", "pred": "y"}}
    c = {"kind": "context_confusion", "classes": ["x", "y"], "pair": {"true": "y", "pred": "x"}}
    assert tables.finding_key(a) == tables.finding_key(b) != tables.finding_key(c)


def test_next_steps_name_the_pair_and_end_with_a_diff():
    finding = {"kind": "suspected_label_error", "classes": ["cat", "dog"]}
    steps = next_steps(finding, ["cat", "dog"], ("cat", "dog"))
    assert "labelled cat and predicted dog" in steps[0] and "relabel" in steps[0]
    assert "auditor diff" in steps[-1]


def test_colormap_runs_from_dark_blue_to_dark_red():
    low, blue, mid, high = im.colormap(np.array([0.0, 0.2, 0.5, 1.0])).astype(int)
    assert low.sum() < 120 and high.sum() < 300  # dark at both ends, as turbo is
    assert blue[2] > blue[0] + 100 and mid[1] > 200 and high[0] > 3 * high[2]  # blue, then green, then red
    assert im.colormap(np.zeros((4, 5))).shape == (4, 5, 3)


def test_overlay_leaves_unattended_pixels_unchanged():
    image = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    cam = np.zeros((6, 6), np.float32)
    cam[2, 3] = 1.0
    out = im.overlay(image, cam, alpha=0.6)
    unchanged = cam == 0
    assert np.array_equal(out[unchanged], image[unchanged]) and not np.array_equal(out[2, 3], image[2, 3])


def test_outline_is_the_border_of_the_mask():
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    border = im.outline(mask)
    assert border.sum() == 12 and not border[2:4, 2:4].any() and border[1, 1:5].all()


def test_draw_region_boxes_the_given_fraction():
    out = im.draw_region(np.zeros((20, 20, 3), np.uint8), (0.0, 0.0, 0.5, 0.25), width_px=1)
    white = (out == 255).all(axis=2)
    assert white[0, :10].all() and white[4, :10].all() and white[:5, 9].all()
    assert not white[6:].any() and not white[:, 11:].any() and not white[2, 2]


def test_jpeg_data_uri_round_trips():
    image = np.full((10, 14, 3), (200, 30, 30), np.uint8)
    uri = im.jpeg_data_uri(image, 90)
    assert uri.startswith("data:image/jpeg;base64,")
    decoded = decode(uri.split(",", 1)[1])
    assert decoded.shape == (10, 14, 3) and np.abs(decoded.astype(int) - image).max() < 10


def test_load_display_returns_none_for_a_missing_file(tmp_path):
    assert im.load_display(str(tmp_path / "nope.png"), DataConfig()) is None


def test_class_average_map_shows_the_shortcut_corner(rendered):
    """The demo's point: one class's average attention sits in the corner, away from its object."""
    run_dir, html = rendered
    start = html.find(f'id="class-{SHORTCUT_CLASS}"')
    payload = DATA_URI.search(html, start).group(1)
    picture = decode(payload).astype(float)
    warm = picture[..., 0] - picture[..., 2]  # turbo: red high, blue low
    side = picture.shape[0]
    corner, centre = (
        warm[: side // 5, : side // 5].mean(),
        warm[side // 3 : 2 * side // 3, side // 3 : 2 * side // 3].mean(),
    )
    assert corner > centre + 50


@pytest.mark.parametrize(
    "key, value", [("thumb_px", 0), ("gallery_size", -1), ("jpeg_quality", 100), ("overlay_alpha", 1.5)]
)
def test_report_config_rejects_unusable_values(key, value):
    with pytest.raises(ConfigError, match=f"report.{key}"):
        config_from_dict({"report": {key: value}})


def test_a_broken_model_is_said_at_the_top_of_the_report(tmp_path):
    run_dir = write_synthetic_run(tmp_path / "run", n_images=24)
    doc = json.loads((run_dir / "findings.json").read_text())
    health = {"id": "F000", "kind": "model_health", "severity": "high", "classes": [CLASSES[0]], "pair": None,
              "region": None, "samples": [], "metrics": {"skill": 0.0},
              "message": "The model looks broken: its balanced accuracy is 10.0%, at chance."}  # fmt: skip
    findings = [health, *doc["findings"]]
    doc["findings"] = [{**f, "id": f"F{i:03d}", "severity": "high" if i == 1 else "low"} for i, f in
                       enumerate(findings, start=1)]  # fmt: skip
    (run_dir / "findings.json").write_text(json.dumps(doc))
    html = render_report(run_dir).read_text()
    banner = html.index('id="model-health"')
    assert banner < html.index('id="verdict"') and "Model broken." in html and "at chance" in html[banner:]
    (run_dir / "findings.json").write_text(json.dumps({**doc, "findings": doc["findings"][1:]}))
    assert 'id="model-health"' not in render_report(run_dir).read_text()  # a working model: no banner
