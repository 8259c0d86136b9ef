"""The Traces page and the Cost dashboard: API routes on a real store (demo traffic + OTLP spans decoded by the
real receiver code + APIM gateway logs sharing the spans' ids) checked against query/traces.py,
pricing/reports.py and SQL, then the pages in headless Chromium served by the real `aoai-monitor serve`.
Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone

import orjson
import pytest
from starlette.testclient import TestClient

from aoai_monitor.demo import generate_demo
from aoai_monitor.pricing import load_pricing
from aoai_monitor.pricing import reports as R
from aoai_monitor.query import traces
from aoai_monitor.query.sql import open_for_queries
from aoai_monitor.sources.otlp import decode_traces
from aoai_monitor.store import Store
from aoai_monitor.web import app as web
from tests.test_otlp_receiver import _gateway_log, json_span
from tests.test_web_api import XSS
from tests.test_web_browser import SHOTS, browser, page, wait_until  # noqa: F401 (fixtures)

END = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
END_MS = int(END.timestamp() * 1000)
START_MS = END_MS - 2 * 86400_000
RANGE = {"start": START_MS, "end": END_MS}
TIME = f"from={START_MS}&to={END_MS}"
PRICING_TOML = """
[pricing]
default_sku = "GlobalStandard"

[[pricing.deployments]]
name = "gpt-4o-ptu"
model = "gpt-4o"
version = "2024-08-06"
sku = "ProvisionedManaged"
region = "eastus"
ptus = 100
"""
LINKED_SPAN = f"{0xa1:016x}"  # linked to a gateway log by response id
LINKED_LOG_CID = "11111111-2222-3333-4444-000000000001"
RESPONSE_ID = "chatcmpl-linked-0001"


def _spans() -> list[dict]:
    """32 GenAI spans over the last 20 hours of the range: 3 services (one named with an HTML payload),
    2 deployments, failures, TTFT on streamed calls; one carries the response id of a gateway log."""
    docs = []
    services = ["shop", "crm", XSS]
    for i in range(32):
        service = services[i % 3]
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "azure.ai.openai",
                 "aoai.deployment": "gpt-4o" if i % 2 else "gpt-4o-mini", "aoai.tokens.input": 100 + i,
                 "aoai.tokens.output": 10 + i, "aoai.tokens.total": 110 + 2 * i, "http.response.status_code": 200,
                 "span.note": XSS}
        if i % 4:
            attrs["aoai.cost"] = 0.001 * (i + 1)
        if i % 3 == 0:
            attrs["aoai.ttft_ms"] = 20.0 + i
        if i % 7 == 3:
            attrs["http.response.status_code"] = 429
        span_id = LINKED_SPAN if i == 5 else f"{i + 1:016x}"
        if i == 5:
            attrs["gen_ai.response.id"] = RESPONSE_ID
        body = json_span(span_id, END_MS - 20 * 3600_000 + i * 1800_000, 100.0 + 37 * i, attrs, service=service,
                         trace_id=f"{i // 2 + 1:032x}", status_code=2 if i % 7 == 3 else 0)
        spans, rejected = decode_traces(orjson.dumps(body), True)
        assert rejected == 0
        docs += spans
    return docs


def _linked_log() -> dict:
    ts = END_MS - 20 * 3600_000 + 5 * 1800_000 + 30  # the span at i=5 starts 30 ms earlier
    return _gateway_log(ts, LINKED_LOG_CID, "gpt-4o", RESPONSE_ID, 240)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A store with demo traffic priced under a config that makes gpt-4o-ptu a 100-PTU deployment."""
    tmp = tmp_path_factory.mktemp("traces_cost")
    config = tmp / "config.toml"
    config.write_text(PRICING_TOML)
    path = str(tmp / "store.duckdb")
    old = os.environ.get("AOAI_MONITOR_CONFIG")
    os.environ["AOAI_MONITOR_CONFIG"] = str(config)
    try:
        with Store(path) as store:
            generate_demo(store, end=END, days=2, scale=0.05, progress=False)
            store.commit(spans=_spans())
            store.commit(logs=[_linked_log()])
        yield {"path": path, "config": str(config)}
    finally:
        if old is None:
            os.environ.pop("AOAI_MONITOR_CONFIG", None)
        else:
            os.environ["AOAI_MONITOR_CONFIG"] = old


