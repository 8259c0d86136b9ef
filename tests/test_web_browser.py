"""The UI in headless Chromium on demo data served by the real `aoai-monitor serve`: every dashboard renders
with the numbers SQL gives on the same store, drag-to-zoom narrows the time range, Discover queries and
the document view work, and HTML payloads in prompts / field names stay inert. Screenshots go to
artifacts/screenshots/."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from aoai_monitor.demo import generate_demo
from aoai_monitor.query.sql import open_for_queries
from aoai_monitor.store import Store
from tests.test_web_api import XSS, XSS_ID, xss_doc

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
END = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
END_MS = int(END.timestamp() * 1000)
START_MS = END_MS - 2 * 86400_000
TIME = f"from={START_MS}&to={END_MS}"

if not Path(CHROMIUM).exists():
    pytest.skip("Chromium is not installed at /usr/bin/chromium", allow_module_level=True)


def wait_until(page, expression: str, timeout_s: float = 15.0) -> None:
    """Poll a page expression from the test side: the UI's CSP forbids eval, which wait_for_function needs."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(f"() => Boolean({expression})"):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        page.wait_for_timeout(100)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("browser") / "demo.duckdb")
    with Store(path) as store:
        generate_demo(store, end=END, days=2, scale=0.05, progress=False)
        store.commit(logs=[xss_doc()])
    proc = subprocess.Popen([sys.executable, "-m", "aoai_monitor.cli", "serve", "--store", path, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = None
    deadline = time.monotonic() + 30
    while url is None and time.monotonic() < deadline:
        m = re.search(r"(http://\S+)", proc.stdout.readline())
        url = m.group(1) if m else None
    assert url, "server printed no URL"
    yield url, path
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = ctx.new_page()
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.console_errors = []
    pg.on("console", lambda m: pg.console_errors.append(m.text) if m.type == "error" else None)
    yield pg
    ctx.close()


def sql(path, query, params=()):
    # Reading the store while the server holds it read-only is allowed (both are readers).
    with open_for_queries(path) as s:
        return s.cursor().execute(query, list(params)).fetchone()[0]


def stat(page, panel):
    return float(page.locator(f"[data-panel='{panel}'] .stat").get_attribute("data-value"))


def open_dashboard(page, url, dash, extra=""):
    page.goto(f"{url}#/dash/{dash}?{TIME}{extra}")
    page.wait_for_selector(f".grid[data-dash='{dash}'][data-ready='1']", timeout=20_000)


REQUESTS = ('SELECT count(*) FROM logs WHERE "azure.open_ai.category" = \'RequestResponse\' AND "@timestamp" >= epoch_ms(?::BIGINT) '
            'AND "@timestamp" < epoch_ms(?::BIGINT)')


def test_overview_numbers_match_sql(served, page):
    url, path = served
    open_dashboard(page, url, "overview")
    assert stat(page, "total_requests") == sql(path, REQUESTS, [START_MS, END_MS]) > 0
    assert stat(page, "total_errors") == sql(path, REQUESTS + ' AND "aoai.status_code" >= 400', [START_MS, END_MS])
    assert stat(page, "throttled") == sql(path, REQUESTS + ' AND "aoai.status_code" = 429', [START_MS, END_MS])
    tokens = sql(path, 'SELECT sum("azure.open_ai.token_transaction.total") FROM metrics WHERE "@timestamp" >= epoch_ms(?::BIGINT) '
                 'AND "@timestamp" < epoch_ms(?::BIGINT)', [START_MS, END_MS])
    assert stat(page, "total_tokens") == pytest.approx(tokens)
    for panel in ("request_rate", "error_rate", "token_usage", "throttling"):
        assert page.locator(f"[data-panel='{panel}'] svg.chart rect[data-series]").count() > 0, panel
    assert page.locator("[data-panel='latency'] svg.chart path[data-series]").count() > 0
    assert page.locator("[data-panel='model_usage'] svg.donut path").count() >= 3
    assert page.locator(".panel .error").count() == 0
    # Hover shows a tooltip with the bucket's values.
    box = page.locator("[data-panel='request_rate'] .overlay").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    assert page.locator("#tooltip").is_visible()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)


def test_drag_to_zoom_narrows_the_range_and_keeps_filters(served, page):
    url, path = served
    open_dashboard(page, url, "overview", "&dep=gpt-4o")
    before = stat(page, "total_requests")
    box = page.locator("[data-panel='request_rate'] .overlay").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.25, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=8)
    page.mouse.up()
    wait_until(page, f"!location.hash.includes('from={START_MS}')")
    page.wait_for_selector(".grid[data-dash='overview'][data-ready='1']")
    params = dict(re.findall(r"(\w+)=([^&]+)", page.evaluate("location.hash")))
    t0, t1 = int(params["from"]), int(params["to"])
    assert START_MS < t0 < t1 < END_MS and params["dep"] == "gpt-4o"
    assert 0.15 < (t1 - t0) / (END_MS - START_MS) < 0.35
    assert page.locator("#range").input_value() == "custom"
    wait_until(page, f"document.querySelector(\"[data-panel='total_requests'] .stat\").dataset.value !== '{int(before)}'")
    start, end = t0 // 60_000 * 60_000, -(-t1 // 60_000) * 60_000
    assert stat(page, "total_requests") == sql(path, REQUESTS + ' AND "aoai.deployment" = ?', [start, end, "gpt-4o"])
    # Links to the other dashboards keep the zoomed range and the deployment filter.
    href = page.locator(".dash-links a", has_text="PTU deployments").get_attribute("href")
    assert f"from={t0}" in href and f"to={t1}" in href and "dep=gpt-4o" in href


