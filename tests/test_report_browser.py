"""The report in a real browser: Debian's headless Chromium driven by playwright (never a downloaded browser)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from auditor.report import render_report
from tests.conftest import HOSTILE_NAME
from tests.synthetic_run import CLASSES, HOSTILE, write_many_class_run, write_synthetic_run

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip


@dataclass
class Opened:
    path: Path
    hostile: str  # a class name that would run script if it were not escaped
    pair: tuple[int, int]  # a confused pair (true, predicted) by class index
    n_classes: int


@pytest.fixture(scope="module", params=["synthetic", "demo"])
def report(request, tmp_path_factory) -> Opened:
    """The synthetic run's report, and the real `auditor demo` report (with a hostile class name)."""
    if request.param == "synthetic":
        path = render_report(write_synthetic_run(tmp_path_factory.mktemp("browser") / "run"))
        return Opened(path, HOSTILE, (CLASSES.index(HOSTILE), CLASSES.index("circle")), len(CLASSES))
    run = request.getfixturevalue("demo_run")
    top = json.loads((run.path / "confused_pairs.json").read_text())[0]
    pair = (run.classes.index(top["true"]), run.classes.index(top["pred"]))
    return Opened(run.path / "report.html", HOSTILE_NAME, pair, len(run.classes))


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def browser_page(browser, report):
    """The opened report plus what the page logged, requested and tried to pop up."""
    events = {"errors": [], "requests": [], "dialogs": []}
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: events["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda err: events["errors"].append(str(err)))
    page.on("request", lambda r: events["requests"].append(r.url))
    page.on("dialog", lambda d: (events["dialogs"].append(d.message), d.dismiss()))
    page.goto(report.path.as_uri(), wait_until="load")
    page.wait_for_selector("#fig-confusion .main-svg", timeout=15_000)
    yield page, events, report
    page.close()


def in_viewport(page, selector: str) -> bool:
    return page.evaluate(
        """s => { const r = document.querySelector(s).getBoundingClientRect();
                  return r.top >= 0 && r.top < window.innerHeight && r.bottom > 0; }""",
        selector,
    )


def test_page_loads_offline_without_errors(browser_page):
    page, events, _ = browser_page
    assert events["errors"] == []
    assert events["dialogs"] == []  # the hostile class name ran no script
    assert all(url.startswith(("file:", "data:")) for url in events["requests"]), events["requests"]
    assert page.locator("#fig-confusion .main-svg").count() >= 1
    assert page.locator("#fig-confusion .heatmaplayer image, #fig-confusion .hm image").count() >= 1


def test_hostile_class_name_is_text(browser_page):
    page, _, report = browser_page
    hostile = report.hostile
    assert page.evaluate("document.querySelectorAll('img[src=\"x\"], img[onerror]').length") == 0
    cells = page.locator("#per-class-table tbody td:first-child").all_text_contents()
    assert hostile in cells
    ticks = page.locator("#fig-confusion .xtick text").all_text_contents()
    assert hostile in ticks  # plotly shows the name as text, too


def test_every_gallery_image_decoded(browser_page):
    page, _, _ = browser_page
    sizes = page.evaluate(
        "Array.from(document.querySelectorAll('.gallery img, .class-map img, .inline-maps img'))"
        ".map(img => img.complete ? img.naturalWidth : 0)"
    )
    assert len(sizes) > 20 and min(sizes) > 0


def test_clicking_a_cell_scrolls_to_its_gallery(browser_page, tmp_path):
    page, events, report = browser_page
    true, pred = report.pair
    target = f"#pair-{true}-{pred}"
    page.locator("#fig-confusion").scroll_into_view_if_needed()
    assert not in_viewport(page, target)
    x, y = page.evaluate(
        """([i, j]) => { const gd = document.getElementById('fig-confusion'), box = gd.getBoundingClientRect();
                         const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
                         return [box.left + xa._offset + xa.l2p(j), box.top + ya._offset + ya.l2p(i)]; }""",
        [true, pred],
    )
    page.mouse.click(x, y)
    page.wait_for_function(f"document.querySelector('{target}').classList.contains('is-target')", timeout=5_000)
    assert in_viewport(page, target)
    assert page.evaluate("location.hash") == target
    page.screenshot(path=str(tmp_path / "report-after-click.png"))
    assert events["errors"] == []


def test_per_class_table_sorts_by_header(browser_page):
    page, _, _ = browser_page
    header = page.locator("#per-class-table thead th", has_text="Recall")
    header.locator("button").click()
    recalls = [float(v) for v in page.locator("#per-class-table tbody td:nth-child(4)").all_text_contents()]
    assert recalls == sorted(recalls)
    header.locator("button").click()
    recalls = [float(v) for v in page.locator("#per-class-table tbody td:nth-child(4)").all_text_contents()]
    assert recalls == sorted(recalls, reverse=True)


def test_screenshot_of_the_whole_report(browser_page, tmp_path):
    page, _, _ = browser_page
    page.evaluate("window.scrollTo(0, 0)")
    path = tmp_path / "report.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 50_000


def test_tables_and_images_are_readable_without_javascript(browser, report):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(report.path.as_uri(), wait_until="load")
    assert page.locator("#per-class-table tbody tr").count() == report.n_classes
    assert page.locator("#confusion noscript table, #confusion table").first.is_visible()
    sizes = page.evaluate("Array.from(document.querySelectorAll('.gallery img')).map(i => i.naturalWidth)")
    assert len(sizes) > 0 and min(sizes) > 0
    context.close()


def test_print_stylesheet_hides_navigation(browser_page):
    page, _, _ = browser_page
    page.emulate_media(media="print")
    assert page.evaluate("getComputedStyle(document.querySelector('nav.toc')).display") == "none"
    page.emulate_media(media="screen")
    assert page.evaluate("getComputedStyle(document.querySelector('nav.toc')).display") != "none"


# ------------------------------------------------------------------ the report at the user's scale: 1,000 classes


@pytest.fixture(scope="module")
def wide_page(browser, tmp_path_factory):
    """The 1,000-class report (626 low findings) opened once, and the errors it logged."""
    path = render_report(write_many_class_run(tmp_path_factory.mktemp("wide") / "run"))
    errors = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_selector("#fig-confusion .main-svg", timeout=30_000)
    yield page, errors
    page.close()


def visible_findings(page) -> list[str]:
    return page.evaluate(
        "Array.from(document.querySelectorAll('article.finding')).filter(c => c.checkVisibility()).map(c => c.id)"
    )


def test_1000_class_report_loads_short(wide_page, tmp_path):
    page, errors = wide_page
    assert errors == []
    # 13,187 px measured (289,960 px before lists were collapsed and paged)
    assert page.evaluate("document.documentElement.scrollHeight") < 30_000
    assert len(visible_findings(page)) == 3  # the high and medium ones; the 626 low ones are collapsed
    assert page.locator("#per-class-table tbody tr:visible").count() == 50
    page.screenshot(path=str(tmp_path / "report-1000-classes.png"), full_page=True)


def test_1000_class_report_filters_findings_by_severity_and_search(wide_page):
    page, errors = wide_page
    page.locator("#low-findings > summary").click()
    assert len(visible_findings(page)) == 3 + 50  # the low group lists a page at a time
    page.uncheck('#finding-filter input[value="low"]')
    assert page.locator("#low-findings").is_hidden() and len(visible_findings(page)) == 3
    page.check('#finding-filter input[value="low"]')
    page.fill("#finding-search", "class0042")
    shown = visible_findings(page)
    assert len(shown) == 1 and page.locator(f"#{shown[0]} .chip").all_text_contents() == ["class0042"]
    assert "1 of 629 findings match" in page.locator("#finding-status").text_content()
    page.fill("#finding-search", "model_health")  # a kind, as findings.json spells it
    assert [page.locator(f"#{i} h3").text_content() for i in visible_findings(page)] == ["Model health"]
    page.fill("#finding-search", "")
    assert errors == []


def test_1000_class_table_filters_and_links_to_a_collapsed_finding(wide_page):
    page, errors = wide_page
    page.fill("#class-search", "class0600")
    rows = page.locator("#per-class-table tbody tr:visible")
    assert rows.count() == 1 and rows.locator("td").first.text_content() == "class0600"
    badge = rows.locator("a.badge.low")
    target = badge.get_attribute("href")
    page.evaluate("document.getElementById('low-findings').open = false")
    badge.click()  # its card is in the collapsed group, past the first page: the link opens both
    page.wait_for_function(f"document.querySelector('{target}').checkVisibility()", timeout=5_000)
    assert in_viewport(page, target)
    page.fill("#class-search", "")
    assert page.locator("#per-class-table tbody tr:visible").count() == 50
    assert errors == []
