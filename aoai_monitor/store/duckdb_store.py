"""The embedded store: one DuckDB file with tables logs, metrics, dead_letters (+ state, _meta).

Columns are the schema module's dotted field names (quoted in SQL), plus `id` (UUID, deterministic) and
`extra` (JSON: fields not in the schema). Every commit is one transaction that also carries the inputs'
state (checkpoints, blob offsets), so "stored" and "remembered as stored" can never disagree. A replay
inserts nothing twice: rows whose id already exists in the same time range are skipped.
"""

from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .. import schema
from ..normalize.common import key_id
from ..normalize.fastpath import FAST_CONSTANTS

DEFAULT_PATH = "aoai-monitor.duckdb"
# Committed rows wait in the write-ahead log until it holds this much; the checkpoint then compresses them into
# the file. Each checkpoint rewrites a table's last, partial row group whole, so at DuckDB's default (16 MB,
# ~15k log rows) a stream of small commits (Event Hub group commits, spans) rewrote every row ~4 times before
# its row group filled, and each of those checkpoints held up the commits behind it. 256 MB is about two of
# DuckDB's default row groups of logs (six of the store's, ROW_GROUP_ROWS): an Event Hub stream at 5k records/s
# became visible at p95 0.74-0.77 s instead of 1.60-2.16 s, with 7 % less CPU (bench/bench_eventhub.py's
# freshness run, 60 s). Uncheckpointed rows are held in memory (the service's budget is most of RAM), and a
# restart replays them from the log.
CHECKPOINT_THRESHOLD = "256MB"


def _data_tables() -> list[str]:
    """Tables with a deterministic `id`, an `extra` JSON column, duplicate skipping and retention: every
    table schema.TABLES declares with an "@timestamp" field (spans, alerts … need nothing here)."""
    return [t for t, fields in schema.TABLES.items() if any(f.name == "@timestamp" for f in fields)]


_ARROW_TYPES = {
    "VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(), "BOOLEAN": pa.bool_(),
    "TIMESTAMP": pa.timestamp("ms"), "JSON": pa.string(), "VARCHAR[]": pa.list_(pa.string()),
}


class StoreError(RuntimeError):
    """A store problem, with the message a user needs to fix it."""


@dataclass
class CommitResult:
    stored: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0

    def add(self, other: "CommitResult") -> None:
        for k, v in other.stored.items():
            self.stored[k] = self.stored.get(k, 0) + v
        for k, v in other.duplicates.items():
            self.duplicates[k] = self.duplicates.get(k, 0) + v
        self.dead_lettered += other.dead_lettered


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def parse_duration(text: str) -> float:
    """'30d', '12h', '90m', '3600s' → seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30d, 12h, 90m)")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]


# Rows per row group of the store's tables: the unit DuckDB compresses and a checkpoint rewrites. An insert holds
# the row group it is filling uncompressed in memory until it is whole, at ~2.4 KB per log row (most of the wide
# table's columns take space even when NULL). DuckDB's own 122,880 held ~300 MB, which an ingest's memory budget
# (cli.INGEST_MEMORY_LIMIT, 160 MB) held only by spilling it to temporary files and reading it back: the writer
# spent 27 µs of CPU per record instead of 21 µs. A third of it fits (21 µs). The size is an option of each
# connection, not of the file, so every writer opens the store with it (_open_file); existing row groups of
# another size stay as they are.
ROW_GROUP_ROWS = 40_960
_CATALOG = "store"


def _open_file(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A connection to the store (a file, or ":memory:"), attached under _CATALOG (its default for statements)
    with our row group size."""
    # Spilled data goes next to a store file, where DuckDB puts it for a file it opens itself (not in the working
    # directory, its choice for an in-memory database).
    con = duckdb.connect(":memory:", config={} if path == ":memory:" else {"temp_directory": f"{path}.tmp"})
    try:
        options = "READ_ONLY" if read_only else f"ROW_GROUP_SIZE {ROW_GROUP_ROWS}"
        con.execute(f"ATTACH '{path.replace(chr(39), chr(39) * 2)}' AS {_CATALOG} ({options})")
        con.execute(f"USE {_CATALOG}")
    except BaseException:
        con.close()
        raise
    return con