@pytest.mark.parametrize("dash,stat_panel,query", [
    ("ptu", None, None),
    ("content", "cf_requests", 'SELECT count(*) FROM logs WHERE "aoai.content_filter.filtered" AND "@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT)'),
    ("cost", "cost_generated_tokens", 'SELECT sum("azure.open_ai.generated_tokens.total") FROM metrics WHERE "@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT)'),
])
def test_other_dashboards_render(served, page, dash, stat_panel, query):
    url, path = served
    open_dashboard(page, url, dash)
    assert page.locator(".panel .error").count() == 0
    assert page.locator(".panel svg").count() >= 3
    if stat_panel:
        assert stat(page, stat_panel) == pytest.approx(sql(path, query, [START_MS, END_MS]))
    if dash == "ptu":
        for panel in ("time_to_response", "active_tokens", "utilization", "cache_match_rate"):
            assert page.locator(f"[data-panel='{panel}'] svg.chart [data-series]").count() > 0, panel
    page.screenshot(path=str(SHOTS / f"{dash}.png"), full_page=True)


def test_discover_query_fields_and_document(served, page):
    url, path = served
    page.goto(f"{url}#/discover?{TIME}")
    page.wait_for_selector("#view[data-ready='1']")
    page.fill("#kql", "aoai.status_code >= 400 and azure.open_ai.category:RequestResponse")
    page.press("#kql", "Enter")
    wait_until(page, "location.hash.includes('status_code')")
    page.wait_for_selector("#hit-count")
    page.wait_for_selector(".field-list li.field")
    assert int(page.locator("#hit-count").get_attribute("data-total")) == sql(path, REQUESTS + ' AND "aoai.status_code" >= 400', [START_MS, END_MS])
    assert page.locator(".histogram svg rect[data-series]").count() > 0
    # Top values of a field, then filter on one.
    page.locator(".field-list li.field[data-field='aoai.status_code']").first.click()
    page.wait_for_selector(".top-values .tv")
    page.locator(".top-values .tv button[title='Filter for value']").first.click()
    wait_until(page, "decodeURIComponent(location.hash).includes('aoai.status_code:\"')")
    page.wait_for_selector("#hit-count")
    page.wait_for_selector(".field-list li.field")
    page.screenshot(path=str(SHOTS / "discover.png"), full_page=True)
    # Open a document.
    page.locator("tr.doc-row a").first.click()
    page.wait_for_selector(".doc-fields tr[data-field='aoai.status_code']")
    assert page.locator("#raw").inner_text().strip().startswith("{")
    page.screenshot(path=str(SHOTS / "document.png"), full_page=True)


def test_html_payloads_stay_inert(served, page):
    url, _ = served
    page.goto(f"{url}#/discover?{TIME}&q=azure.open_ai.category:GatewayLogs and aoai.deployment:gpt-4o&columns=azure.open_ai.properties.backend_request_body.messages")
    page.wait_for_selector(f"tr.doc-row[data-id='{XSS_ID}']")
    assert "<script>window.__xss=2</script>" in page.locator(f"tr.doc-row[data-id='{XSS_ID}']").inner_text()
    page.goto(f"{url}#/doc/logs/{XSS_ID}?{TIME}")
    page.wait_for_selector(".doc-fields")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None and page.dialogs == []
    assert page.locator("img[src='x'], #view script").count() == 0
    assert page.locator(".doc-fields th", has_text=XSS).count() == 1  # the field name, as text
    assert "<script>window.__xss=2</script>" in page.locator("#raw").inner_text()
    page.screenshot(path=str(SHOTS / "xss-inert.png"), full_page=True)


def test_sql_page_runs_examples(served, page):
    url, path = served
    page.goto(f"{url}#/sql")
    page.fill("#sql", 'SELECT count(*) AS n FROM logs')
    page.click("#run-sql")
    page.wait_for_selector("#sql-result tbody td")
    assert int(page.locator("#sql-result tbody td").first.inner_text().replace(",", "")) == sql(path, "SELECT count(*) FROM logs")
    page.locator(".examples button").first.click()
    wait_until(page, "document.querySelectorAll('#sql-result tbody tr').length > 1")
    page.fill("#sql", "DROP TABLE logs")
    page.click("#run-sql")
    page.wait_for_selector("#sql-error")
    page.screenshot(path=str(SHOTS / "sql.png"), full_page=True)
    assert not [e for e in page.console_errors if "Content Security Policy" in e]
