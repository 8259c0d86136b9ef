"""`aoai-monitor reprice` and `aoai-monitor cost` (registered at the bottom of cli.py)."""

from __future__ import annotations

import sys
import time

import click
import orjson

from ..store import DEFAULT_PATH, Store, StoreError, parse_duration

_STORE = click.option("--store", "store_path", default=DEFAULT_PATH, show_default=True, envvar="AOAI_MONITOR_STORE",
                      help="DuckDB store file (env AOAI_MONITOR_STORE).")
_CONFIG = click.option("--config", "config_path", default=None, envvar="AOAI_MONITOR_CONFIG",
                       help="Config file whose [pricing] section holds deployments, overrides and prices_file "
                            "(env AOAI_MONITOR_CONFIG).")


def _fail(message: str) -> None:
    click.echo(click.style("error: ", fg="red", bold=True) + message, err=True)
    sys.exit(2)


def _range(since: str) -> tuple[int, int]:
    try:
        seconds = parse_duration(since)
    except ValueError as exc:
        _fail(str(exc))
    now = int(time.time() * 1000)
    return now - int(seconds * 1000), now + 1


def _pricing(config_path: str | None):
    from . import load_pricing

    try:
        return load_pricing(config_path)
    except ValueError as exc:
        _fail(str(exc))


@click.command()
@click.option("--since", default="7d", show_default=True, help="Re-price documents newer than this (e.g. 7d, 12h).")
@_STORE
@_CONFIG
@click.option("--quiet", is_flag=True, help="No progress bar.")
def reprice(since: str, store_path: str, config_path: str | None, quiet: bool) -> None:
    """Recompute the cost fields of stored requests after a price or catalogue change (in place)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from .reprice import reprice as run

    lo, hi = _range(since)
    pricing = _pricing(config_path)
    try:
        store = Store(store_path)
    except StoreError as exc:
        _fail(str(exc))
    progress = Progress(TextColumn("[bold]reprice"), BarColumn(), MofNCompleteColumn(),
                        disable=quiet or not sys.stderr.isatty(), transient=True)
    with store, progress:
        task = progress.add_task("reprice", total=None)
        result = run(store, pricing, lo, hi, on_progress=lambda done, total: progress.update(task, completed=done, total=total))
    click.echo(f"{result.documents:,} request(s) since {since} re-priced with {pricing.prices.source}: "
               f"{result.priced:,} priced, {result.unpriced:,} unpriced")
    if result.unpriced:
        click.echo(f"  see why: aoai-monitor cost --store {store_path} --since {since}")


@click.command()
@click.option("--since", default="30d", show_default=True, help="Period to summarise (e.g. 30d, 24h).")
@_STORE
@_CONFIG
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def cost(since: str, store_path: str, config_path: str | None, fmt: str) -> None:
    """Cost summary: total, by deployment and model, top callers, unpriced, PTU vs pay-as-you-go, forecast."""
    from ..query.sql import open_for_queries
    from .reports import summary

    lo, hi = _range(since)
    pricing = _pricing(config_path)
    try:
        store = open_for_queries(store_path)
    except StoreError as exc:
        _fail(str(exc))
    with store:
        s = summary(store, pricing, lo, hi)
    if fmt == "json":
        sys.stdout.buffer.write(orjson.dumps(s, default=str) + b"\n")
        return
    _print(s, since)


def _print(s: dict, since: str) -> None:
    from rich.console import Console
    from rich.table import Table

    c, cur = Console(soft_wrap=False), s["currency"]
    c.print(f"[bold]Cost, last {since}:[/bold] {_fmt(s['total'])} {cur} "
            f"(tokens {_fmt(s['token_cost'])}, PTU capacity {_fmt(s['ptu_cost'])}); by token source: "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in s["by_source"].items()))
    style = "bold red" if s["unpriced_requests"] or s["unpriced_deployment_hours"] else "green"
    c.print(f"[{style}]Unpriced: {s['unpriced_requests']:,} request(s), {s['unpriced_deployment_hours']:,} "
            f"metric deployment-hour(s)[/{style}]")
    for r in s["unpriced_reasons"]:
        c.print(f"  {r.get('requests') or r.get('deployment_hours')} × {r['reason']}")

    def table(title, rows, cols):
        if not rows:
            return
        t = Table(*cols, title=title, title_justify="left")
        for r in rows:
            t.add_row(*[_fmt(r.get(k)) for k in cols])
        c.print(t)

    table("Daily by deployment", s["daily_by_deployment"], ["day", "deployment", "cost", "payg", "input_tokens",
                                                            "output_tokens", "requests", "unpriced", "sources"])
    table("By model", s["by_model"], ["model", "cost", "input_tokens", "output_tokens", "requests", "unpriced"])
    table("Top callers (APIM)", s["top_callers"], ["caller", "cost", "requests", "tokens", "unpriced"])
    table("PTU vs pay-as-you-go", s["ptu_vs_payg"], ["day", "deployment", "ptus", "hours", "ptu_cost", "payg_equivalent",
                                                      "ptu_pct_of_payg", "utilization_avg", "unpriced_reason"])
    for b in s["break_even"]:
        c.print(b["statement"])
    f = s["forecast"]
    c.print(f"[bold]{f['month']}:[/bold] spent {_fmt(f['spent'])} {cur}, forecast to month end {_fmt(f['forecast'])} {cur} "
            f"(token run-rate {_fmt(f['daily_token_run_rate'])}/day)")


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.6f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.2f}"
    return str(v)
