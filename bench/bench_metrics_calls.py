"""API calls per metrics cycle (batch vs per-resource) and a simulated day of 5-minute cycles with faults.

Counts come from the HTTPS stand-in's request log, not from the collector. Run:
    python bench/bench_metrics_calls.py                # call counts for 1/10/100/500 accounts + a 24 h day
    python bench/bench_metrics_calls.py --hours 2      # shorter day
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aoai_monitor import schema  # noqa: E402
from aoai_monitor.sources.azure_monitor import AzureMonitorCollector, MonitorSettings, plan_groups  # noqa: E402
from aoai_monitor.store import Store  # noqa: E402
from tests.standins.azure_monitor import (DEFAULT_SUBSCRIPTION_ID, AzureMonitorStandin, SyntheticModel,  # noqa: E402
                                          build_fleet, default_resources)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def dt(self) -> datetime:
        return datetime.fromtimestamp(self.t, timezone.utc)


def config(server: AzureMonitorStandin, **kw) -> dict:
    return {"client_id": server.client_id, "client_secret": server.client_secret, "tenant_id": server.tenant_id,
            "subscription_id": DEFAULT_SUBSCRIPTION_ID, "authority_host": server.authority,
            "resource_manager_endpoint": server.arm_endpoint, "metrics_endpoint": server.metrics_endpoint_template,
            "ca_bundle": server.ca_bundle_path, "max_calls_per_second": 0, "max_concurrency": 8, **kw}


async def _fast_sleep(_s: float) -> None:
    await asyncio.sleep(0)


async def run_cycles(server, store, clock, cycles, on_cycle=None, **kw):
    settings = MonitorSettings.from_config(config(server, **kw))
    snaps = []
    async with AzureMonitorCollector(settings, store, {}, clock=clock, sleep=_fast_sleep) as c:
        for i in range(cycles):
            if on_cycle:
                on_cycle(i)
            snaps.append(await c.run_cycle())
            clock.t += settings.period
    return snaps, c


def call_counts(sizes: list[int]) -> None:
    metrics = len(schema.METRICS)
    groups = len(plan_groups(schema.METRICS))
    print(f"{metrics} metrics in {groups} (aggregation, dimension) groups; fleet split over eastus and swedencentral\n")
    print(f"{'accounts':>8} {'batch calls':>11} {'batch bound':>11} {'issue formula':>13} "
          f"{'per-resource':>12} {'Elastic-style':>13} {'ratio':>7} {'s/cycle':>8}")
    for n in sizes:
        clock = Clock(T0)
        server = AzureMonitorStandin(SyntheticModel(build_fleet(n), clock=clock.dt),
                                     arm_read_bucket=(10 ** 6, 10 ** 6.0)).start()
        try:
            per_region = Counter(r.location for r in server.model.resources)
            bound = sum(math.ceil(k / 50) * groups for k in per_region.values())
            formula = sum(math.ceil(k / 50) * math.ceil(metrics / 20) for k in per_region.values())
            with Store(":memory:") as store:
                t = time.monotonic()
                asyncio.run(run_cycles(server, store, clock, 1))
                seconds = time.monotonic() - t
            batch = server.count("batch")
            server.reset_log()
            with Store(":memory:") as store:
                asyncio.run(run_cycles(server, store, Clock(T0), 1, batch="never"))
            per_resource = server.count("arm_metrics")
            naive = n * math.ceil(metrics / 20)
            print(f"{n:>8} {batch:>11} {bound:>11} {formula:>13} {per_resource:>12} {naive:>13} "
                  f"{per_resource / batch:>6.1f}x {seconds:>8.2f}")
        finally:
            server.stop()
    print("\nbatch bound = Σ regions ceil(accounts/50) × groups; issue formula = Σ regions ceil(accounts/50) × "
          "ceil(metrics/20) (ignores the getBatch aggregation rule and per-metric dimensions);\nper-resource = the same "
          "groups per account via ARM (measured); Elastic-style = one call per account per 20 metrics (computed).")


def simulated_day(hours: float) -> bool:
    clock = Clock(T0)
    model = SyntheticModel(default_resources()[:3], clock=clock.dt, ingestion_delay=360)
    server = AzureMonitorStandin(model).start()
    cycles = int(hours * 12)
    outage = set(range(cycles // 2, cycles // 2 + 3))  # three cycles in a row where every batch call fails
    try:
        server.inject("batch", 429, times=None, probability=0.10, seed=11, retry_after=0.01)
        server.inject("batch", 500, times=None, probability=0.05, seed=12)
        server.inject("batch", 503, times=None, probability=0.05, seed=13, retry_after=0.01)
        rule = []

        def on_cycle(i):
            print(f"\r  cycle {i + 1}/{cycles}", end="", file=sys.stderr, flush=True)
            if i in outage and not rule:
                rule.append(server.inject("batch", 503, times=None, retry_after=0.01))
            if i not in outage and rule:
                server._faults.remove(rule.pop())

        with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "day.duckdb") as store:
            t = time.monotonic()
            first_end = math.floor((clock.t - 300) / 60) * 60
            snaps, collector = asyncio.run(run_cycles(server, store, clock, cycles, on_cycle, max_retries=3))
            print(file=sys.stderr)
            last_end = math.floor((clock.t - 600) / 60) * 60
            check_end = last_end - 120
            missing = 0
            checked = 0
            for acc in collector.accounts:
                saved = store.get_state(f"azure_monitor/azure_monitor/window/{acc.key}")
                missing += (last_end - saved["end"] / 1000) // 300 if saved else cycles
                for m in schema.METRICS:
                    if "Total" not in m.aggregations:
                        continue
                    want = model.expected_bucket_value(acc.id, m.azure_name, {}, datetime.fromtimestamp(first_end - 300, timezone.utc),
                                                       datetime.fromtimestamp(check_end, timezone.utc), "Total")
                    got = store.cursor().execute(
                        f'SELECT coalesce(sum("azure.open_ai.{m.field}.total"), 0) FROM metrics WHERE "azure.resource.id" = ? '
                        'AND "@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT)',
                        [acc.key, int((first_end - 300) * 1000), int(check_end * 1000)]).fetchone()[0]
                    checked += 1
                    missing += got != want
            rows, distinct = store.cursor().execute(
                'SELECT count(*), count(DISTINCT ("azure.resource.id", "azure.metric_name", '
                'coalesce("azure.dimensions.fingerprint", \'\'), "@timestamp")) FROM metrics').fetchone()
            seconds = time.monotonic() - t
        calls = sum(s["api_calls"] for s in snaps)
        print(f"simulated {hours:g} h = {cycles} cycles of 5 min, {len(collector.accounts)} accounts in "
              f"{len({a.location for a in collector.accounts})} regions, in {seconds:.0f} s")
        print(f"  API calls {calls} ({calls / cycles:.1f}/cycle), throttled {sum(s['throttled'] for s in snaps)}, "
              f"5xx {sum(s['server_errors'] for s in snaps)}, retries {sum(s['retries'] for s in snaps)}, "
              f"failed chunks {sum(s['failed_chunks'] for s in snaps)} (outage cycles {sorted(outage)})")
        print(f"  stored {rows} points; missing windows / wrong totals: {int(missing)} "
              f"({checked} resource×metric day totals compared with the service); duplicate points: {rows - distinct}")
        return missing == 0 and rows == distinct
    finally:
        server.stop()


def main() -> int:
    import logging

    logging.getLogger("aoai_monitor").setLevel(logging.ERROR)  # the injected faults are expected
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,10,100,500")
    ap.add_argument("--hours", type=float, default=24.0)
    args = ap.parse_args()
    call_counts([int(x) for x in args.sizes.split(",") if x])
    print()
    return 0 if simulated_day(args.hours) else 1


if __name__ == "__main__":
    sys.exit(main())
