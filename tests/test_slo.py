"""SLOs: burn-rate factors scaled to the period, page/ticket tiers on fast and slow burns, quiet on normal
traffic, error budget and burn-down."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from aoai_monitor.alerting import simulate as sim
from aoai_monitor.alerting.rules import RuleError
from aoai_monitor.alerting.service import Engine, parse_section
from aoai_monitor.alerting.slo import burn_results, parse_slos, status
from aoai_monitor.store import Store
from tests.test_alert_templates import Clock

H = 3_600_000
END = int(datetime(2025, 3, 13, 15, tzinfo=timezone.utc).timestamp() * 1000)
INCIDENTS = (
    sim.Incident("slow_burn", "gpt-4o-mini", END - 3 * 86_400_000, END, 0.02),  # 4× a 99.5 % budget, for days
    sim.Incident("errors", "gpt-4o", END - H, END, 0.3),  # 60×, for an hour
    sim.Incident("latency", "embed", END - 2 * H, END, 40.0),
)
SLOS = [{"id": "avail", "type": "availability", "target": 99.5, "period": "30d"},
        {"id": "fast", "type": "latency", "target": 99.0, "threshold_ms": 2000, "period": "30d",
         "filter": "aoai.deployment:embed"}]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    logs, metrics = sim.generate(END - 4 * 86_400_000, END, INCIDENTS, seed=21, scale=0.4)
    s = Store(tmp_path_factory.mktemp("slo") / "slo.duckdb")
    s.pricer = None
    sim.load_into(s, logs, metrics)
    yield s
    s.close()


def test_factors_keep_the_budget_shares_for_each_period():
    factors = {p: [t["factor"] for t in parse_slos([{"id": "a", "target": 99.9, "period": p}])[0].tiers()]
               for p in ("30d", "28d", "7d")}
    assert factors["30d"] == [14.4, 6.0, 3.0, 1.0]
    assert factors["28d"] == [13.44, 5.6, 2.8, 0.9333]
    assert factors["7d"] == [3.36, 1.4, 0.7, 0.2333]
    with pytest.raises(RuleError, match="threshold_ms"):
        parse_slos([{"id": "l", "type": "latency", "target": 99}])


def test_fast_burn_pages_slow_burn_tickets_normal_stays_quiet(store):
    avail, latency = parse_slos(SLOS)
    results = {r.group: r for r in burn_results(store.cursor(), avail, END)}
    assert results["aoai.deployment=gpt-4o"].severity == "critical"  # 1 h and 5 m above 14.4×
    assert results["aoai.deployment=gpt-4o-mini"].severity == "warning"  # 1 d / 2 h above 3×, not 6 h above 6×
    assert results["aoai.deployment=gpt-4o-ptu"].severity is None
    assert results["aoai.deployment=embed"].severity is None
    lat = {r.group: r for r in burn_results(store.cursor(), latency, END)}
    assert lat["aoai.deployment=embed"].severity == "critical"
    # a day earlier the fast burn and the latency incident had not started
    earlier = {r.group: r.severity for r in burn_results(store.cursor(), avail, END - 26 * H)}
    assert earlier["aoai.deployment=gpt-4o"] is None


def test_budget_remaining_and_burn_down(store):
    avail = parse_slos(SLOS)[0]
    rows = {r["group"]: r for r in status(store.cursor(), avail, END)}
    normal, burning = rows["aoai.deployment=embed"], rows["aoai.deployment=gpt-4o-mini"]
    assert 60 < normal["budget_remaining_pct"] <= 100 and normal["sli"] > 99.5
    assert burning["budget_remaining_pct"] < 0 and burning["sli"] < 99.5  # 2 % errors for 3 days: spent
    series = [v for _, v in burning["burn_down"] if v is not None]
    assert series[0] >= series[-1] and all(a >= b for a, b in zip(series, series[1:]))
    assert series[-1] == burning["budget_remaining_pct"]
    assert burning["burn_rates"]["72h"] == pytest.approx(4, rel=0.25)


def test_slo_rules_run_in_the_engine(store):
    engine = Engine(store, parse_section({"slos": SLOS}), clock=Clock(END))
    engine.evaluate_due()
    firing = {k: v["severity"] for k, v in store.state_items("alerts.current.slo.").items() if v["state"] == "firing"}
    assert firing == {"alerts.current.slo.avail|aoai.deployment=gpt-4o": "critical",
                      "alerts.current.slo.avail|aoai.deployment=gpt-4o-mini": "warning",
                      "alerts.current.slo.fast|aoai.deployment=embed": "critical"}
