"""The `aoai-monitor` command. Each subcommand has help text; every error says what to do next."""

from __future__ import annotations

import csv
import signal
import sys
import threading
from pathlib import Path

import click
import orjson

from . import __version__, schema
from .store import DEFAULT_PATH, Store, StoreError, parse_duration

# A bulk ingest's DuckDB budget and threads. The checkpoint that ends a transaction pins compression buffers for
# each of the logs table's ~156 columns per thread: with 2 threads, 160 MB failed at the end of a 1 M-record
# ingest; with 1 it passes down to 128 MB. The worker processes use the other cores, so the second thread bought
# no speed (bench/bench_ingest.py).
INGEST_MEMORY_LIMIT = "160MB"
INGEST_DUCKDB_THREADS = 1
# Bulk transactions are one row group each (store.duckdb_store.ROW_GROUP_ROWS): checkpoint after every one, so
# the memory budget holds one uncompressed row group, not the service's several.
INGEST_CHECKPOINT_THRESHOLD = "16MB"
STORE_OPTION = click.option(
    "--store", "store_path", default=DEFAULT_PATH, show_default=True, envvar="AOAI_MONITOR_STORE",
    help="DuckDB store file (env AOAI_MONITOR_STORE).")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="aoai-monitor")
def main() -> None:
    """Watch Azure OpenAI in production: collect diagnostic logs and metrics, store, query, show, alert."""


def _first_line(exc: BaseException) -> str:
    """An engine error's message without its multi-line advice (we give our own)."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def fail(message: str, code: int = 2) -> None:
    click.echo(click.style("error: ", fg="red", bold=True) + message, err=True)
    sys.exit(code)


@main.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
def parse(files: tuple[str, ...]) -> None:
    """Normalize Azure records to ECS documents (NDJSON on stdout, rejects on stderr).

    FILES are Event Hub envelopes, JSON arrays, NDJSON or PT1H.json archives, optionally gzip; none or
    '-' reads stdin. Documents come out in input order, nested like Elastic's.
    """
    from .pipeline import STDIN, iter_items, source_of

    out = sys.stdout.buffer
    err = sys.stderr.buffer
    for name in files or ("-",):
        path = STDIN if name == "-" else Path(name)
        if path is not STDIN and not path.exists():
            fail(f"{name}: no such file")
        source, items = source_of(path), iter_items(path)
        try:
            _print_documents(items, source, out, err)
        except (OSError, ValueError) as exc:  # unreadable, or a JSON document too large to read whole
            fail(f"cannot read {name}: {exc}")
    out.flush()


def _print_documents(items, source: str, out, err) -> None:
    """parse's output for one input: a document per line on `out`, a reject per line on `err`."""
    from .normalize import RecordError, normalize_record
    from .normalize.decode import Reject

    for item, line_no in items:
        where = f"{source}:{line_no}" if line_no else source
        if isinstance(item, Reject):
            reason, raw = item.reason, item.raw
        else:
            try:
                _, doc = normalize_record(item.record, item.raw, source, item.repairs)
                out.write(orjson.dumps(_display(doc), default=str) + b"\n")
                continue
            except Exception as exc:  # same rule as ingest: report, keep going
                reason, raw = (str(exc) if isinstance(exc, RecordError) else f"normalizer error: {exc}"), item.raw
        err.write(orjson.dumps({"source": where, "reason": reason, "raw": raw}) + b"\n")


