"""The Alerts and SLO pages' API: rules, states, history, silences, UI rules, SLO burn-down, anomalies;
and the pages render in headless Chromium with data escaped."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import pytest
from starlette.testclient import TestClient

from aoai_monitor.alerting import simulate as sim
from aoai_monitor.alerting.service import Engine, parse_section
from aoai_monitor.store import Store
from aoai_monitor.web.app import create_app
from tests.test_alert_templates import Clock

H = 3_600_000
NOW = int(datetime.now(timezone.utc).timestamp() * 1000) // 60_000 * 60_000
SECTION = {"targets": {"ops": {"type": "webhook", "url": "http://127.0.0.1:9/hook?token=SECRET-XYZ"}},
           "rules": [{"id": "errors", "agg": "ratio(aoai.status_code >= 500)", "group_by": ["aoai.deployment"],
                      "window": "15m", "warning": 10, "critical": 30, "runbook": "<img src=x onerror=alert(1)>"}],
           "slos": [{"id": "avail", "type": "availability", "target": 99.5}],
           "anomaly": {"training": "2d"}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    logs, metrics = sim.generate(NOW - 2 * 86_400_000, NOW - H, seed=41, scale=0.3)
    # the last hour busy enough at any time of day for the 5-minute burn window: the API's clock is the wall clock
    gpt4o = tuple(d for d in sim.DEPLOYMENTS if d.name == "gpt-4o")
    burst, _ = sim.generate(NOW - H, NOW, (sim.Incident("errors", "gpt-4o", NOW - H, NOW, 0.4),), seed=42, scale=10,
                            deployments=gpt4o)
    quiet, _ = sim.generate(NOW - H, NOW, seed=43, scale=0.3, deployments=tuple(d for d in sim.DEPLOYMENTS if d not in gpt4o))
    s = Store(tmp_path_factory.mktemp("web") / "w.duckdb")
    s.pricer = None
    sim.load_into(s, logs + burst + quiet, metrics)
    engine = Engine(s, parse_section(SECTION), clock=Clock(NOW))
    engine.publish()
    engine.evaluate_due(NOW)
    s.commit(anomalies=[{"id": "00000000-0000-4000-8000-000000000001", "@timestamp": NOW - H, "aoai.deployment": "gpt-4o",
                         "anomaly.metric": "error_rate", "anomaly.value": 0.4, "anomaly.expected": 0.001,
                         "anomaly.score": 30.0, "anomaly.direction": "above"}])
    yield s
    s.close()


@pytest.fixture
def client(store):
    return TestClient(create_app(store), base_url="http://127.0.0.1")


def test_alerts_overview_rules_and_silences(client):
    data = client.get("/api/alerts").json()
    assert {r["id"] for r in data["rules"]} == {"errors", "slo.avail"}
    assert data["targets"] == {"ops": "webhook"} and "SECRET-XYZ" not in str(data)
    firing = [s for s in data["states"] if s["state"] == "firing"]
    pairs = [(s["rule"], s["group"]) for s in firing]
    expected = [("errors", "aoai.deployment=gpt-4o"), ("slo.avail", "aoai.deployment=gpt-4o")]
    assert expected[0] in pairs and expected[1] in pairs, pairs
    # The simulated background traffic follows the wall clock: at some hours its own errors burn another
    # deployment's availability budget too (CI at 11:15 saw gpt-4o-ptu). Only the SLO may fire for those.
    assert all(rule == "slo.avail" for rule, group in pairs if (rule, group) not in expected), pairs
    assert data["history"][0]["alert.state"] == "firing"
    r = client.post("/api/alerts/silence", json={"rule": "errors", "group": "aoai.deployment=gpt-4o", "minutes": 30})
    assert r.status_code == 200
    assert client.get("/api/alerts").json()["silences"][0]["group"] == "aoai.deployment=gpt-4o"
    assert client.post("/api/alerts/silence", json={"rule": "errors", "minutes": -1}).status_code == 400
    form = client.post("/api/alerts/silence", data={"rule": "errors", "minutes": "30"})  # a cross-site form
    assert form.status_code == 415


def test_ui_rules_are_validated_saved_and_deleted(client, store):
    bad = client.post("/api/alerts/rules", json={"id": "x", "agg": "median(aoai.duration_ms)", "warning": 1})
    assert bad.status_code == 400 and "p95(field)" in bad.json()["error"]
    clash = client.post("/api/alerts/rules", json={"id": "errors", "warning": 1})
    assert "config file" in clash.json()["error"]
    unknown = client.post("/api/alerts/rules", json={"id": "slow", "warning": 1, "notify": ["pager"]})
    assert "unknown target" in unknown.json()["error"]
    ok = client.post("/api/alerts/rules", json={"id": "slow", "agg": "p95(aoai.duration_ms)", "group_by": ["aoai.deployment"],
                                                "warning": 1, "critical": 2, "notify": ["ops"]})
    assert ok.status_code == 200, ok.text
    engine = Engine(store, parse_section(SECTION), clock=Clock(NOW))
    assert "slow" in [r.id for r in engine.all_rules()]
    assert client.request("DELETE", "/api/alerts/rules/slow", json={}).status_code == 200
    assert "slow" not in [r.id for r in engine.all_rules()]


def test_slo_and_anomaly_endpoints(client):
    slo = client.get("/api/slo").json()["slos"][0]
    groups = {g["group"]: g for g in slo["groups"]}
    assert slo["tiers"][0]["factor"] == 14.4
    assert groups["aoai.deployment=gpt-4o"]["budget_remaining_pct"] < groups["aoai.deployment=embed"]["budget_remaining_pct"]
    assert len(groups["aoai.deployment=embed"]["burn_down"]) == 60
    an = client.get(f"/api/anomalies?start={NOW - 3 * H}&end={NOW}&dep=gpt-4o").json()
    assert an["rows"][0]["measure"] == "error_rate" and an["chart"]["series"]["error_rate"] == [1]


def test_read_only_store_refuses_writes_with_a_hint(store, tmp_path):
    store.con.execute("CHECKPOINT")  # the module store holds the write lock: serve a copy read-only
    shutil.copy(store.path, tmp_path / "ro.duckdb")
    ro = Store(tmp_path / "ro.duckdb", read_only=True)
    try:
        c = TestClient(create_app(ro), base_url="http://127.0.0.1")
        r = c.post("/api/alerts/silence", json={"rule": "errors", "minutes": 5})
        assert r.status_code == 409 and "aoai-monitor run" in r.json()["error"]
        assert c.get("/api/alerts").status_code == 200
    finally:
        ro.close()
