"""The Azure Monitor metrics input against the HTTPS stand-in (real azure-identity, MetricsClient, ARM clients)."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from aoai_monitor import schema
from aoai_monitor.sources.azure_monitor import (AzureMonitorCollector, AzureMonitorError, MonitorSettings,
                                                plan_groups)
from aoai_monitor.store import Store
from tests.standins.azure_monitor import (DEFAULT_SUBSCRIPTION_ID, SyntheticModel,
                                          default_resources)
from tests.standins.azure_monitor_fixtures import azure_monitor_server, azure_monitor_server_factory  # noqa: F401

DIM_BY_FIELD = {f: d for d, f in schema.DIMENSION_FIELDS.items()}
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: a fixed clock makes windows and ids reproducible


def config_for(server, **overrides) -> dict:
    cfg = {"client_id": server.client_id, "client_secret": server.client_secret, "tenant_id": server.tenant_id,
           "subscription_id": DEFAULT_SUBSCRIPTION_ID, "authority_host": server.authority,
           "resource_manager_endpoint": server.arm_endpoint, "metrics_endpoint": server.metrics_endpoint_template,
           "ca_bundle": server.ca_bundle_path}
    cfg.update(overrides)
    return cfg


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def dt(self) -> datetime:
        return datetime.fromtimestamp(self.t, timezone.utc)


def fixed_model(clock: Clock, resources=None, **kw) -> SyntheticModel:
    return SyntheticModel(resources, clock=clock.dt, **kw)


async def _no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


async def collect(server, store, clock, cycles=1, status=None, sleep=_no_sleep, **overrides):
    settings = MonitorSettings.from_config(config_for(server, **overrides))
    snaps = []
    async with AzureMonitorCollector(settings, store, status, clock=clock, sleep=sleep) as collector:
        for _ in range(cycles):
            snaps.append(await collector.run_cycle())
            clock.t += settings.period
    return snaps, collector


def rows(store, sql, params=()):
    return store.cursor().execute(sql, list(params)).fetchall()


def total_of(store, rid: str, field: str, start: float, end: float) -> float:
    return rows(store, f'SELECT coalesce(sum("{field}"), 0) FROM metrics WHERE "azure.resource.id" = ? AND '
                       '"@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT)',
                [rid.lower(), int(start * 1000), int(end * 1000)])[0][0]


def test_groups_obey_the_batch_rules():
    groups = plan_groups(schema.METRICS)
    covered = Counter()
    for g in groups:
        assert 1 <= len(g.metrics) <= 20
        for name in g.metrics:
            m = schema.METRICS_BY_AZURE_NAME[name.lower()]
            assert set(g.aggregations) <= set(m.aggregations), (name, g.aggregations)  # getBatch aggregation rule
            assert set(g.dimensions) == set(m.dimensions), name  # the filter names only dimensions it has
            covered.update((name, a) for a in g.aggregations)
    assert covered == Counter((m.azure_name, a) for m in schema.METRICS for a in m.aggregations)
    assert len(groups) == 13


def test_one_cycle_matches_the_service(azure_monitor_server_factory, tmp_path):
    clock = Clock(T0)
    server = azure_monitor_server_factory(fixed_model(clock))
    store = Store(tmp_path / "m.duckdb")
    status: dict = {}
    (snap,), collector = asyncio.run(collect(server, store, clock, status=status))
    names = sorted(a.name for a in collector.accounts)
    # OpenAI and AIServices kinds only: not the TextAnalytics account, the storage account or subscription B.
    assert names == ["aoai-dev-eastus", "aoai-prod-eastus", "aoai-prod-swedencentral", "foundry-hub-eastus"]
    groups = len(plan_groups(schema.METRICS))
    assert server.count("batch") == snap["calls_by_kind"]["batch"] == 2 * groups  # eastus (3) + swedencentral (1)
    assert server.count("instance_discovery") == 0 and server.count("arm_metrics") == 0
    assert {r.audience for r in server.requests("batch")} == {server.metrics_audience}
    assert all(int(r.param("top")) >= 1000 for r in server.requests("batch"))
    assert status["last_cycle"]["api_calls"] == snap["api_calls"] == 2 * groups + 1
    assert store.get_state("azure_monitor/azure_monitor/last_cycle")["stored"] == snap["stored"] > 0

    end = math.floor((T0 - 300) / 60) * 60
    start = end - 300
    for acc in collector.accounts:  # nothing lost, nothing doubled: split series sum to the unsplit total
        for metric in ("AzureOpenAIRequests", "TokenTransaction", "RAIHarmfulRequests"):
            field = f"azure.open_ai.{schema.METRICS_BY_AZURE_NAME[metric.lower()].field}.total"
            expected = server.model.expected_bucket_value(acc.id, metric, {}, datetime.fromtimestamp(start, timezone.utc),
                                                          datetime.fromtimestamp(end, timezone.utc), "Total")
            assert total_of(store, acc.id, field, start, end) == expected, (acc.name, metric)
        assert store.get_state(f"azure_monitor/azure_monitor/window/{acc.key}") == {"end": int(end * 1000)}

    cur = store.cursor()
    docs = cur.execute('SELECT * FROM metrics WHERE "azure.metric_name" = \'AzureOpenAITimeToResponse\' LIMIT 25')
    cols = [d[0] for d in docs.description]
    for row in docs.fetchall():
        doc = dict(zip(cols, row))
        dims = {DIM_BY_FIELD[k]: v for k, v in doc.items() if k in DIM_BY_FIELD and v is not None}
        assert set(dims) == set(schema.METRICS_BY_AZURE_NAME["azureopenaitimetoresponse"].dimensions)
        minute = doc["@timestamp"].replace(tzinfo=timezone.utc)
        for agg, suffix in (("Average", "avg"), ("Maximum", "max"), ("Minimum", "min")):
            want = server.model.expected_value(doc["azure.resource.id"], "AzureOpenAITimeToResponse", dims, minute, agg)
            assert doc[f"azure.open_ai.time_to_response.{suffix}"] == pytest.approx(want)
        assert doc["data_stream.type"] == "metrics" and doc["data_stream.dataset"] == "azure.open_ai"
        assert doc["data_stream.namespace"] == "default" and doc["metricset.period"] == 300000
        assert doc["azure.timegrain"] == "PT1M" and doc["cloud.region"] in ("eastus", "swedencentral")
        assert doc["azure.dimensions.fingerprint"] and doc["azure.namespace"] == "Microsoft.CognitiveServices/accounts"
    tags = rows(store, 'SELECT DISTINCT "azure.resource.tags" FROM metrics WHERE "azure.resource.name" = \'aoai-prod-eastus\'')
    assert tags == [('{"env":"prod","team":"search"}',)]
    # ActiveTokens is asked in the Total and the Average/Min/Max calls; one document carries both.
    active = rows(store, 'SELECT count(*), count("azure.open_ai.active_tokens.total"), count("azure.open_ai.active_tokens.avg") '
                         'FROM metrics WHERE "azure.metric_name" = \'ActiveTokens\'')[0]
    assert active[0] > 0 and active[0] == active[1] == active[2]


def test_late_points_faults_and_restart_leave_no_gap_and_no_duplicate(azure_monitor_server_factory, tmp_path):
    clock = Clock(T0)
    # Azure shows a minute only 7 minutes after it started; the input waits 5: the newest minutes come back
    # as Total 0 first and must still be stored with their real value later.
    server = azure_monitor_server_factory(fixed_model(clock, default_resources()[:3], ingestion_delay=360))
    server.inject("batch", 429, times=None, probability=0.15, seed=3, retry_after=0.01)
    server.inject("batch", 500, times=None, probability=0.1, seed=4)
    path = tmp_path / "m.duckdb"
    first_end = math.floor((T0 - 300) / 60) * 60
    with Store(path) as store:
        snaps, _ = asyncio.run(collect(server, store, clock, cycles=4, max_retries=3))
        assert sum(s["throttled"] for s in snaps) > 0 and sum(s["server_errors"] for s in snaps) > 0
        assert sum(s["skipped_zero_points"] for s in snaps) > 0
        # An outage longer than the retries: that cycle commits nothing, the next one catches up.
        server.clear_faults()
        outage = server.inject("batch", 503, times=None, retry_after=0.01)
        (down,), _ = asyncio.run(collect(server, store, clock, max_retries=1))
        assert down["failed_chunks"] > 0 and down["stored"] == 0
        server.clear_faults()
        assert outage.hits > 0
    with Store(path) as store:  # restart: a new collector, state from the store
        server.reset_log()
        snaps, collector = asyncio.run(collect(server, store, clock, cycles=3))
        assert all(not s["errors"] for s in snaps)
        # Each cycle asks from its last committed end minus the lookback, no earlier.
        starts = {r.param("starttime") for r in server.requests("batch")}
        assert min(starts).startswith(datetime.fromtimestamp(first_end + 3 * 300 - 600, timezone.utc).strftime("%Y-%m-%dT%H:%M"))
        last_end = math.floor((clock.t - 300 - 300) / 60) * 60
        check_end = last_end - 120  # minutes Azure has not shown yet at the last cycle
        for acc in collector.accounts:
            assert store.get_state(f"azure_monitor/azure_monitor/window/{acc.key}")["end"] == last_end * 1000
            for metric in ("AzureOpenAIRequests", "ProcessedPromptTokens", "RAITotalRequests"):
                field = f"azure.open_ai.{schema.METRICS_BY_AZURE_NAME[metric.lower()].field}.total"
                want = server.model.expected_bucket_value(
                    acc.id, metric, {}, datetime.fromtimestamp(first_end - 300, timezone.utc),
                    datetime.fromtimestamp(check_end, timezone.utc), "Total")
                assert total_of(store, acc.id, field, first_end - 300, check_end) == want, (acc.name, metric)
        n, distinct = rows(store, 'SELECT count(*), count(DISTINCT ("azure.resource.id", "azure.metric_name", '
                                  'coalesce("azure.dimensions.fingerprint", \'\'), "@timestamp")) FROM metrics')[0]
        assert n == distinct > 0


def test_retry_after_is_honoured(azure_monitor_server, tmp_path):
    server = azure_monitor_server
    server.inject("batch", 429, times=1, retry_after=1)
    server.inject("batch", 503, times=1, retry_after=1)
    with Store(tmp_path / "m.duckdb") as store:
        t0 = time.monotonic()
        (snap,), _ = asyncio.run(collect(server, store, Clock(time.time()), sleep=asyncio.sleep,
                                         resource_groups=["rg-aoai-prod"]))
        assert time.monotonic() - t0 >= 1.0  # the two calls wait their second concurrently
    assert snap["throttled"] == 2 and snap["retries"] == 2 and snap["retry_wait_s"] == 2.0 and not snap["errors"]
    assert server.count("batch") == snap["planned_batch_calls"] + 2 == snap["calls_by_kind"]["batch"]


def _ids_and_values(store):
    return set(rows(store, 'SELECT id, "azure.open_ai.requests.total", "azure.open_ai.time_to_response.avg" FROM metrics'))


def test_per_resource_fallback_and_top_raise_give_the_same_documents(azure_monitor_server_factory, tmp_path):
    clock = Clock(T0)
    server = azure_monitor_server_factory(fixed_model(clock))
    with Store(tmp_path / "a.duckdb") as batch_store, Store(tmp_path / "b.duckdb") as arm_store, \
            Store(tmp_path / "c.duckdb") as top_store:
        asyncio.run(collect(server, batch_store, Clock(T0)))
        server.reset_log()
        (snap,), _ = asyncio.run(collect(server, arm_store, Clock(T0), metrics_endpoint=server.url + "/nobatch/{region}"))
        assert server.count("arm_metrics") == 4 * len(plan_groups(schema.METRICS))
        assert any("per-resource" in e for e in snap["errors"])
        (small,), _ = asyncio.run(collect(server, top_store, Clock(T0), top=2))
        assert small["top_raised"] > 0
        expected = _ids_and_values(batch_store)
        assert len(expected) > 500
        assert _ids_and_values(arm_store) == expected
        assert _ids_and_values(top_store) == expected


def test_selection_by_group_and_id_and_auth_errors(azure_monitor_server, tmp_path):
    server = azure_monitor_server
    rid = next(r.id for r in server.model.resources if r.name == "foundry-hub-eastus")
    with Store(tmp_path / "m.duckdb") as store:
        (_,), c = asyncio.run(collect(server, store, Clock(time.time()), resource_groups=["rg-aoai-prod"]))
        assert sorted(a.name for a in c.accounts) == ["aoai-prod-eastus", "aoai-prod-swedencentral"]
        missing = rid.replace("foundry-hub-eastus", "gone")
        (_,), c = asyncio.run(collect(server, store, Clock(time.time()), resource_ids=[rid, missing]))
        assert [a.name for a in c.accounts] == ["foundry-hub-eastus"] and "gone" in c.warnings[0]
        with pytest.raises(AzureMonitorError) as err:
            asyncio.run(collect(server, store, Clock(time.time()), client_secret="not-the-secret"))
        assert "client secret is wrong" in str(err.value) and "not-the-secret" not in str(err.value)


def test_default_azure_credential_when_no_secret(azure_monitor_server, tmp_path, monkeypatch):
    server = azure_monitor_server
    monkeypatch.setenv("AZURE_TENANT_ID", server.tenant_id)
    monkeypatch.setenv("AZURE_CLIENT_ID", server.client_id)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", server.client_secret)
    cfg = {"client_id": None, "client_secret": None, "tenant_id": None, "resource_groups": ["rg-aoai-dev"]}
    with Store(tmp_path / "m.duckdb") as store:
        (snap,), c = asyncio.run(collect(server, store, Clock(time.time()), **cfg))
    assert [a.name for a in c.accounts] == ["aoai-dev-eastus"] and not snap["errors"]
    assert server.count("token") >= 2


def test_cli_collect_once(azure_monitor_server, tmp_path):
    server = azure_monitor_server
    store = tmp_path / "cli.duckdb"
    cfg = tmp_path / "aoai.toml"
    cfg.write_text(f"""
[store]
path = "{store}"

[[inputs.azure_monitor]]
name = "aoai-metrics"
client_id = "{server.client_id}"
client_secret_env = "TEST_AOAI_SECRET"
tenant_id = "{server.tenant_id}"
subscription_id = "{DEFAULT_SUBSCRIPTION_ID}"
resource_groups = ["rg-aoai-prod"]
authority_host = "{server.authority}"
resource_manager_endpoint = "{server.arm_endpoint}"
metrics_endpoint = "{server.metrics_endpoint_template}"
ca_bundle = "{server.ca_bundle_path}"
""")
    env = dict(os.environ, TEST_AOAI_SECRET=server.client_secret)
    exe = Path(sys.executable).with_name("aoai-monitor")
    out = subprocess.run([str(exe), "metrics", "collect", "--config", str(cfg), "--once", "--since", "30m"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "aoai-metrics: 2 account(s) in 2 region(s)" in out.stderr and server.client_secret not in out.stderr + out.stdout
    with Store(store, read_only=True) as s:
        assert s.count("metrics") > 0
        ends = s.state_items("azure_monitor/aoai-metrics/window/")
        assert len(ends) == 2
