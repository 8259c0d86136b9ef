"""Web API: panel numbers against SQL on the same store (raw and through the rollup), Discover, documents,
SQL page, injection through every parameter, token auth, loopback Host check, security headers, and the
real `aoai-monitor serve` process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

import pytest
from starlette.testclient import TestClient

from aoai_monitor import schema
from aoai_monitor.demo import generate_demo
from aoai_monitor.query.sql import open_for_queries
from aoai_monitor.store import Store
from aoai_monitor.web import app as web
from aoai_monitor.web import panels as P

END = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
END_MS = int(END.timestamp() * 1000)
START_MS = END_MS - 86400_000
RANGE = {"start": START_MS, "end": END_MS}
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
XSS_ID = "00000000-0000-4000-8000-00000000a11e"


def xss_doc() -> dict:
    """A stored log whose prompt, completion, an unknown field name and its value are all HTML payloads."""
    return {
        "id": XSS_ID, "@timestamp": END_MS - 3600_000, "azure.open_ai.category": "GatewayLogs",
        "aoai.deployment": "gpt-4o", "aoai.status_code": 200,
        "azure.open_ai.properties.backend_request_body.messages": [{"role": "user", "content": XSS}],
        "azure.open_ai.properties.backend_response_body.choices": [{"message": {"content": XSS}}],
        "event.original": json.dumps({"category": "GatewayLogs", "prompt": XSS}),
        XSS: XSS,
    }


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("web") / "api.duckdb")
    with Store(path) as store:
        generate_demo(store, end=END, days=1, scale=0.05, progress=False)
        store.commit(logs=[xss_doc()])
    return path


@pytest.fixture(scope="module")
def store(store_path):
    s = open_for_queries(store_path)
    yield s
    s.close()


@pytest.fixture()
def client(store):
    return TestClient(web.create_app(store), base_url="http://127.0.0.1")


def sql_one(store, sql, params=()):
    return store.cursor().execute(sql, list(params)).fetchone()[0]


def raw_requests(store, extra="", params=()):
    return sql_one(store, 'SELECT count(*) FROM logs WHERE "azure.open_ai.category" = \'RequestResponse\' '
                   'AND "@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT)' + extra,
                   [START_MS, END_MS, *params])


# --- panels ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("lag_ms", [10**13, 0], ids=["all-in-tail", "all-in-rollup"])
def test_overview_numbers_match_sql(store, client, lag_ms, monkeypatch):
    """The rollup (stored part and live tail) answers exactly what raw SQL on the logs answers."""
    monkeypatch.setattr(web.Rollups, "LAG_MS", lag_ms)
    web.rollups_for(store).refresh(force=True)
    data = client.get("/api/dashboard/overview", params=RANGE).json()["panels"]
    assert data["total_requests"]["value"] == raw_requests(store) > 100
    assert data["total_errors"]["value"] == raw_requests(store, ' AND "aoai.status_code" >= 400') > 0
    assert data["throttled"]["value"] == raw_requests(store, ' AND "aoai.status_code" = 429')
    tokens = sql_one(store, 'SELECT sum("azure.open_ai.token_transaction.total") FROM metrics WHERE "@timestamp" >= epoch_ms(?::BIGINT) '
                     'AND "@timestamp" < epoch_ms(?::BIGINT)', [START_MS, END_MS])
    assert data["total_tokens"]["value"] == pytest.approx(tokens)
    donut = dict(data["model_usage"]["rows"])
    assert donut["gpt-4o"] == raw_requests(store, ' AND "aoai.deployment" = ?', ["gpt-4o"])
    errors = data["error_rate"]
    assert sum(v or 0 for s in errors["series"].values() for v in s) == data["total_errors"]["value"]
    latency = data["latency"]["series"]
    assert latency and all(v is None or v > 0 for s in latency.values() for v in s)
    assert all("error" not in v for v in data.values())


def test_controls_filter_every_table(store, client):
    dep = "gpt-4o-mini"
    data = client.get("/api/dashboard/overview", params={**RANGE, "dep": dep}).json()["panels"]
    assert data["total_requests"]["value"] == raw_requests(store, ' AND "aoai.deployment" = ?', [dep])
    assert set(data["request_rate"]["series"]) == {dep}
    rg = sql_one(store, 'SELECT "azure.resource.group" FROM logs WHERE "azure.open_ai.category" = \'RequestResponse\' LIMIT 1')
    data = client.get("/api/dashboard/overview", params={**RANGE, "rg": rg.upper()}).json()["panels"]
    assert data["total_requests"]["value"] == raw_requests(store, ' AND "azure.resource.group" = ?', [rg])
    assert data["total_tokens"]["value"] > 0  # metrics keep Azure's casing; compared case-insensitively


def test_every_dashboard_answers_without_errors(client):
    meta = client.get("/api/dashboards").json()
    assert [d["id"] for d in meta["dashboards"]] == ["overview", "ptu", "content", "cost"]
    for d in meta["dashboards"]:
        panels = client.get(f"/api/dashboard/{d['id']}", params=RANGE).json()["panels"]
        assert set(panels) == {p["id"] for p in d["panels"]}
        assert [p for p, v in panels.items() if "error" in v] == []


def test_content_filter_panels_use_their_own_category(store, client):
    """Elastic's 'Sexual (input)' panel filtered on self_harm; ours must count only sexual hits."""
    data = client.get("/api/dashboard/content", params=RANGE).json()["panels"]
    for side in ("input", "output"):
        for cat in schema.CONTENT_FILTER_CATEGORIES:
            expected = sql_one(store, f'SELECT count(*) FROM (SELECT unnest("aoai.content_filter.{side}") c FROM logs '
                               'WHERE "@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT)) '
                               "WHERE starts_with(c, ?) AND NOT ends_with(c, ':safe')", [START_MS, END_MS, cat + ":"])
            got = sum(v or 0 for s in data[f"{side}_{cat}"]["series"].values() for v in s)
            assert got == expected, (side, cat)