@pytest.fixture(scope="module")
def store(env):
    s = open_for_queries(env["path"])
    yield s
    s.close()


@pytest.fixture()
def client(store, env, monkeypatch):
    monkeypatch.setenv("AOAI_MONITOR_CONFIG", env["config"])
    return TestClient(web.create_app(store), base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def pricing(env):
    return load_pricing(env["config"])


def as_json(value):
    """What the API sends for a value (floats survive JSON exactly)."""
    return orjson.loads(orjson.dumps(value, default=web._default))


def close(got, want) -> bool:
    """Equal as sent, floats within 1e-9 (sums over rows DuckDB groups in any order)."""
    want = as_json(want)
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(close(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(close(a, b) for a, b in zip(got, want))
    if isinstance(want, float):
        return got == pytest.approx(want, rel=1e-9, abs=1e-12)
    return got == want


def one(store, sql, params=()):
    return store.cursor().execute(sql, list(params)).fetchone()[0]


SPANS_IN_RANGE = 'SELECT count(*) FROM spans WHERE "@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT)'


# --- Traces API ------------------------------------------------------------------------------------

def test_traces_list_filters_and_kql(store, client):
    res = client.get("/api/traces", params=RANGE).json()
    assert res["total"] == one(store, SPANS_IN_RANGE, [START_MS, END_MS]) == 32
    assert [r["span.id"] for r in res["rows"]] == [r["span.id"] for r in traces.list_spans(store, start_ms=START_MS, end_ms=END_MS)]
    assert set(res["facets"]["service"]) == {"shop", "crm", XSS} and res["facets"]["outcome"] == ["failure", "success"]
    # Page filters, the top bar's deployment, KQL, and all together.
    shop = client.get("/api/traces", params={**RANGE, "service": "shop", "outcome": "success"}).json()
    assert [r["span.id"] for r in shop["rows"]] == [
        r["span.id"] for r in traces.list_spans(store, start_ms=START_MS, end_ms=END_MS, service="shop", outcome="success")]
    dep = client.get("/api/traces", params={**RANGE, "dep": "gpt-4o"}).json()
    assert dep["total"] == 16 and {r["aoai.deployment"] for r in dep["rows"]} == {"gpt-4o"}
    kql = client.get("/api/traces", params={**RANGE, "q": "aoai.duration_ms >= 1000 and not service.name:crm",
                                            "deployment": "gpt-4o"}).json()
    expect = one(store, SPANS_IN_RANGE + ' AND "aoai.duration_ms" >= 1000 AND "service.name" <> \'crm\' '
                 'AND "aoai.deployment" = \'gpt-4o\'', [START_MS, END_MS])
    assert kql["total"] == expect == len(kql["rows"]) > 0
    paged = client.get("/api/traces", params={**RANGE, "limit": 10, "offset": 10}).json()
    assert [r["span.id"] for r in paged["rows"]] == [r["span.id"] for r in res["rows"][10:20]]
    # Bad input is refused with a message, never reaches SQL as text.
    bad = client.get("/api/traces", params={**RANGE, "q": "nosuchfield:1"})
    assert bad.status_code == 400 and "nosuchfield" in bad.json()["error"]
    inj = client.get("/api/traces", params={**RANGE, "service": "x' OR 1=1 --"}).json()
    assert inj["total"] == 0 and one(store, "SELECT count(*) FROM spans") == 32


def test_traces_panels_match_the_query_functions(store, client):
    res = client.get("/api/traces/panels", params=RANGE).json()
    expect = traces.app_panels(store, start_ms=START_MS, end_ms=END_MS)
    assert res["rows"] == as_json(expect)
    shop = next(r for r in res["rows"] if r["group"] == "shop")
    p95 = one(store, 'SELECT quantile_cont("aoai.duration_ms", 0.95) FROM spans WHERE "service.name" = \'shop\'')
    assert shop["p95_ms"] == pytest.approx(p95)
    assert shop["ttft_p50_ms"] == pytest.approx(one(store, 'SELECT median("aoai.ttft_ms") FROM spans WHERE "service.name" = \'shop\''))
    assert sum(r["unpriced"] for r in res["rows"]) == one(store, 'SELECT count(*) FROM spans WHERE "aoai.cost" IS NULL') == 8
    # Charts: every bucket's requests add up; cost per group sums to the table's.
    chart = res["charts"]["cost"]
    assert set(chart["series"]) == {"shop", "crm", XSS}
    assert sum(v or 0 for v in chart["series"]["shop"]) == pytest.approx(shop["cost"])
    assert sum(v or 0 for v in res["charts"]["tokens"]["series"]["crm"]) == one(
        store, 'SELECT sum("aoai.tokens.total") FROM spans WHERE "service.name" = \'crm\'')
    assert all(START_MS <= t < END_MS for t in chart["t"])
    # App-side against service-side latency, over the spans linked by id.
    assert res["latency"] == [{"deployment": "gpt-4o", "linked": 1, "app_p50_ms": 285.0, "app_p95_ms": 285.0,
                               "service_p50_ms": 240.0, "service_p95_ms": 240.0, "gap_p50_ms": 45.0}]
    by_dep = client.get("/api/traces/panels", params={**RANGE, "group": "aoai.deployment"}).json()
    assert {r["group"] for r in by_dep["rows"]} == {"gpt-4o", "gpt-4o-mini"}
    assert client.get("/api/traces/panels", params={**RANGE, "group": '"; DROP TABLE spans; --'}).status_code == 400


def test_span_detail_and_the_logs_linked_spans(store, client):
    detail = client.get(f"/api/span/{LINKED_SPAN}").json()
    assert detail["link"] == "response_id" and detail["span"]["span.id"] == LINKED_SPAN
    assert (detail["app_ms"], detail["service_ms"], detail["gap_ms"]) == (285.0, 240.0, 45.0)
    assert detail["log"]["azure.open_ai.correlation_id"] == LINKED_LOG_CID
    assert [s["span.id"] for s in detail["trace"]] == [f"{5:016x}", LINKED_SPAN]  # i=4 and i=5 share a trace
    # The same by document id, and the other direction: the log's document view lists the span.
    by_id = client.get(f"/api/span/{detail['span']['id']}").json()
    assert by_id["span"]["span.id"] == LINKED_SPAN
    spans = client.get(f"/api/doc/logs/{detail['log']['id']}/spans").json()["spans"]
    assert [(s["span.id"], s["link"]) for s in spans] == [(LINKED_SPAN, "response_id")]
    assert client.get("/api/span/0000000000000bad").status_code == 404
    assert client.get("/api/span/not-an-id").status_code == 400
    assert client.get("/api/doc/logs/not-a-uuid/spans").status_code == 400


# --- Cost API --------------------------------------------------------------------------------------

def test_cost_report_is_the_pricing_summary(store, client, pricing):
    res = client.get("/api/cost", params=RANGE).json()
    s = R.summary(store, pricing, START_MS, END_MS)
    assert res["currency"] == s["currency"] == "USD"
    for key in ("total", "token_cost", "ptu_cost", "unpriced_requests", "unpriced_deployment_hours"):
        assert res[key] == pytest.approx(s[key]), key
    assert res["ptu_cost"] > 0 and res["total"] > res["token_cost"] > 0
    assert res["unpriced_reasons"] == s["unpriced_reasons"] and res["unpriced_deployment_hours"] > 0
    assert close(res["by_model"], s["by_model"])
    assert [(r["day"], r["deployment"]) for r in res["daily_by_deployment"]] == [(r["day"], r["deployment"]) for r in s["daily_by_deployment"]]
    assert res["top_callers"] == s["top_callers"] and res["top_callers"][0]["caller"].startswith("sub-")
    assert [(p["day"], p["deployment"]) for p in res["ptu_vs_payg"]] == [(p["day"], p["deployment"]) for p in s["ptu_vs_payg"]]
    assert res["break_even"][0]["statement"] == s["break_even"][0]["statement"]
    # One row per PTU deployment and day, 48 hours in all (a config entry without account once double-counted).
    assert len({(p["day"], p["deployment"]) for p in res["ptu_vs_payg"]}) == len(res["ptu_vs_payg"]) == 3
    assert sum(p["hours"] for p in res["ptu_vs_payg"]) == 48
    assert "PTU costs" in res["break_even"][0]["statement"]
    assert close(res["forecast"], s["forecast"])
    # Daily charts add up to the totals.
    dep_chart = res["charts"]["deployment"]
    assert sum(v or 0 for vals in dep_chart["series"].values() for v in vals) == pytest.approx(res["token_cost"])
    assert all(t % 86400_000 == 0 for t in dep_chart["t"])
    assert res["filtered_by"] == [] and res["not_filtered"] == []


def test_cost_report_follows_the_deployment_control(store, client, pricing):
    res = client.get("/api/cost", params={**RANGE, "dep": "gpt-4o-ptu", "sub": "x"}).json()
    rows = [r for r in R.hourly_costs(store, pricing, START_MS, END_MS) if r["deployment"] == "gpt-4o-ptu"]
    assert res["token_cost"] == pytest.approx(sum(r["cost"] for r in rows))
    assert {r["deployment"] for r in res["daily_by_deployment"]} == {"gpt-4o-ptu"}
    assert {p["deployment"] for p in res["ptu_vs_payg"]} == {"gpt-4o-ptu"}
    assert res["filtered_by"] == ["dep"] and res["not_filtered"][0] == "sub"
    other = client.get("/api/cost", params={**RANGE, "dep": "o3-mini"}).json()
    assert other["ptu_vs_payg"] == [] and other["ptu_cost"] == 0 and other["total"] == other["token_cost"] > 0


def test_cost_dashboard_no_longer_sums_logs_cost(client):
    meta = client.get("/api/dashboards").json()
    cost = next(d for d in meta["dashboards"] if d["id"] == "cost")
    assert [p["id"] for p in cost["panels"]] == ["cost_prompt_tokens", "cost_generated_tokens", "cost_total_tokens",
                                                 "cost_share", "cost_tokens_time"]


# --- in the browser --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(env, store):
    proc = subprocess.Popen([sys.executable, "-m", "aoai_monitor.cli", "serve", "--store", env["path"], "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "AOAI_MONITOR_CONFIG": env["config"]})
    url = None
    deadline = time.monotonic() + 30
    while url is None and time.monotonic() < deadline:
        m = re.search(r"(http://\S+)", proc.stdout.readline())
        url = m.group(1) if m else None
    assert url, "server printed no URL"
    yield url
    proc.terminate()
    proc.wait(10)


def attr(page, selector, name="data-value"):
    return page.locator(selector).first.get_attribute(name)


def test_traces_page_in_the_browser(served, store, page):
    url = served
    page.goto(f"{url}#/traces?{TIME}")
    page.wait_for_selector("#view[data-ready='1']", timeout=20_000)
    assert int(attr(page, "#span-count", "data-total")) == one(store, SPANS_IN_RANGE, [START_MS, END_MS])
    assert page.locator("#span-table tr.span-row").count() == 32
    # App-side panels: the numbers SQL gives for the shop service.
    row = "#app-panel-table tr[data-group='shop']"
    shop = 'FROM spans WHERE "service.name" = \'shop\''
    assert float(attr(page, f"{row} td[data-key='p95_ms']")) == pytest.approx(one(store, f'SELECT quantile_cont("aoai.duration_ms", 0.95) {shop}'))
    assert float(attr(page, f"{row} td[data-key='p99_ms']")) == pytest.approx(one(store, f'SELECT quantile_cont("aoai.duration_ms", 0.99) {shop}'))
    assert float(attr(page, f"{row} td[data-key='ttft_p50_ms']")) == pytest.approx(one(store, f'SELECT median("aoai.ttft_ms") {shop}'))
    assert float(attr(page, f"{row} td[data-key='cost']")) == pytest.approx(one(store, f'SELECT sum("aoai.cost") {shop}'))
    assert int(attr(page, f"{row} td[data-key='unpriced']")) == one(store, f'SELECT count(*) {shop} AND "aoai.cost" IS NULL')
    for chart in ("p95_ms", "ttft_p95_ms", "tokens", "cost"):
        assert page.locator(f"[data-app-chart='{chart}'] svg.chart [data-series]").count() > 0, chart
    assert "45 ms" in page.locator("#app-vs-service").inner_text()
    # The HTML payload in a service name and span attribute stays text.
    assert page.locator("#app-panel-table td", has_text="<script>window.__xss=2</script>").count() == 1
    assert page.evaluate("window.__xss") is None and page.dialogs == []
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "traces.png"), full_page=True)
    # Filter by service, then a KQL query on top.
    page.select_option("#trace-service", "crm")
    wait_until(page, "location.hash.includes('service=crm')")
    wait_until(page, "document.querySelector('#span-count') && document.querySelector('#span-count').dataset.total !== '32'")
    assert int(attr(page, "#span-count", "data-total")) == one(store, SPANS_IN_RANGE + ' AND "service.name" = \'crm\'', [START_MS, END_MS])
    page.fill("#trace-kql", "aoai.duration_ms >= 1000")
    page.press("#trace-kql", "Enter")
    wait_until(page, "location.hash.includes('duration_ms')")
    expect = one(store, SPANS_IN_RANGE + ' AND "service.name" = \'crm\' AND "aoai.duration_ms" >= 1000', [START_MS, END_MS])
    wait_until(page, f"document.querySelector('#span-count') && document.querySelector('#span-count').dataset.total === '{expect}'")
    assert page.locator("#span-table tr.span-row").count() == expect > 0
    assert not [e for e in page.console_errors if "Content Security Policy" in e]


def test_span_detail_links_the_gateway_log_and_back(served, store, page):
    url = served
    page.goto(f"{url}#/traces?{TIME}&q=span.id:{LINKED_SPAN}")
    page.wait_for_selector(f"tr.span-row[data-span='{LINKED_SPAN}'] a")
    page.locator(f"tr.span-row[data-span='{LINKED_SPAN}'] a").first.click()
    page.wait_for_selector("#latency-compare")
    wait_until(page, "document.querySelector('#view').dataset.ready === '1'")
    app_ms = one(store, 'SELECT "aoai.duration_ms" FROM spans WHERE "span.id" = ?', [LINKED_SPAN])
    log_id, svc_ms = store.cursor().execute(
        'SELECT CAST(id AS VARCHAR), "aoai.duration_ms" FROM logs WHERE "azure.open_ai.correlation_id" = ?', [LINKED_LOG_CID]).fetchone()
    assert float(attr(page, "#latency-compare td[data-key='app_ms']")) == app_ms == 285.0
    assert float(attr(page, "#latency-compare td[data-key='service_ms']")) == svc_ms == 240.0
    assert float(attr(page, "#latency-compare td[data-key='gap_ms']")) == app_ms - svc_ms
    assert attr(page, "#linked-log", "data-log") == log_id
    assert attr(page, "#linked-log [data-link]", "data-link") == "response_id"
    assert page.locator(".waterfall tr[data-span]").count() == 2
    # Unknown span attributes (here an HTML payload) are shown from `extra`, as text.
    assert "<script>window.__xss=2</script>" in page.locator("#span-fields tr[data-field='extra'] pre").inner_text()
    page.screenshot(path=str(SHOTS / "span-detail.png"), full_page=True)
    # The log's document view shows the span.
    page.click("#linked-log-link")
    page.wait_for_selector("#linked-spans[data-ready='1']")
    assert attr(page, "#linked-spans a.linked-span", "data-span") == LINKED_SPAN
    assert page.locator(".doc-fields tr[data-field='azure.open_ai.correlation_id']").count() == 1
    page.screenshot(path=str(SHOTS / "log-linked-spans.png"), full_page=True)
    page.locator("#linked-spans a.linked-span").first.click()
    page.wait_for_selector("#latency-compare")
    assert page.evaluate("window.__xss") is None


def test_cost_dashboard_shows_the_report(served, store, pricing, page):
    url = served
    page.goto(f"{url}#/dash/cost?{TIME}")
    page.wait_for_selector("#cost-report[data-ready='1']", timeout=20_000)
    page.wait_for_selector(".grid[data-dash='cost'][data-ready='1']")
    s = R.summary(store, pricing, START_MS, END_MS)

    def cost(k):
        return float(attr(page, f"[data-cost='{k}'] .stat"))

    assert cost("total") == pytest.approx(s["total"]) and cost("ptu_cost") == pytest.approx(s["ptu_cost"]) and s["ptu_cost"] > 0
    assert cost("token_cost") == pytest.approx(s["token_cost"])
    assert page.locator("[data-cost='total'] .stat").inner_text().startswith("$")
    assert "(USD)" in page.locator("[data-cost='total'] h3").inner_text()
    assert cost("unpriced") == s["unpriced_requests"] + s["unpriced_deployment_hours"] > 0
    assert page.locator("#unpriced-reasons tbody tr").count() == len(s["unpriced_reasons"])
    assert s["unpriced_reasons"][0]["reason"] in page.locator("#unpriced-reasons").inner_text()
    assert cost("forecast") == pytest.approx(s["forecast"]["forecast"])
    assert page.locator(".break-even").first.inner_text() == s["break_even"][0]["statement"]
    assert page.locator("#ptu-vs-payg tbody tr").count() == len(s["ptu_vs_payg"]) > 0
    assert page.locator("#top-callers tbody tr td").first.inner_text() == s["top_callers"][0]["caller"]
    assert page.locator("#cost-by-model tbody tr").count() == len(s["by_model"])
    for chart in ("deployment", "model"):
        assert page.locator(f"[data-cost-chart='{chart}'] svg.chart rect[data-series]").count() > 0, chart
    # The token-volume panels are still there and still agree with SQL.
    gen = one(store, 'SELECT sum("azure.open_ai.generated_tokens.total") FROM metrics WHERE "@timestamp" >= epoch_ms(?::BIGINT) '
              'AND "@timestamp" < epoch_ms(?::BIGINT)', [START_MS, END_MS])
    assert float(attr(page, "[data-panel='cost_generated_tokens'] .stat")) == pytest.approx(gen)
    assert page.locator("[data-panel='cost_tokens_time'] svg.chart rect[data-series]").count() > 0
    assert page.locator(".panel .error, #cost-report .error").count() == 0
    page.screenshot(path=str(SHOTS / "cost-report.png"), full_page=True)
    # The Deployment control narrows the report.
    page.select_option("#ctl-dep", "gpt-4o-ptu")
    wait_until(page, "location.hash.includes('dep=gpt-4o-ptu')")
    wait_until(page, "document.querySelector('#cost-filter-note') && document.querySelector('#cost-report').dataset.ready === '1'")
    rows = [r for r in R.hourly_costs(store, pricing, START_MS, END_MS) if r["deployment"] == "gpt-4o-ptu"]
    assert cost("token_cost") == pytest.approx(sum(r["cost"] for r in rows))
    assert page.locator("#ptu-vs-payg tbody tr").count() == len([p for p in s["ptu_vs_payg"] if p["deployment"] == "gpt-4o-ptu"])