def _in_use(path: str, error: str) -> str:
    """What to do about a store another process holds (DuckDB's lock error names its PID): while one process
    writes a file no other may open it, and while any reads it none may write it."""
    found = re.search(r"\(PID (\d+)\)", error)
    pid = int(found.group(1)) if found else None
    command = _aoai_monitor_command(pid) if pid else None
    if command:
        holder = f"`{command}` (PID {pid})"
    else:
        holder = f"another process (PID {pid})" if pid else "another process"
    words = (command or "").split()
    subcommand = words[1] if len(words) > 1 else None
    if subcommand in ("serve", "demo"):  # the UI (demo serves it once its store is made)
        advice = ("stop that UI (Ctrl-C in its terminal) while this runs, and start it again after; or let "
                  "`aoai-monitor run` collect and serve the UI in one process")
    elif subcommand in ("run", "otlp"):
        advice = ("it holds the store for as long as it runs: stop it (Ctrl-C) for this, and start it again after; "
                  "`aoai-monitor query` and `status` ask it themselves")
    else:
        advice = ("wait for it to finish, or stop it; `aoai-monitor query` and `status` ask a running "
                  "`aoai-monitor run` or `aoai-monitor otlp` themselves")
    return f"{path} is in use by {holder} (DuckDB lets one process write a store, and none read it meanwhile): {advice}."


def _open_hint(path: str, error: str) -> str:
    """What to do when a store file cannot be opened, for the usual reasons."""
    where = Path(path)
    if where.is_dir():
        return f"; --store takes a file, e.g. --store {where / DEFAULT_PATH}"
    if not where.parent.exists():
        return f"; create the folder {where.parent} first, or pass another --store"
    if "not a valid DuckDB database" in error:
        return "; it is not a store: pass the file aoai-monitor created, or a new path"
    return ""