def test_panel_endpoint_and_unknown_panel(client):
    assert client.get("/api/panel/overview/total_requests", params=RANGE).json()["value"] > 0
    assert client.get("/api/panel/overview/nope", params=RANGE).status_code == 400


# --- Discover and documents -----------------------------------------------------------------------

def test_discover_kql_histogram_paging(store, client):
    params = {**RANGE, "q": "aoai.status_code >= 400 and azure.open_ai.category:RequestResponse", "limit": 10}
    res = client.get("/api/discover", params=params).json()
    assert res["total"] == raw_requests(store, ' AND "aoai.status_code" >= 400')
    assert sum(n for _, n in res["histogram"]) == res["total"]
    assert len(res["rows"]) == 10 and all(r[res["columns"].index("aoai.status_code")] >= 400 for r in res["rows"])
    assert all(isinstance(r[1], int) for r in res["rows"]), "timestamps are epoch ms"
    page2 = client.get("/api/discover", params={**params, "offset": 10}).json()
    assert not {r[0] for r in page2["rows"]} & {r[0] for r in res["rows"]}
    metrics = client.get("/api/discover", params={**RANGE, "table": "metrics", "q": "azure.metric_name:GeneratedTokens"}).json()
    assert metrics["total"] > 0


def test_discover_kql_error_has_position(client):
    res = client.get("/api/discover", params={**RANGE, "q": "aoai.status_code >= "})
    assert res.status_code == 400 and "position" in res.json()


def test_fields_and_top_values(store, client):
    fields = {f["name"]: f for f in client.get("/api/fields", params=RANGE).json()["fields"]}
    assert fields["aoai.deployment"]["sample_count"] > 0 and "extra" not in fields
    top = client.get("/api/values", params={**RANGE, "field": "aoai.deployment", "q": "azure.open_ai.category:RequestResponse"}).json()
    values = dict(top["values"])
    assert values["gpt-4o"] == raw_requests(store, ' AND "aoai.deployment" = ?', ["gpt-4o"])
    arr = client.get("/api/values", params={**RANGE, "field": "aoai.content_filter.input"}).json()
    assert all(":" in v for v, _ in arr["values"])


def test_document_has_every_field_and_raw_record(client):
    doc = client.get(f"/api/doc/logs/{XSS_ID}", params={"ts": END_MS - 3600_000}).json()
    names = dict(doc["fields"])
    assert names["aoai.deployment"] == "gpt-4o"
    assert names[XSS] == XSS and XSS in doc["extra_keys"]  # unknown field kept verbatim (rendered inert by the UI)
    assert names["azure.open_ai.properties.backend_request_body.messages"][0]["content"] == XSS
    assert json.loads(doc["raw"])["prompt"] == XSS
    assert client.get("/api/doc/logs/00000000-0000-4000-8000-000000000000").status_code == 404


def test_sql_page(store, client):
    res = client.post("/api/sql", json={"sql": 'SELECT count(*) AS n FROM logs WHERE "aoai.deployment" = ?', "params": ["gpt-4o"]}).json()
    assert res["rows"][0][0] == sql_one(store, 'SELECT count(*) FROM logs WHERE "aoai.deployment" = ?', ["gpt-4o"])
    for _, sql in P.SQL_EXAMPLES:
        out = client.post("/api/sql", json={"sql": sql})
        assert out.status_code == 200 and out.json()["rows"], sql
    big = client.post("/api/sql", json={"sql": "SELECT * FROM range(5000)"}).json()
    assert big["truncated"] and len(big["rows"]) == web.SQL_ROW_LIMIT


# --- injection ------------------------------------------------------------------------------------

