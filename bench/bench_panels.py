"""Warm latency of every dashboard panel on a generated store (goal: whole Overview ≤ 300 ms on 2 cores).

    python bench/bench_panels.py                         # 200k logs + 20k metrics, quick
    python bench/bench_panels.py --logs 10000000 --metrics 1000000 --store /tmp/bench.duckdb

Rows are synthesised by DuckDB SQL straight into the store's tables (time-ordered over 7 days, like
ingestion), so a 10 M store builds in about a minute. Each panel runs through the same code path as the
API (`app.run_panel`); "dashboard" is one API call answering all panels of a dashboard concurrently.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aoai_monitor.store import Store  # noqa: E402
from aoai_monitor.web import panels  # noqa: E402
from aoai_monitor.web.app import run_dashboard, run_panel, visible_panels  # noqa: E402

WEEK_MS = 7 * 86400 * 1000
DEPLOYMENTS = ["gpt-4o", "gpt-4o-mini", "gpt-35-turbo", "o3-mini", "text-embedding-3-large", "gpt-4.1", "ptu-gpt-4o", "dall-e-3"]


def build_store(path: str, n_logs: int, n_metrics: int, end_ms: int) -> None:
    start = end_ms - WEEK_MS
    deps = "[" + ", ".join(f"'{d}'" for d in DEPLOYMENTS) + "]"
    ingested = int(time.time() * 1000) - 3_600_000  # an hour ago: older than the rollup's lag
    with Store(path) as store:
        con = store.con
        con.execute(f"""
        INSERT INTO logs BY NAME
        SELECT uuid() AS id,
          epoch_ms(CAST({start} + i * {WEEK_MS} // {n_logs} AS BIGINT)) AS "@timestamp",
          CASE WHEN r1 < 0.80 THEN 'RequestResponse' WHEN r1 < 0.95 THEN 'GatewayLogs' ELSE 'Audit' END AS "azure.open_ai.category",
          'logs' AS "data_stream.type", 'azure_openai.logs' AS "data_stream.dataset",
          'sub-' || (d % 2) AS "azure.subscription_id", 'rg-' || (d % 3) AS "azure.resource.group",
          'aoai-' || (d % 4) AS "azure.resource.name", {deps}[1 + d] AS "aoai.deployment", {deps}[1 + d] AS "aoai.model",
          CASE WHEN d = 4 THEN 'Embeddings_Create' ELSE 'ChatCompletions_Create' END AS "aoai.operation",
          epoch_ms({ingested}) AS "event.ingested",
          CASE WHEN r3 < 0.03 THEN 429 WHEN r3 < 0.04 THEN 400 WHEN r3 < 0.045 THEN 500 ELSE 200 END AS "aoai.status_code",
          round(50 + r2 * 3000, 1) AS "aoai.duration_ms",
          CASE WHEN r1 >= 0.80 AND r1 < 0.95 THEN CAST(r3 * 2000 AS BIGINT) END AS "aoai.tokens.total",
          (r1 >= 0.80 AND r1 < 0.95 AND r2 < 0.03) AS "aoai.content_filter.filtered",
          CASE WHEN r1 >= 0.80 AND r1 < 0.95 AND r2 < 0.03 THEN ['hate:medium', 'violence:low'] END AS "aoai.content_filter.input",
          '{{"category":"RequestResponse"}}' AS "event.original"
        FROM (SELECT range AS i, (range * 7919) % 8 AS d, random() AS r1, random() AS r2, random() AS r3 FROM range({n_logs}))""")
        metrics = ["requests.total", "token_transaction.total", "processed_prompt_tokens.total", "generated_tokens.total",
                   "time_to_response.avg", "active_tokens.total", "provisioned_managed_utilization_v2.avg",
                   "context_tokens_cache_match_rate.avg"]
        cases = ", ".join(f"CASE WHEN i % {len(metrics)} = {k} THEN round(r * 1000) END AS \"azure.open_ai.{m}\""
                          for k, m in enumerate(metrics))
        con.execute(f"""
        INSERT INTO metrics BY NAME
        SELECT uuid() AS id, epoch_ms(CAST({start} + i * {WEEK_MS} // {n_metrics} AS BIGINT)) AS "@timestamp",
          'sub-' || (d % 2) AS "azure.subscription_id", 'RG-' || (d % 3) AS "azure.resource.group",
          'AOAI-' || (d % 4) AS "azure.resource.name", {deps}[1 + d] AS "azure.dimensions.model_deployment_name",
          {deps}[1 + d] AS "azure.dimensions.model_name", 'PT1M' AS "azure.timegrain", epoch_ms({ingested}) AS "event.ingested", {cases}
        FROM (SELECT range AS i, (range * 31) % 8 AS d, random() AS r FROM range({n_metrics}))""")
        con.execute("CHECKPOINT")


def timed(fn, repeat: int) -> float:
    fn()  # warm
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t) * 1000)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", type=int, default=200_000)
    ap.add_argument("--metrics", type=int, default=20_000)
    ap.add_argument("--store", default="/tmp/aoai-bench-panels.duckdb")
    ap.add_argument("--reuse", action="store_true", help="use an existing store of that path")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="DuckDB threads (the goal is stated for 2 cores)")
    args = ap.parse_args()
    end_ms = 1_767_225_600_000  # 2026-01-01, fixed so runs compare
    if not args.reuse:
        for p in (args.store, args.store + ".wal"):
            Path(p).unlink(missing_ok=True)
        t = time.perf_counter()
        build_store(args.store, args.logs, args.metrics, end_ms)
        print(f"built {args.logs:,} logs + {args.metrics:,} metrics in {time.perf_counter() - t:.1f} s")
    store = Store(args.store, read_only=True, threads=args.threads)
    print(f"store: {store.count('logs'):,} logs, {store.count('metrics'):,} metrics; threads={args.threads}; median of {args.repeat} warm runs")
    for range_name, start in (("7d", end_ms - WEEK_MS), ("24h", end_ms - 86400_000)):
        q = {"start": start, "end": end_ms}
        for dash in panels.DASHBOARDS.values():
            print(f"\n[{dash.title}] range {range_name}")
            total = 0.0
            for p in visible_panels(store, dash):
                ms = timed(lambda: run_panel(store, dash.id, p.id, q), args.repeat)
                total += ms
                print(f"  {p.id:24s} {ms:8.1f} ms")
            whole = timed(lambda: run_dashboard(store, dash.id, q), args.repeat)
            print(f"  {'sum of panels':24s} {total:8.1f} ms")
            print(f"  {'dashboard (one call)':24s} {whole:8.1f} ms")
            if dash.id == "overview":
                print(f"  goal ≤ 300 ms: {'met' if whole <= 300 else 'NOT met'}")


if __name__ == "__main__":
    main()