def _aoai_monitor_command(pid: int) -> str | None:
    """`aoai-monitor SUBCOMMAND …` if that process runs one (Linux), else None."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    for i, arg in enumerate(args):
        if arg.endswith("aoai-monitor") or arg == "aoai_monitor.cli":
            command = " ".join(["aoai-monitor", *filter(None, args[i + 1:])])
            return command if len(command) <= 160 else command[:159] + "…"
    return None


class Store:
    """One writer per file (DuckDB's rule); any number of cursors in the same process may read meanwhile."""

    def __init__(self, path: str | Path = DEFAULT_PATH, read_only: bool = False, memory_limit: str | None = None,
                 threads: int | None = None, checkpoint_threshold: str = CHECKPOINT_THRESHOLD):
        self.path = str(path)
        self.read_only = read_only
        self._lock = threading.Lock()
        if read_only and self.path != ":memory:" and not Path(self.path).exists():
            raise StoreError(f"no store at {self.path}: run `aoai-monitor ingest` or `aoai-monitor demo` first, or pass --store PATH")
        self._settings = (memory_limit, threads, checkpoint_threshold)
        self.con = self._connect()
        if read_only:
            self._check_version()
        else:
            self._migrate()
        self._lock_down()
        # Cost at ingest: a callable (table name, Arrow table) → (table, state), set by aoai_monitor.pricing.
        self.pricer = None
        # Outputs (aoai_monitor.outputs, e.g. Elasticsearch): ship(tx) runs inside every transaction before
        # COMMIT; an exception rolls the writes and the input's checkpoint back together (docs/elasticsearch.md).
        self.outputs: list = []
        self._last_ingested_ms = 0
        if not read_only:
            from ..pricing import attach
            attach(self)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        memory_limit, threads, checkpoint_threshold = self._settings
        try:
            con = _open_file(self.path, self.read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreError(_in_use(self.path, str(exc))) from exc
            raise StoreError(f"cannot open store {self.path}: {exc}{_open_hint(self.path, str(exc))}") from exc
        except duckdb.ResourceInUseException as exc:
            raise StoreError(f"{self.path} is already open in this process: close that Store (or use its cursor()) "
                             "before opening the file again") from exc
        con.execute("SET TimeZone='UTC'")
        con.execute("SET preserve_insertion_order=false")
        # DuckDB draws its own progress bar on stdout for statements over 2 s; our commands own their output.
        con.execute("SET enable_progress_bar=false")
        if memory_limit:
            con.execute(f"SET memory_limit='{memory_limit}'")
        if threads:
            con.execute(f"SET threads={int(threads)}")
        if not self.read_only:
            con.execute("SET checkpoint_threshold = ?", [checkpoint_threshold])
        return con

    def _lock_down(self) -> None:
        # User SQL (CLI query, the UI's SQL page) runs on cursors of this connection: no file or network
        # access from SQL, and no way to switch it back on. The store itself never needs it.
        self.con.execute("SET enable_external_access=false")
        self.con.execute("SET lock_configuration=true")

    def reopen(self) -> None:
        """Close the file and open it again, for a long bulk ingest that holds no cursors.

        DuckDB keeps the metadata of every row group written since the file was opened in memory (~6.5 MB per
        million log rows), so a 10 M-record ingest peaked 50 MB above a 1 M-record one; a reopened store loads
        metadata only as queries need it.
        """
        if self.path == ":memory:":
            return  # nothing to drop, and everything to lose
        with self._lock:
            self.con.close()
            self.con = self._connect()
            self._lock_down()

    # --- schema and migrations ---------------------------------------------------------------------

    def _check_version(self) -> None:
        try:
            row = self.con.execute("SELECT value FROM _meta WHERE key='schema_version'").fetchone()
        except duckdb.CatalogException as exc:
            raise StoreError(f"{self.path} is not an aoai-monitor store") from exc
        if row and int(row[0]) > schema.SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer aoai-monitor (schema {row[0]} > {schema.SCHEMA_VERSION}); upgrade aoai-monitor")

    def _migrate(self) -> None:
        con = self.con
        con.execute("CREATE TABLE IF NOT EXISTS _meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        row = con.execute("SELECT value FROM _meta WHERE key='schema_version'").fetchone()
        current = int(row[0]) if row else 0
        if current > schema.SCHEMA_VERSION:
            raise StoreError(f"{self.path} was written by a newer aoai-monitor (schema {current} > {schema.SCHEMA_VERSION}); upgrade aoai-monitor")
        con.execute("BEGIN")
        try:
            for table in schema.TABLES:
                self._ensure_table(table)
            con.execute("CREATE TABLE IF NOT EXISTS state (key VARCHAR PRIMARY KEY, value JSON, updated_at TIMESTAMP)")
            for version in range(current + 1, schema.SCHEMA_VERSION + 1):
                for statement in MIGRATIONS.get(version, ()):
                    con.execute(statement)
            con.execute("INSERT OR REPLACE INTO _meta VALUES ('schema_version', ?)", [str(schema.SCHEMA_VERSION)])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise

    def _ensure_table(self, table: str) -> None:
        """Create the table, or add the columns a newer schema declares (additive migrations need no code)."""
        fields = schema.TABLES[table]
        existing = {r[0] for r in self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}
        if not existing:
            cols = ["id UUID NOT NULL"] + [f"{_q(f.name)} {_column_type(f, table)}" for f in fields]
            if table in _data_tables():
                cols.append("extra JSON")
            self.con.execute(f"CREATE TABLE {table} ({', '.join(cols)})")
            return
        for f in fields:
            if f.name not in existing:
                self.con.execute(f"ALTER TABLE {table} ADD COLUMN {_q(f.name)} {_column_type(f, table)}")

    # --- writing -----------------------------------------------------------------------------------

    def commit(self, logs: list[dict] = (), metrics: list[dict] = (),
               rejects: Iterable[tuple[str, str, str]] = (), state: dict[str, object] | None = None,
               **tables: list[dict]) -> CommitResult:
        """Store documents (per table), dead letters (source, reason, raw) and input state in one transaction.

        Returns what was new. Other data tables are passed by name, e.g. commit(spans=[...]).
        """
        with self.transaction() as tx:
            for name, docs in {"logs": logs, "metrics": metrics, **tables}.items():
                tx.insert(name, docs)
            tx.insert_rejects(rejects)
            if state:
                tx.set_state(state)
        return tx.result

    @contextmanager
    def transaction(self, bulk: bool = False) -> Iterator["Transaction"]:
        """One atomic write: everything done through the yielded Transaction commits together or not at all.

        `bulk` marks a long transaction of many inserts (a file ingest), whose inputs must not all stay in
        memory until COMMIT (see _run_over).
        """
        if self.read_only:
            raise StoreError("store opened read-only")
        with self._lock:
            self.con.execute("BEGIN")
            tx = Transaction(self, bulk)
            try:
                yield tx
                for output in self.outputs:
                    output.ship(tx)
                self.con.execute("COMMIT")
            except BaseException:
                try:
                    self.con.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # e.g. the engine invalidated the database: the original error is the one to report
                raise

    # --- state, reading, retention ----------------------------------------------------------------------

    def get_state(self, key: str, default=None):
        row = self.cursor().execute("SELECT value FROM state WHERE key = ?", [key]).fetchone()
        return orjson.loads(row[0]) if row else default

    def state_items(self, prefix: str) -> dict[str, object]:
        rows = self.cursor().execute("SELECT key, value FROM state WHERE starts_with(key, ?)", [prefix]).fetchall()
        return {k: orjson.loads(v) for k, v in rows}

    def set_state(self, values: dict[str, object]) -> None:
        self.commit(state=values)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for this thread; reads see committed data while another thread writes."""
        cursor = self.con.cursor()
        cursor.execute(f"USE {_CATALOG}")  # a cursor starts in the connection's default (in-memory) catalog
        return cursor

    def count(self, table: str) -> int:
        return self.cursor().execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def prune(self, retention: str) -> dict[str, int]:
        """Delete documents older than the retention (e.g. '30d'); returns rows removed per table."""
        cutoff_ms = int((time.time() - parse_duration(retention)) * 1000)
        removed = {}
        with self._lock:
            for table, column in [(t, "@timestamp") for t in _data_tables()] + [("dead_letters", "received_at")]:
                removed[table] = self.con.execute(
                    f"DELETE FROM {table} WHERE {_q(column)} < epoch_ms(?::BIGINT)", [cutoff_ms]).fetchone()[0]
            self.con.execute("CHECKPOINT")
        return removed

    def close(self) -> None:
        self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Ids derive from content that includes the timestamp, so an existing copy of a row lies in the batch's
# time range: the lookup reads only those row groups (zone maps on @timestamp), not the whole table.
# NOT IN rather than an ANTI JOIN: the optimizer would build the join's hash table from the batch, every
# column of it, once the table is large enough to look bigger than the batch (~10 MB more at the peak of a
# bulk ingest); NOT IN always builds from the existing ids. `id` is never NULL, so NOT IN means "absent".
_NOT_EXISTING = ("WHERE b.id NOT IN (SELECT id FROM {table} "
                 "WHERE \"@timestamp\" BETWEEN epoch_ms($lo::BIGINT) AND epoch_ms($hi::BIGINT))")


def _bind(sql: str, **values: int) -> str:
    """Put integer parameters ($name) into SQL as literals: relation queries take none, and DuckDB plans a
    prepared statement with parameters again at every run."""
    for name, value in values.items():
        sql = sql.replace(f"${name}", str(int(value)))
    return sql


class Transaction:
    """Writes inside Store.transaction(); `result` tells what was new."""

    def __init__(self, store: Store, bulk: bool = False):
        self.store = store
        self.bulk = bulk
        self.con = store.con
        self.result = CommitResult()
        # Unique per transaction (they run one at a time under the store lock), so an output finds exactly the
        # rows this transaction wrote by "event.ingested".
        self.ingested_ms = store._last_ingested_ms = max(int(time.time() * 1000), store._last_ingested_ms + 1)

    def _count(self, name: str, offered: int, inserted: int) -> None:
        self.result.stored[name] = self.result.stored.get(name, 0) + inserted
        self.result.duplicates[name] = self.result.duplicates.get(name, 0) + offered - inserted

    def _insert_new(self, name: str, table: pa.Table, lo: int, hi: int,
                    constants: dict[str, str] | None = None) -> int:
        """Insert the rows of `table` (time range lo..hi, epoch ms) whose id is new; `constants` are columns the
        statement adds (SQL expressions by column name). Returns the rows inserted."""
        added = "".join(f", {expr} AS {_q(column)}" for column, expr in (constants or {}).items())
        return self._run_over(_without_empty_columns(_first_of_each_id(table)), "_batch", _bind(
            f"INSERT INTO {name} BY NAME SELECT b.* FROM (SELECT CAST(id AS UUID) AS id, * EXCLUDE (id){added} "
            f"FROM _batch) b {_NOT_EXISTING.format(table=name)}", lo=lo, hi=hi))

    def _run_over(self, table: pa.Table, name: str, sql: str) -> int:
        """Run a write statement that reads `table` under `name`; returns its row count.

        A registered view costs ~10-30 ms less per statement than a relation, which binds the statement twice
        (a 100-record Event Hub group commit: 70 instead of 85 ms). But it is a catalog entry, and DuckDB keeps
        a dropped entry, with the Arrow data it references, until the transaction ends: a bulk transaction
        would hold every chunk it inserted (~10 MB each) in memory, so those read through a relation.
        """
        try:
            if self.bulk:
                return self.con.from_arrow(table).query(name, sql).fetchall()[0][0]
            self.con.register(name, table)
            try:
                return self.con.execute(sql).fetchall()[0][0]
            finally:
                try:
                    self.con.unregister(name)
                except duckdb.Error:
                    pass  # an aborted transaction: the statement's own error is the one to raise
        except duckdb.TransactionException as exc:
            # When a relation's statement fails (out of memory, disk full), its clean-up reports "transaction
            # is aborted" and hides the failure in __context__: raise the failure, which says what to fix.
            if isinstance(exc.__context__, duckdb.Error):
                raise exc.__context__ from None
            raise

    def insert(self, name: str, docs: list[dict]) -> None:
        if not docs:
            return
        self.insert_arrow(name, *docs_to_arrow(name, docs, self.ingested_ms))

    def insert_rejects(self, rejects: Iterable[tuple[str, str, str]]) -> None:
        self.insert_rejects_arrow(rejects_to_arrow(rejects, self.ingested_ms))

    def insert_rejects_arrow(self, dead: pa.Table | None) -> None:
        if dead is None:
            return
        self.result.dead_lettered += self._run_over(
            _first_of_each_id(dead), "_dead_batch",
            "INSERT INTO dead_letters BY NAME SELECT CAST(id AS UUID) AS id, * EXCLUDE (id) "
            "FROM _dead_batch WHERE CAST(id AS UUID) NOT IN (SELECT id FROM dead_letters)")

    def insert_arrow(self, name: str, table: pa.Table, lo: int, hi: int) -> None:
        """Insert a table made by docs_to_arrow (e.g. in a worker process)."""
        if table.num_rows:
            if "event.ingested" in table.column_names:  # prepared earlier (maybe in a worker): stamp it with ours
                table = table.set_column(table.column_names.index("event.ingested"), "event.ingested",
                                         pa.repeat(pa.scalar(self.ingested_ms, pa.timestamp("ms")), table.num_rows))
            if self.store.pricer is not None:  # cost at ingest: fills the aoai.cost.* columns (docs/cost.md)
                table, state = self.store.pricer(name, table)
                self.set_state(state)
            self._count(name, table.num_rows, self._insert_new(name, table, lo, hi))

    def insert_fast_many(self, tables: list[pa.Table | None]) -> None:
        """Insert the logs columns of normalize.fastpath.extract (with aoai.source), of one or more chunks, in one
        statement: no pricing, as they carry no tokens; the fields that are the same for every such row are the
        statement's constants."""
        tables = [t for t in tables if t is not None and t.num_rows]
        if not tables:
            return
        columns = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        constants = {"event.ingested": f"epoch_ms({int(self.ingested_ms)}::BIGINT)",
                     **{name: f"'{value}'" for name, value in FAST_CONSTANTS.items()}}
        self._count("logs", columns.num_rows, self._insert_new("logs", columns, *time_bounds(columns), constants))

    def set_state(self, values: dict[str, object]) -> None:
        # One statement for all keys: each INSERT OR REPLACE into the keyed table costs ~3 ms, and a group
        # commit carries a position per partition (4 partitions: 11 → 4 ms).
        if not values:
            return
        params = [x for key, value in values.items() for x in (key, orjson.dumps(value).decode())]
        self.con.execute("INSERT OR REPLACE INTO state VALUES " + ", ".join(["(?, ?, now())"] * len(values)), params)


def time_bounds(table: pa.Table) -> tuple[int, int]:
    """The epoch-ms range of a table's @timestamp column (in C++)."""
    bounds = pc.min_max(table.column("@timestamp").cast(pa.int64()))
    return bounds["min"].as_py(), bounds["max"].as_py()


def _first_of_each_id(table: pa.Table) -> pa.Table:
    """The table without rows whose id an earlier row has (a redelivered message, a file ingested twice in
    one run), in C++; as is when the ids are distinct, the usual case."""
    if pc.count_distinct(table.column("id")).as_py() == table.num_rows:
        return table
    numbered = pa.table({"id": table.column("id"), "row": pa.array(range(table.num_rows), pa.int64())})
    firsts = numbered.group_by("id", use_threads=False).aggregate([("row", "min")]).column("row_min")
    return table.take(pc.take(firsts, pc.sort_indices(firsts)))


def _without_empty_columns(table: pa.Table) -> pa.Table:
    """The table without its all-NULL columns, which the insert fills with NULL by name all the same: binding
    an Arrow table costs DuckDB ~70 µs per column per statement, and a gateway document sets ~60 of ~160."""
    keep = [i for i, (name, column) in enumerate(zip(table.column_names, table.columns))
            if column.null_count != len(column) or name == "id"]
    return table if len(keep) == table.num_columns else table.select(keep)


def docs_to_arrow(table: str, docs: list[dict], ingested_ms: int) -> tuple[pa.Table, int, int]:
    """Flat documents → a schema-typed Arrow table (+ its time range). Pure: runs in worker processes too."""
    fields = schema.TABLES[table]
    index = {f.name: i for i, f in enumerate(fields)}
    n = len(docs)
    cols: list[list] = [[None] * n for _ in fields]
    ids = [None] * n
    extras = [None] * n
    for row, doc in enumerate(docs):
        extra = None
        for key, value in doc.items():
            i = index.get(key)
            if i is not None:
                cols[i][row] = value
            elif key == "id":
                ids[row] = value
            else:
                if extra is None:
                    extra = {}
                extra[key] = value
        if extra:
            extras[row] = orjson.dumps(extra, option=orjson.OPT_NON_STR_KEYS, default=str).decode()
    ts = cols[index["@timestamp"]]
    lo, hi = min(ts), max(ts)
    if "event.ingested" in index:
        cols[index["event.ingested"]] = [ingested_ms] * n
    arrays = [pa.array(ids, pa.string())]
    names = ["id"]
    for f, values in zip(fields, cols):
        # A log document sets ~60 of ~150 fields: the others are typed null columns, built in C++.
        empty = values.count(None) == n
        arrays.append(pa.nulls(n, _ARROW_TYPES[schema.duckdb_type(f, table)]) if empty else _column(f, table, values))
        names.append(f.name)
    arrays.append(pa.array(extras, pa.string()))
    names.append("extra")
    return pa.Table.from_arrays(arrays, names=names), lo, hi


def rejects_to_arrow(rejects, ingested_ms: int) -> pa.Table | None:
    """Dead letters (source, reason, raw) → Arrow; the id makes a replayed bad record one row."""
    rows = list(rejects)
    if not rows:
        return None
    return pa.Table.from_pydict({
        "id": [key_id(src, raw) for src, _, raw in rows],
        "received_at": pa.array([ingested_ms] * len(rows), pa.timestamp("ms")),
        "source": [src for src, _, _ in rows],
        "reason": [reason for _, reason, _ in rows],
        "raw": [raw for _, _, raw in rows],
    })


# Raw record text (kilobytes of JSON per row) compresses 4x better with zstd than with DuckDB's default
# string analysis, and writes about twice as fast: the largest single cost of ingesting a record.
_RAW_TEXT_COLUMNS = {"event.original", "raw"}


def _column_type(f: schema.Field, table: str) -> str:
    typ = schema.duckdb_type(f, table)
    return f"{typ} USING COMPRESSION zstd" if f.name in _RAW_TEXT_COLUMNS else typ


def _column(f: schema.Field, table: str, values: list) -> pa.Array:
    """Schema-typed Arrow column. The fast path lets Arrow convert; a value of the wrong type (hypothesis
    finds them, so do odd Azure records) falls back to per-value coercion rather than failing the batch."""
    duck = schema.duckdb_type(f, table)
    typ = _ARROW_TYPES[duck]
    if duck == "JSON":
        values = [None if v is None else orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS, default=str).decode()
                  for v in values]
    try:
        return pa.array(values, typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        return pa.array([_coerce(v, duck) for v in values], typ)


def _coerce(value, duck: str):
    if value is None:
        return None
    try:
        if duck == "VARCHAR":
            return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
        if duck == "BIGINT":
            v = int(float(value)) if not isinstance(value, bool) else int(value)
            return v if -(2 ** 63) <= v < 2 ** 63 else None
        if duck == "DOUBLE":
            return float(value)
        if duck == "BOOLEAN":
            return value if isinstance(value, bool) else str(value).lower() == "true"
        if duck == "TIMESTAMP":
            return int(value)
        if duck == "VARCHAR[]":
            items = value if isinstance(value, list) else [value]
            return [i if isinstance(i, str) else orjson.dumps(i, default=str).decode() for i in items]
    except (TypeError, ValueError, OverflowError):
        return None
    return None


# Numbered migrations for changes the additive column sync cannot express (renames, type changes).
# Version 1 is the first schema: nothing to migrate.
MIGRATIONS: dict[int, tuple[str, ...]] = {}
