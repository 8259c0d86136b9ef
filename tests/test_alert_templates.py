"""The built-in templates fire on their incidents and stay quiet on normal traffic; each state change is
announced once to a real local webhook receiver; catch-up after downtime does not flood."""

from __future__ import annotations

import json
import shutil
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from aoai_monitor.alerting import simulate as sim
from aoai_monitor.alerting.service import Engine, parse_section
from aoai_monitor.alerting.templates import TEMPLATES
from aoai_monitor.store import Store

H, M = 3_600_000, 60_000
END = int(datetime(2025, 3, 12, 18, tzinfo=timezone.utc).timestamp() * 1000)  # a Wednesday
DAY = END - 18 * H  # 2025-03-12 00:00
INCIDENTS = (
    sim.Incident("latency", "gpt-4o", DAY + 8 * H, DAY + 9 * H + 30 * M, 6.0),
    sim.Incident("throttle", "gpt-4o-ptu", DAY + 10 * H, DAY + 11 * H, 1.6),
    sim.Incident("outage", "embed", DAY + 12 * H, DAY + 13 * H + 30 * M),
    sim.Incident("errors", "gpt-4o-mini", DAY + 14 * H, DAY + 15 * H, 0.25),
    sim.Incident("content_filter", "gpt-4o", DAY + 15 * H + 30 * M, DAY + 17 * H, 0.3),
    sim.Incident("tokens", "gpt-4o-mini", DAY + 16 * H, DAY + 18 * H, 30.0),
)
# rule → (incident kind, group that must fire)
EXPECTED = {
    "latency-p95-spike": ("latency", "aoai.deployment=gpt-4o"),
    "ttfr-spike": ("latency", "azure.dimensions.model_deployment_name=gpt-4o"),
    "ptu-utilization": ("throttle", "azure.dimensions.model_deployment_name=gpt-4o-ptu"),
    "quota-429-rate": ("throttle", "aoai.deployment=gpt-4o-ptu"),
    "no-logs": ("outage", "azure.resource.name=aoai-west"),
    "server-error-rate": ("errors", "aoai.deployment=gpt-4o-mini"),
    "content-filter-surge": ("content_filter", "aoai.deployment=gpt-4o"),
    "token-budget-daily": ("tokens", "aoai.deployment=gpt-4o-mini"),
}


class Clock:
    """Deterministic clock (epoch seconds) the engine reads."""

    def __init__(self, ms: int):
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


class Receiver:
    """A real HTTP webhook receiver on 127.0.0.1; `fail` first requests answer 500."""

    def __init__(self, fail: int = 0):
        self.bodies: list[dict] = []
        self.fail = fail
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.fail > 0:
                    outer.fail -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                outer.bodies.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/SECRET-TOKEN-123"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def scenario_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("alerts") / "scenario.duckdb"
    logs, metrics = sim.generate(END - 3 * 86_400_000, END, INCIDENTS, seed=11, scale=0.5)
    with Store(path) as store:
        store.pricer = None
        sim.load_into(store, logs, metrics)
    return path


@pytest.fixture
def store(scenario_store, tmp_path):
    path = tmp_path / "s.duckdb"
    shutil.copy(scenario_store, path)
    s = Store(path)
    s.pricer = None
    yield s
    s.close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def _config(url: str, **extra) -> dict:
    rules = []
    for t in TEMPLATES:
        if t["id"] == "cost-budget":
            continue  # needs prices: tests/test_alert_notify.py covers budget rules
        rule = {**t, "every": "5m"}
        if t["id"] == "token-budget-daily":  # placeholders: set to about 2× a normal day, as docs/alerts.md says
            rule.update(warning=7_000_000.0, critical=12_000_000.0)
        rules.append(rule)
    return {"rules": rules, "targets": {"ops": {"type": "webhook", "url": url}}, "retry_backoff": 0.01, **extra}


async def _walk(engine: Engine, clock: Clock, start: int, end: int, step: int = 5 * M) -> None:
    for t in range(start, end + 1, step):
        clock.ms = t
        await engine.tick()


