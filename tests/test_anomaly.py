"""Anomaly detection: a seasonal baseline trained from the store finds injected incidents, stays quiet on
normal traffic, stores its findings idempotently and is alertable through a rule on the anomalies table."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from aoai_monitor.alerting import simulate as sim
from aoai_monitor.alerting.anomaly import (
    AnomalyConfig,
    parse_config,
    score,
    step,
    train,
)
from aoai_monitor.alerting.rules import RuleError
from aoai_monitor.alerting.service import Engine, parse_section
from aoai_monitor.store import Store
from tests.test_alert_templates import Clock

H = 3_600_000
DAY_START = int(datetime(2025, 3, 12, tzinfo=timezone.utc).timestamp() * 1000)  # Wednesday, scored
LATENCY = sim.Incident("latency", "gpt-4o", DAY_START + 10 * H, DAY_START + 12 * H, 4.0)
OUTAGE = sim.Incident("outage", "embed", DAY_START + 14 * H, DAY_START + 16 * H)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    logs, _ = sim.generate(DAY_START - 8 * 86_400_000, DAY_START + 20 * H, (LATENCY, OUTAGE), seed=31, scale=0.5)
    s = Store(tmp_path_factory.mktemp("anomaly") / "a.duckdb")
    s.pricer = None
    sim.load_into(s, logs, [])
    yield s
    s.close()


def test_finds_injected_incidents_and_stays_quiet_elsewhere(store):
    cfg = AnomalyConfig(training_ms=8 * 86_400_000)
    model = train(store.cursor(), cfg, DAY_START)
    found = score(store.cursor(), cfg, model, DAY_START, DAY_START + 20 * H)
    latency = [d for d in found if d["aoai.deployment"] == "gpt-4o" and d["anomaly.metric"] == "latency_ms"]
    outage = [d for d in found if d["aoai.deployment"] == "embed" and d["anomaly.metric"] == "request_rate"]
    assert len(latency) >= 6 and all(LATENCY.start_ms <= d["@timestamp"] < LATENCY.end_ms for d in latency)
    assert all(d["anomaly.value"] > d["anomaly.upper"] for d in latency)
    assert len(outage) >= 4 and all(d["anomaly.direction"] == "below" and d["anomaly.value"] == 0 for d in outage)
    others = [d for d in found if d not in latency and d not in outage]
    assert len(others) <= 2, others  # 80 buckets × 4 measures × 4 deployments of normal traffic
    high = score(store.cursor(), AnomalyConfig(sensitivity="high"), model, DAY_START, DAY_START + 20 * H)
    low = score(store.cursor(), AnomalyConfig(sensitivity="low"), model, DAY_START, DAY_START + 20 * H)
    assert len(low) <= len(found) <= len(high)


def test_step_stores_anomalies_once_and_an_anomaly_rule_fires(store, tmp_path):
    cfg = parse_section({"anomaly": {"training": "8d", "retrain": "1d"},
                         "rules": [{"id": "latency-anomaly", "source": "anomalies", "filter": "anomaly.metric:latency_ms",
                                    "group_by": ["aoai.deployment"], "window": "30m", "warning": 1, "critical": 2}]})
    clock = Clock(DAY_START)
    engine = Engine(store, cfg, clock=clock)
    step(store, cfg.anomaly, DAY_START)  # trains at the start of the day
    for t in range(DAY_START + 15 * 60_000, DAY_START + 13 * H, 15 * 60_000):
        clock.ms = t
        step(store, cfg.anomaly, t)
        engine.evaluate_due(t)
    stored = store.count("anomalies")
    step(store, cfg.anomaly, DAY_START + 13 * H)  # nothing new to score
    assert store.count("anomalies") == stored >= 6
    states = store.cursor().execute(
        """SELECT "alert.state", epoch_ms("@timestamp") FROM alerts WHERE "alert.rule.id" = 'latency-anomaly' """
        """AND "alert.group" = 'aoai.deployment=gpt-4o' ORDER BY 2""").fetchall()
    first = {}
    for s, t in states:
        first.setdefault(s, t)
    # fired (warning, then critical) during the spike, recovered after it
    assert LATENCY.start_ms < first["firing"] <= LATENCY.end_ms < first["recovered"]


def test_config_errors():
    with pytest.raises(RuleError, match="low, medium or high"):
        parse_config({"sensitivity": "extreme"})
    with pytest.raises(RuleError, match="divide a day"):
        parse_config({"bucket": "7m"})
