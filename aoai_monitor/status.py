"""`aoai-monitor status`: per input and partition — records/s, last enqueued time, lag, dead letters, checkpoint age.

Asks the running service (its live counters) when one holds the store; otherwise reads the last snapshot
the service stored (state keys `status:<input>:<partition>`), so it also works after the service ended.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone

import click
import orjson

from .sources import STATUS_PREFIX
from .store import DEFAULT_PATH, StoreError


def collect(store_path: str) -> tuple[str, dict]:
    """("live" | "stored", {"status:<input>:<part>": snapshot}); raises StoreError when neither is possible."""
    from .query.sql import open_for_queries
    from .service_api import RemoteError, ServiceUnavailable, call

    try:
        return "live", call(store_path, "/api/status")["partitions"]
    except (ServiceUnavailable, RemoteError):
        pass
    with open_for_queries(store_path) as store:
        return "stored", store.state_items(STATUS_PREFIX)


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.1f}h"


@click.command("status")
@click.option("--store", "store_path", default=DEFAULT_PATH, show_default=True, envvar="AOAI_MONITOR_STORE",
              help="DuckDB store file (env AOAI_MONITOR_STORE).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def status_command(store_path: str, fmt: str) -> None:
    """Health of every input: records/s, lag, last enqueued time, dead letters, checkpoint age per partition."""
    from .cli import fail

    try:
        mode, parts = collect(store_path)
    except StoreError as exc:
        fail(f"{exc}\n  hint: if `aoai-monitor run` is running, its local API did not answer; check its log")
    rows = []
    for key in sorted(parts):
        name, _, part = key[len(STATUS_PREFIX):].rpartition(":")
        rows.append({"input": name, "partition": part, **parts[key]})
    if fmt == "json":
        for row in rows:
            sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
        return
    if not rows:
        click.echo(f"no input status in {store_path} yet (`aoai-monitor run` stores it every few seconds)")
        return
    from rich.console import Console
    from rich.table import Table

    now = time.time()
    title = "live, from the running service" if mode == "live" else "last stored snapshot (no service running)"
    table = Table("input", "partition", "owned", "records", "rec/s", "lag (events)", "last enqueued", "checkpoint age",
                  "dead letters", "error", title=title)
    for r in rows:
        stale = "" if mode == "live" else f" (as of {_age(now - r['updated_ms'] / 1000)} ago)"
        table.add_row(r["input"], r["partition"], "yes" if r["owned"] else "no", f"{r['records']:,}",
                      f"{r['records_per_s']:,.0f}", "-" if r["lag_events"] is None else f"{r['lag_events']:,}",
                      _when(r["last_enqueued_ms"]), _age(r["checkpoint_age_s"]) + stale, f"{r['dead_letters']:,}",
                      r["error"] or "")
    Console(soft_wrap=False, width=200).print(table)