INJECTIONS = ["' OR '1'='1", "gpt-4o' --", '"; DROP TABLE logs; --', "1) OR (1=1", "x\" OR \"1\"=\"1", "%' OR 1=1 --"]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_through_every_parameter(store, client, payload):
    before = store.count("logs")
    for param in ("sub", "rg", "res", "dep"):
        res = client.get("/api/dashboard/overview", params={**RANGE, param: payload}).json()
        assert res["panels"]["total_requests"]["value"] == 0, param
        assert client.get("/api/discover", params={**RANGE, param: payload}).json()["total"] == 0, param
    for param in ("start", "end", "bucket", "offset", "limit"):
        assert client.get("/api/discover", params={**RANGE, param: payload}).status_code == 400, param
        assert client.get("/api/dashboard/overview", params={**RANGE, param: payload}).status_code in (200, 400), param
    assert client.get("/api/discover", params={**RANGE, "q": f"aoai.deployment:{json.dumps(payload)}"}).json()["total"] == 0
    assert client.get("/api/discover", params={**RANGE, "table": payload}).status_code == 400
    assert client.get("/api/discover", params={**RANGE, "columns": payload}).status_code == 400
    assert client.get("/api/values", params={**RANGE, "field": payload}).status_code == 400
    assert client.get("/api/fields", params={**RANGE, "table": payload}).status_code == 400
    assert client.get(f"/api/doc/logs/{payload}").status_code in (400, 404)
    assert client.get(f"/api/doc/{payload}/{XSS_ID}").status_code in (400, 404)
    assert client.get(f"/api/dashboard/{payload}").status_code in (400, 404)
    assert store.count("logs") == before


@pytest.mark.parametrize("sql", ["DROP TABLE logs", "SELECT 1; DROP TABLE logs", "DELETE FROM logs",
                                 "COPY logs TO '/tmp/x.csv'", "SELECT * FROM read_csv('/etc/passwd')",
                                 "ATTACH '/tmp/evil.duckdb' AS e", "INSTALL httpfs"])
def test_sql_page_is_read_only(store, client, sql):
    before = store.count("logs")
    res = client.post("/api/sql", json={"sql": sql})
    assert res.status_code == 400 and res.json()["error"]
    assert store.count("logs") == before


def test_sql_needs_json_body(client):
    assert client.post("/api/sql", content="sql=SELECT 1", headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 415
    assert client.post("/api/sql", json={"sql": 1}).status_code == 400


# --- auth and headers -----------------------------------------------------------------------------

def test_loopback_only_without_token(store):
    c = TestClient(web.create_app(store), base_url="http://evil.example")
    assert c.get("/api/dashboards").status_code == 403
    c = TestClient(web.create_app(store), base_url="http://localhost:8765")
    assert c.get("/api/dashboards").status_code == 200


def test_token_header_and_session_cookie(store):
    app = web.create_app(store, token="s3cret-token")
    c = TestClient(app, base_url="http://monitor.example")
    assert c.get("/api/dashboards").status_code == 401
    assert c.get("/").status_code == 401
    assert c.get("/api/dashboards", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/dashboards", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    assert c.get("/?token=wrong", follow_redirects=False).status_code == 401
    login = c.get("/?token=s3cret-token", follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/"
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict") and "s3cret-token" not in cookie
    assert c.get("/api/dashboards").status_code == 200  # the session cookie now authenticates
    c.cookies.set(web.COOKIE, "forged")
    assert c.get("/api/dashboards").status_code == 401


def test_security_headers(client):
    for path in ("/", "/api/dashboards", "/static/app.js"):
        r = client.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/api/dashboards").headers["cache-control"] == "no-store"


def test_static_assets_need_no_internet(client):
    html = client.get("/").text
    js = client.get("/static/app.js").text
    for text in (html, js, client.get("/static/app.css").text):
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), "no CDN or remote asset"
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "eval(" not in js


# --- the real server ------------------------------------------------------------------------------

def _start(args):
    proc = subprocess.Popen([sys.executable, "-m", "aoai_monitor.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        m = re.search(r"(http://\S+)", line)
        if m:
            return proc, m.group(1), lines
    proc.kill()
    raise AssertionError("server printed no URL: " + "".join(lines))


def test_serve_binds_loopback_and_answers(store_path):
    proc, url, _ = _start(["serve", "--store", store_path, "--port", "0"])
    try:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/dashboards", timeout=10) as r:
            assert len(json.load(r)["dashboards"]) == 4
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_beyond_loopback_requires_token(store_path):
    proc, url, lines = _start(["serve", "--store", store_path, "--host", "0.0.0.0", "--port", "0"])
    try:
        printed = "".join(lines)
        token = re.search(r"access token .*: (\S+)", printed).group(1)
        assert url.endswith("?token=" + token)
        port = re.search(r":(\d+)/", url).group(1)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/dashboards", timeout=10)
        assert err.value.code == 401
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/dashboards", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(10)