async def test_templates_fire_on_incidents_and_stay_quiet_otherwise(store, receiver):
    clock = Clock(DAY + 6 * H)
    engine = Engine(store, parse_section(_config(receiver.url)), clock=clock)
    await _walk(engine, clock, DAY + 6 * H, END)
    rows = store.cursor().execute(
        'SELECT "alert.rule.id", "alert.group", "alert.state", epoch_ms("@timestamp"), "alert.notify" FROM alerts '
        'ORDER BY 4').fetchall()
    fired = [(r, g, t) for r, g, s, t, _ in rows if s == "firing"]
    by_kind = {i.kind: i for i in INCIDENTS}
    for rule_id, (kind, group) in EXPECTED.items():
        inc = by_kind[kind]
        hits = [t for r, g, t in fired if r == rule_id and g == group]
        assert hits, f"{rule_id} did not fire on the {kind} incident"
        assert inc.start_ms <= hits[0] <= inc.end_ms + 15 * M, (rule_id, hits[0] - inc.start_ms)
    # quiet on normal traffic: every firing belongs to an incident of its rule
    for rule_id, group, t in fired:
        kind, expected_group = EXPECTED[rule_id]
        inc = by_kind[kind]
        assert group == expected_group, (rule_id, group)
        allowed_end = inc.end_ms + (24 * H if rule_id == "token-budget-daily" else 70 * M)
        assert inc.start_ms <= t <= allowed_end, (rule_id, group, t)
    # rules with pending = 2 pass through pending first
    states = [(r, s) for r, g, s, t, _ in rows if r == "quota-429-rate"]
    assert states[:2] == [("quota-429-rate", "pending"), ("quota-429-rate", "firing")]
    # one notification per announced change: firing (escalation) … recovered, never the same news twice
    for rule_id, (kind, group) in EXPECTED.items():
        news = [(b["state"], b["severity"]) for b in receiver.bodies if b["rule"]["id"] == rule_id and b["group"] == group]
        assert news[0][0] == "firing"
        assert all(a != b for a, b in zip(news, news[1:])), (rule_id, news)
        if rule_id != "token-budget-daily":  # the 24 h token window is still over budget at the end
            assert news[-1] == ("recovered", None), (rule_id, news)
    assert all(n in ("sent", "none", "catch-up") for *_, n in rows)
    assert {r for r, *_ in fired} == set(EXPECTED)


async def test_catch_up_after_downtime_announces_only_the_net_change(store, receiver):
    cfg = _config(receiver.url)
    cfg["rules"] = [r for r in cfg["rules"] if r["id"] in ("quota-429-rate", "server-error-rate")]
    clock = Clock(DAY + 9 * H)
    engine = Engine(store, parse_section(cfg), clock=clock)
    await _walk(engine, clock, DAY + 9 * H, DAY + 9 * H + 30 * M)
    assert receiver.bodies == []
    # down from 09:30 to 12:00: the 429 burst (10:00–11:00) fired and recovered while nobody watched
    clock.ms = DAY + 12 * H
    await engine.tick()
    history = store.cursor().execute(
        """SELECT "alert.state", "alert.notify" FROM alerts WHERE "alert.rule.id" = 'quota-429-rate' ORDER BY "@timestamp" """).fetchall()
    assert ("firing", "catch-up") in history and ("recovered", "catch-up") in history
    assert receiver.bodies == []  # fired and recovered during the downtime: recorded, not announced
    # down again, from 12:00 to 14:30, into the 5xx incident: one firing notification, marked as caught up
    clock.ms = DAY + 14 * H + 30 * M
    await engine.tick()
    assert [(b["rule"]["id"], b["state"]) for b in receiver.bodies] == [("server-error-rate", "firing")]
    assert "catching up" in receiver.bodies[0]["summary"]
    await engine.tick()  # same instant again: nothing new
    assert len(receiver.bodies) == 1


async def test_silence_mutes_notifications_but_keeps_history(store, receiver):
    cfg = _config(receiver.url)
    cfg["rules"] = [r for r in cfg["rules"] if r["id"] == "quota-429-rate"]
    clock = Clock(DAY + 9 * H + 30 * M)
    engine = Engine(store, parse_section(cfg), clock=clock)
    store.commit(state={"alerts.silence.quota-429-rate|aoai.deployment=gpt-4o-ptu": {"until": DAY + 12 * H}})
    await _walk(engine, clock, DAY + 9 * H + 30 * M, DAY + 11 * H)
    assert receiver.bodies == []
    notes = store.cursor().execute("""SELECT "alert.notify" FROM alerts WHERE "alert.state" = 'firing'""").fetchall()
    assert notes == [("silenced",)]


async def test_failed_deliveries_are_retried_with_backoff_and_never_leak_the_url(store, caplog):
    receiver = Receiver(fail=6)  # more failures than one tick's retries: the outbox keeps it
    try:
        cfg = _config(receiver.url, retries=3)
        cfg["rules"] = [r for r in cfg["rules"] if r["id"] == "quota-429-rate"]
        clock = Clock(DAY + 10 * H)
        engine = Engine(store, parse_section(cfg), clock=clock)
        await _walk(engine, clock, DAY + 10 * H, DAY + 10 * H + 30 * M)
        assert len(receiver.bodies) == 1 and receiver.bodies[0]["state"] == "firing"
        assert receiver.fail == 0
        assert store.state_items("alerts.outbox.") == {}
        assert "SECRET-TOKEN-123" not in caplog.text and "HTTP 500" in caplog.text
        assert store.cursor().execute(
            """SELECT "alert.notify" FROM alerts WHERE "alert.state" = 'firing'""").fetchall() == [("sent",)]
    finally:
        receiver.close()
