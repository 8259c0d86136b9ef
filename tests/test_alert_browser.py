"""The Alerts and SLO pages in headless Chromium, served by the real `aoai-monitor serve`: active alerts,
rules, history, anomaly chart and SLO burn-down render, and HTML in rule names stays inert."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from aoai_monitor.alerting import simulate as sim
from aoai_monitor.alerting.service import Engine, parse_section
from aoai_monitor.store import Store
from tests.test_alert_templates import Clock
from tests.test_web_browser import ARGS, CHROMIUM, SHOTS, wait_until

sync_api = pytest.importorskip("playwright.sync_api")
H = 3_600_000
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    now = int(time.time() * 1000) // 60_000 * 60_000
    path = str(tmp_path_factory.mktemp("alerts-browser") / "a.duckdb")
    logs, metrics = sim.generate(now - 86_400_000, now - H, seed=51, scale=0.3)
    # the last hour: gpt-4o busy at any hour and weekday (the pages use the wall clock), with a 5xx burst
    busy, _ = sim.generate(now - H, now, (sim.Incident("errors", "gpt-4o", now - H, now, 0.4),), seed=52,
                           scale=10, deployments=sim.DEPLOYMENTS[:1])
    rest, _ = sim.generate(now - H, now, seed=53, scale=0.3, deployments=sim.DEPLOYMENTS[1:])
    logs += busy + rest
    with Store(path) as store:
        store.pricer = None
        sim.load_into(store, logs, metrics)
        section = {"rules": [{"id": "errors", "name": XSS, "agg": "ratio(aoai.status_code >= 500)",
                              "group_by": ["aoai.deployment"], "window": "15m", "warning": 10, "critical": 30}],
                   "slos": [{"id": "avail", "name": "Availability", "type": "availability", "target": 99.5}],
                   "anomaly": {"training": "1d"}}
        engine = Engine(store, parse_section(section), clock=Clock(now))
        engine.publish()
        engine.evaluate_due(now)
        # Two scored anomalies for the Overview markers (detection itself is tested in test_anomaly.py).
        store.commit(anomalies=[
            {"id": f"00000000-0000-4000-8000-00000000000{i}", "@timestamp": now - ago, "aoai.deployment": "gpt-4o",
             "anomaly.metric": metric, "anomaly.bucket_ms": 900_000, "anomaly.value": 40.0, "anomaly.expected": 4.0,
             "anomaly.lower": 0.0, "anomaly.upper": 9.0, "anomaly.score": 8.5, "anomaly.direction": "above"}
            for i, (metric, ago) in enumerate((("request_rate", 2 * H), ("error_rate", H // 2)))])
    proc = subprocess.Popen([sys.executable, "-m", "aoai_monitor.cli", "serve", "--store", path, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found = None
    deadline = time.monotonic() + 30
    while found is None and time.monotonic() < deadline:
        m = re.search(r"(http://\S+)", proc.stdout.readline())
        found = m.group(1) if m else None
    assert found, "server printed no URL"
    yield found
    proc.terminate()
    proc.wait(10)


def test_alerts_and_slo_pages_render(url):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        base = url.split("#")[0].rstrip("/")
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + "/#/alerts?from=now-24h")
        wait_until(page, "document.getElementById('view').dataset.ready === '1'")
        text = page.inner_text("#view")
        # The simulated traffic follows the wall clock, so how many SLO burn alerts are pending besides the 5xx
        # burst depends on the hour: the heading must match what the service reports as active.
        import json
        import urllib.request

        with urllib.request.urlopen(f"{base}/api/alerts", timeout=10) as r:
            states = json.load(r)["states"]
        assert any(s["rule"] == "errors" and s["state"] == "firing" for s in states)
        assert f"Active ({len(states)})" in text and "aoai.deployment=gpt-4o" in text and "firing · critical" in text
        assert XSS in text  # shown as text, never parsed
        assert page.locator("#view img").count() == 0 and dialogs == [] and errors == []
        assert page.locator("#save-rule").count() == 1
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "alerts.png"), full_page=True)
        page.goto(base + "/#/slo")
        # The alerts page may still redraw (the full-page screenshot resized the window): wait for the SLO route's.
        wait_until(page, "document.getElementById('view').dataset.route === 'slo' && "
                         "document.getElementById('view').dataset.ready === '1'")
        slo = page.text_content("#view")
        assert "target 99.5 % over 30 days" in slo and "budget remaining" in slo
        assert page.locator("[data-slo] svg.chart path").count() >= 4  # one burn-down line per deployment
        page.screenshot(path=str(SHOTS / "slo.png"), full_page=True)
        browser.close()


def test_overview_charts_mark_the_detected_anomalies(url):
    """Anomalies the detector stored appear as markers on the Overview chart of their measure."""
    import json
    import urllib.request

    base = url.split("#")[0].rstrip("/")
    now = int(time.time() * 1000)
    with urllib.request.urlopen(f"{base}/api/anomalies?start={now - 86_400_000}&end={now + 60_000}", timeout=10) as r:
        rows = json.loads(r.read())["rows"]
    expected = {m: sum(1 for a in rows if a["measure"] == m) for m in ("request_rate", "error_rate")}
    assert expected == {"request_rate": 1, "error_rate": 1}
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(base + f"/#/overview?from={now - 86_400_000}&to={now + 60_000}")
        wait_until(page, "document.querySelector('[data-panel=\"error_rate\"]') && "
                         "document.querySelector('[data-panel=\"error_rate\"]').dataset.anomalies !== undefined")
        for panel, measure in (("request_rate", "request_rate"), ("error_rate", "error_rate")):
            shown = page.locator(f"[data-panel='{panel}']").get_attribute("data-anomalies")
            assert int(shown) == expected[measure], (panel, shown, expected)
        assert page.locator(".anomaly-mark").count() >= 1
        page.screenshot(path=str(SHOTS / "overview-anomalies.png"), full_page=True)
        browser.close()