def _display(doc: dict) -> dict:
    """A stored-form document as Elastic would show it: nested, ISO timestamp, _id beside it."""
    from datetime import datetime, timezone

    from .normalize import nest

    flat = dict(doc)
    ts = flat.get("@timestamp")
    if isinstance(ts, int):
        flat["@timestamp"] = datetime.fromtimestamp(ts / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return {"_id": flat.pop("id", None), **nest(flat)}


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@STORE_OPTION
@click.option("--retention", default=None, metavar="DURATION",
              help="After ingesting, delete documents older than this (e.g. 30d, 12h).")
@click.option("--quiet", is_flag=True, help="No progress bar; print the summary only.")
@click.option("--memory-limit", default=INGEST_MEMORY_LIMIT, show_default=True, metavar="SIZE",
              help="DuckDB's memory budget for the ingest (e.g. 512MB, 2GB). Raise it if the store reports it ran "
                   "out of memory; below 128MB a checkpoint of the wide logs table can fail.")
@click.option("--workers", type=click.IntRange(min=0), default=None, metavar="N",
              help="Processes that parse and normalize the input (blocks of large files, several small files at a "
                   "time) while this one stores it (and helps) [default: CPUs − 1; 0: this process alone].")
def ingest(paths: tuple[str, ...], store_path: str, retention: str | None, quiet: bool, memory_limit: str,
           workers: int | None) -> None:
    """Normalize files or directories of Azure logs into the store (idempotent: re-ingesting adds nothing).

    PATHS are files (NDJSON, PT1H.json archives, Event Hub envelopes, JSON arrays; UTF-8 or UTF-16, optionally
    gzip), directories (walked for *.json, *.jsonl, *.ndjson, *.log, *.txt, *.gz), or '-' for standard input,
    e.g. `zcat PT1H.json.gz | aoai-monitor ingest -`.
    """
    import duckdb
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    from .pipeline import INPUT_SUFFIXES, expand_inputs, ingest_files, return_large_buffers_to_the_os, total_bytes

    if retention:
        try:
            parse_duration(retention)
        except ValueError as exc:
            fail(str(exc))
    try:
        files = expand_inputs(list(paths))
    except FileNotFoundError as exc:
        fail(f"{exc}")
    if not files:
        fail(f"no input files found (looked for {', '.join('*' + suffix for suffix in INPUT_SUFFIXES)})")
    if "-" in paths and sys.stdin.isatty():
        fail("'-' reads standard input, which is this terminal: pipe the records in, e.g. "
             "`zcat PT1H.json.gz | aoai-monitor ingest -`")
    try:
        # A bounded DuckDB cache keeps a long ingest's memory flat (it writes through to the file).
        store = Store(store_path, memory_limit=memory_limit, threads=INGEST_DUCKDB_THREADS,
                      checkpoint_threshold=INGEST_CHECKPOINT_THRESHOLD)
    except StoreError as exc:
        fail(str(exc))
    except duckdb.Error as exc:
        fail(f"cannot use --memory-limit {memory_limit!r}: {_first_line(exc)} (use e.g. 512MB or 2GB)")
    return_large_buffers_to_the_os()
    progress = Progress(TextColumn("[bold]ingest"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TextColumn("{task.fields[records]:,} records"), TimeRemainingColumn(),
                        disable=quiet or not sys.stderr.isatty(), transient=True)
    with store, progress:
        task = progress.add_task("ingest", total=total_bytes(files), records=0)
        committed = [0]

        def on_batch(summary) -> None:
            committed[0] = summary.records
            progress.update(task, records=summary.records)

        stopping = threading.Event()

        def interrupted(committed_records: str) -> None:
            fail(f"interrupted after {committed_records} records were committed; run the same command again to go "
                 "on (what is stored already is skipped as duplicates)", code=130)

        def on_interrupt(signum, frame) -> None:
            if stopping.is_set():  # a second Ctrl-C: stop now (the transaction in progress rolls back)
                raise KeyboardInterrupt
            stopping.set()
            click.echo("stopping after the transaction in progress (Ctrl-C again to stop at once)…", err=True)

        previous = signal.signal(signal.SIGINT, on_interrupt)
        try:
            summary = ingest_files(store, files, on_bytes=lambda n: progress.advance(task, n), on_batch=on_batch,
                                   workers=workers, stop=stopping.is_set)
        except (KeyboardInterrupt, RuntimeError) as exc:
            # A second Ctrl-C: KeyboardInterrupt, or DuckDB's RuntimeError("Query interrupted") when it came
            # during a statement (the transaction rolls back).
            if isinstance(exc, RuntimeError) and "interrupted" not in str(exc):
                raise
            interrupted(f"at least {committed[0]:,}")
        except duckdb.Error as exc:
            # Every commit before the failure stands, and re-running skips those records as duplicates.
            # Anything but a plain out-of-memory error (a full disk, an unwritable file, a checkpoint that
            # failed at COMMIT) gets both likely causes.
            hint = (f"raise --memory-limit (now {memory_limit}), e.g. --memory-limit 1GB"
                    if isinstance(exc, duckdb.OutOfMemoryException)
                    else f"check the disk has space and the store file is writable, or raise --memory-limit (now {memory_limit})")
            fail(f"the store stopped the ingest after {committed[0]:,} records were committed: {_first_line(exc)}\n"
                 f"  {hint}, then run the same command again: committed records are skipped as duplicates.")
        finally:
            signal.signal(signal.SIGINT, previous)
        if summary.stopped:
            interrupted(f"{summary.records:,}")
        removed = store.prune(retention) if retention else None
    rate = summary.records / summary.seconds if summary.seconds else 0
    click.echo(f"{summary.files} file(s), {summary.records:,} records read: "
               f"{summary.result.stored.get('logs', 0):,} logs and {summary.result.stored.get('metrics', 0):,} metrics stored, "
               f"{summary.duplicates:,} duplicates skipped, {summary.result.dead_lettered:,} dead-lettered "
               f"({rate:,.0f} records/s) → {store_path}")
    if summary.result.dead_lettered:
        click.echo(f"  see why: aoai-monitor query --store {store_path} "
                   "\"SELECT source, reason FROM dead_letters ORDER BY received_at DESC LIMIT 20\"")
    if removed:
        click.echo(f"retention {retention}: removed {removed}")


@main.command()
@click.argument("sql")
@STORE_OPTION
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True,
              help="table for people, json (one object per line) or csv for programs.")
@click.option("--limit", type=int, default=None, help="Print at most this many rows.")
def query(sql: str, store_path: str, fmt: str, limit: int | None) -> None:
    """Run one read-only SQL SELECT. Fields are quoted dotted columns: SELECT "aoai.deployment", count(*) FROM logs GROUP BY 1."""
    from .query.sql import QueryError, open_for_queries, run_query

    try:
        store = open_for_queries(store_path)
    except StoreError as exc:
        from .service_api import RemoteError, ServiceUnavailable, remote_query

        try:  # `aoai-monitor run` holds the store: ask it (see service_api)
            columns, rows = remote_query(store_path, sql, limit=limit)
        except ServiceUnavailable:
            fail(str(exc))
        except RemoteError as rexc:
            fail(f"{rexc}\n  hint: quote dotted field names, e.g. \"azure.open_ai.category\"")
        _print_rows(columns, rows, fmt)
        return
    with store:
        try:
            columns, rows = run_query(store, sql, limit=limit)
        except QueryError as exc:
            fail(f"{exc}\n  hint: quote dotted field names, e.g. \"azure.open_ai.category\"; "
                 "`aoai-monitor fields` lists them")
    _print_rows(columns, rows, fmt)


def _print_rows(columns: list[str], rows: list[tuple], fmt: str) -> None:
    if fmt == "json":
        for row in rows:
            sys.stdout.buffer.write(orjson.dumps(dict(zip(columns, row)), default=str) + b"\n")
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*columns, show_lines=False)
        for row in rows:
            table.add_row(*["" if v is None else str(v) for v in row])
        Console(soft_wrap=False).print(table)
        click.echo(f"{len(rows)} row(s)")


@main.command()
@click.option("--table", "table_name", type=click.Choice(sorted(schema.TABLES)), default=None,
              help="Only this table's fields.")
@click.option("--format", "fmt", type=click.Choice(["markdown", "json"]), default="markdown", show_default=True)
def fields(table_name: str | None, fmt: str) -> None:
    """The field reference, generated from the schema module."""
    from .docs import fields_markdown

    if fmt == "json":
        tables = [table_name] if table_name else sorted(schema.TABLES)
        for t in tables:
            for f in schema.TABLES[t]:
                sys.stdout.buffer.write(orjson.dumps({"table": t, "name": f.name, "type": f.type,
                                                      "origin": f.origin, "description": f.description}) + b"\n")
        return
    click.echo(fields_markdown(table_name), nl=False)


@main.command()
@STORE_OPTION
@click.option("--retention", required=True, metavar="DURATION", help="Delete documents older than this, e.g. 30d.")
def prune(store_path: str, retention: str) -> None:
    """Delete documents older than the retention period."""
    try:
        parse_duration(retention)
        with Store(store_path) as store:
            removed = store.prune(retention)
    except (ValueError, StoreError) as exc:
        fail(str(exc))
    click.echo(f"removed {removed}")


@main.command()
@STORE_OPTION
def summary(store_path: str) -> None:
    """What the store holds: documents per category, deployments, tokens, errors and dead letters."""
    from .query.sql import open_for_queries, run_query

    try:
        store = open_for_queries(store_path)
    except StoreError as exc:
        fail(str(exc))
    with store:
        for title, sql in SUMMARY_QUERIES:
            columns, rows = run_query(store, sql)
            click.echo(click.style(title, bold=True))
            _print_rows(columns, rows, "table")


SUMMARY_QUERIES = [
    ("Documents by category", 'SELECT coalesce("azure.open_ai.category", "azure.platformlogs.category") AS category, '
     'count(*) AS documents, min("@timestamp") AS first, max("@timestamp") AS last FROM logs GROUP BY 1 ORDER BY 2 DESC'),
    ("Requests by deployment", 'SELECT "aoai.deployment" AS deployment, count(*) AS requests, '
     'count(*) FILTER (WHERE "aoai.status_code" >= 400) AS errors, '
     'count(*) FILTER (WHERE "aoai.status_code" = 429) AS throttled, '
     'round(quantile_cont("aoai.duration_ms", 0.95)) AS p95_ms, sum("aoai.tokens.total") AS tokens '
     'FROM logs WHERE "aoai.deployment" IS NOT NULL GROUP BY 1 ORDER BY 2 DESC'),
    ("Metrics", 'SELECT "azure.metric_name" AS metric, count(*) AS points FROM metrics GROUP BY 1 ORDER BY 2 DESC LIMIT 20'),
    ("Dead letters", 'SELECT reason, count(*) AS records FROM dead_letters GROUP BY 1 ORDER BY 2 DESC LIMIT 10'),
]


from .service import config_group, run_command  # noqa: E402
from .status import status_command  # noqa: E402

main.add_command(run_command)
main.add_command(config_group)
main.add_command(status_command)
from .sources.azure_monitor import metrics_cli  # noqa: E402

main.add_command(metrics_cli)
from .demo import demo_data  # noqa: E402

main.add_command(demo_data)
from .web.server import demo_command, serve_command  # noqa: E402

main.add_command(serve_command)
main.add_command(demo_command)
from .sources.otlp import otlp_command  # noqa: E402

main.add_command(otlp_command)
from .pricing.cli import cost, reprice  # noqa: E402

main.add_command(reprice)
main.add_command(cost)
from .alerting.cli import alerts  # noqa: E402

main.add_command(alerts)
from .outputs.cli import elastic  # noqa: E402

main.add_command(elastic)


if __name__ == "__main__":
    main()
