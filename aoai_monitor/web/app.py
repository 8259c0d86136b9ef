"""The web UI's ASGI app: JSON API for dashboards, Discover, documents and SQL, plus the static front-end.

Security model: the app binds to loopback unless a token is configured (server.py enforces it). With a
token every request needs `Authorization: Bearer <token>` or the session cookie set by `/?token=…`.
Without one, requests must name a loopback Host (blocks DNS rebinding). All data values reach SQL only
as parameters; field names are checked against the table's columns before they are quoted. Responses
carry a strict Content-Security-Policy and the front-end renders data with textContent only.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import hmac
import threading
import time
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import schema
from ..query import traces as T
from ..query.kql import KqlError, compile_kql
from ..query.sql import QueryError, run_query
from ..store import Store
from . import panels as P

STATIC = Path(__file__).parent / "static"
COOKIE = "aoai_session"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
MAX_SPAN_MS = 400 * 86400 * 1000
MAX_BUCKETS = 2000
SQL_ROW_LIMIT = 1000
PAGE_LIMIT = 500
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="aoai-panels")


class BadRequest(ValueError):
    """A request parameter we refuse; the message goes back to the user."""


# --- JSON ----------------------------------------------------------------------------------------

def _default(value):
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return int(value.timestamp() * 1000)
    if isinstance(value, (dt.date, dt.time, dt.timedelta)):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    return str(value)


def _json(data, status: int = 200) -> Response:
    body = orjson.dumps(data, default=_default, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_PASSTHROUGH_DATETIME)
    return Response(body, status_code=status, media_type="application/json")


def _error(message: str, status: int = 400) -> Response:
    return _json({"error": message}, status)


# --- columns -------------------------------------------------------------------------------------

_columns_cache: dict[tuple[int, str], tuple[float, dict[str, str]]] = {}
_columns_lock = threading.Lock()


def table_columns(store: Store, table: str) -> dict[str, str]:
    """Column name → DuckDB type, read from the store (new columns such as aoai.cost.* appear within 30 s)."""
    key = (id(store), table)
    with _columns_lock:
        hit = _columns_cache.get(key)
        if hit and time.monotonic() - hit[0] < 30:
            return hit[1]
    rows = store.cursor().execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
        [table]).fetchall()
    cols = {name: typ for name, typ in rows}
    with _columns_lock:
        _columns_cache[key] = (time.monotonic(), cols)
    return cols


def data_tables() -> list[str]:
    return [t for t, fields in schema.TABLES.items() if any(f.name == "@timestamp" for f in fields)]


# --- request parameters ----------------------------------------------------------------------------

def _int(q, name: str, default: int | None = None) -> int | None:
    raw = q.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(float(raw))
    except (TypeError, ValueError):
        raise BadRequest(f"{name} must be a number (epoch milliseconds)") from None


def time_range(q) -> tuple[int, int, int]:
    """(start, end, bucket) in epoch ms from ?start=&end=&bucket=; defaults to the last 24 hours."""
    now = int(time.time() * 1000)
    end = _int(q, "end", now)
    start = _int(q, "start", end - 86400_000)
    # Whole minutes: the metrics' time grain and the rollups' resolution, so every panel agrees.
    start, end = start // 60_000 * 60_000, -(-end // 60_000) * 60_000
    if end <= start:
        raise BadRequest("end must be after start")
    if end - start > MAX_SPAN_MS:
        raise BadRequest("time range longer than 400 days")
    bucket = _int(q, "bucket") or P.nice_bucket_ms(end - start)
    bucket = max(bucket, 60_000) // 60_000 * 60_000
    if (end - start) // bucket > MAX_BUCKETS:
        raise BadRequest(f"bucket too small for the range (more than {MAX_BUCKETS} buckets)")
    return start, end, bucket


def controls(q) -> dict[str, str | None]:
    out = {}
    for param, _, _ in P.CONTROLS:
        v = q.get(param)
        if v is not None and len(v) > 512:
            raise BadRequest(f"{param} is too long")
        out[param] = v or None
    return out


# --- rollups --------------------------------------------------------------------------------------

class Rollups:
    """In-memory per-minute aggregates (panels.ROLLUPS) of one store.

    Rows ingested before the watermark (now − LAG) are aggregated into an in-memory DuckDB table, appended
    every REFRESH_S and rebuilt every REBUILD_S (so retention pruning shows up); rows ingested since are
    aggregated per request as the "tail". LAG exceeds any commit's duration, so no row is counted twice
    or missed. The store may be read-only: nothing is written to it.
    """

    LAG_MS = 5 * 60_000
    REFRESH_S = 30
    REBUILD_S = 3600
    _FAR_FUTURE_MS = 253_402_300_799_000

    def __init__(self, store: Store):
        self.store = store
        self.mem = duckdb.connect(":memory:")
        self.mem.execute("SET TimeZone='UTC'")
        self.lock = threading.Lock()
        self.watermark: dict[str, int] = {}
        self.refreshed = 0.0
        self.built = 0.0

    def refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.refreshed < self.REFRESH_S:
            return
        with self.lock:
            if not force and time.monotonic() - self.refreshed < self.REFRESH_S:
                return
            rebuild = force or time.monotonic() - self.built > self.REBUILD_S
            new_wm = int(time.time() * 1000) - self.LAG_MS
            cur = self.mem.cursor()
            for r in P.ROLLUPS.values():
                old = 0 if rebuild or r.name not in self.watermark else self.watermark[r.name]
                first = old == 0
                batch = self.store.cursor().sql(r.select(first), params=[old, new_wm]).to_arrow_table()
                cur.register("_batch", batch)
                if rebuild or r.name not in self.watermark:
                    cur.execute(f'CREATE OR REPLACE TABLE {r.name} AS SELECT * FROM _batch ORDER BY "@timestamp"')
                else:
                    cur.execute(f"INSERT INTO {r.name} SELECT * FROM _batch")
                cur.unregister("_batch")
                self.watermark[r.name] = new_wm
            if rebuild:
                self.built = time.monotonic()
            self.refreshed = time.monotonic()

    def tails(self, names: set[str]) -> dict:
        """Aggregates of the rows ingested after each rollup's watermark (few: zone maps skip the rest)."""
        self.refresh()
        return {n: self.store.cursor().sql(P.ROLLUPS[n].select(False), params=[self.watermark[n], self._FAR_FUTURE_MS]).to_arrow_table()
                for n in names}

    def cursor(self, tails: dict) -> duckdb.DuckDBPyConnection:
        cur = self.mem.cursor()
        for name, tail in tails.items():
            cur.register(f"{name}_tail", tail)
        return cur


_rollups: "weakref.WeakKeyDictionary[Store, Rollups]" = weakref.WeakKeyDictionary()
_rollups_lock = threading.Lock()


def rollups_for(store: Store) -> Rollups:
    with _rollups_lock:
        r = _rollups.get(store)
        if r is None:
            r = _rollups[store] = Rollups(store)
    return r


def _execute(store: Store, panel: P.Panel, sql: str, params: dict, tails: dict | None) -> list[tuple]:
    if panel.table in P.ROLLUPS:
        if tails is None:
            tails = rollups_for(store).tails({panel.table})
        return rollups_for(store).cursor({panel.table: tails[panel.table]}).execute(sql, params).fetchall()
    return store.cursor().execute(sql, params).fetchall()


# --- panels --------------------------------------------------------------------------------------

def visible_panels(store: Store, dash: P.Dashboard) -> list[P.Panel]:
    """Panels whose required columns exist (cost panels appear once aoai.cost.* columns do)."""
    out = []
    for p in dash.panels:
        if p.requires:
            cols = table_columns(store, P.ROLLUPS[p.table].source if p.table in P.ROLLUPS else p.table)
            if not all(c in cols for c in p.requires):
                continue
        out.append(p)
    return out


def run_panel(store: Store, dashboard: str, panel_id: str, q) -> dict:
    """One panel's data: stat {value}, donut {rows}, timeseries {t, series: {name: [values aligned with t]}}."""
    dash = P.DASHBOARDS.get(dashboard)
    panel = next((p for p in dash.panels if p.id == panel_id), None) if dash else None
    if panel is None:
        raise BadRequest(f"no panel {dashboard}/{panel_id}")
    start, end, bucket = time_range(q)
    ctl = controls(q)
    sql = P.sql_for(panel, ctl)
    rows = _execute(store, panel, sql, P.params_for(start, end, bucket, ctl, sql), None)
    return shape(panel, rows, bucket)


def shape(panel: P.Panel, rows: list[tuple], bucket: int) -> dict:
    if panel.kind == "stat":
        return {"value": rows[0][0] if rows else None}
    if panel.kind == "donut":
        return {"rows": [[label, value] for label, value in rows]}
    times = sorted({r[0] for r in rows})
    index = {t: i for i, t in enumerate(times)}
    series: dict[str, list] = {}
    for t, s, v in rows:
        series.setdefault(s, [None] * len(times))[index[t]] = v
    return {"t": times, "series": series, "bucket": bucket}


def run_dashboard(store: Store, dashboard: str, q) -> dict:
    """Every visible panel of a dashboard, run concurrently on separate cursors."""
    dash = P.DASHBOARDS.get(dashboard)
    if dash is None:
        raise BadRequest(f"no dashboard {dashboard}")
    start, end, bucket = time_range(q)
    ctl = controls(q)
    shown = visible_panels(store, dash)
    used = {p.table for p in shown if p.table in P.ROLLUPS}
    tails = rollups_for(store).tails(used) if used else {}

    def one(panel: P.Panel):
        t0 = time.perf_counter()
        try:
            sql = P.sql_for(panel, ctl)
            rows = _execute(store, panel, sql, P.params_for(start, end, bucket, ctl, sql), tails)
            data = shape(panel, rows, bucket)
        except Exception as exc:  # one broken panel must not blank the dashboard
            data = {"error": str(exc).split("\n")[0]}
        data["took_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        return panel.id, data

    results = dict(_POOL.map(one, shown))
    return {"start": start, "end": end, "bucket": bucket, "panels": results}


def dashboards_meta(store: Store) -> list[dict]:
    return [{"id": d.id, "title": d.title, "description": d.description,
             "panels": [{"id": p.id, "title": p.title, "description": p.description, "kind": p.kind, "table": p.table,
                         "unit": p.unit, "chart": p.chart, "discover": p.discover, "width": p.width, "sql": p.sql}
                        for p in visible_panels(store, d)]}
            for d in P.DASHBOARDS.values()]


_options_cache: dict[int, tuple[float, dict]] = {}


def control_options(store: Store) -> dict[str, list[str]]:
    """Values for the subscription / resource group / resource / deployment pickers (cached 60 s)."""
    hit = _options_cache.get(id(store))
    if hit and time.monotonic() - hit[0] < 60:
        return hit[1]
    cur = store.cursor()
    out = {}
    for param, logs_col, metrics_col in P.CONTROLS:
        lower = param != "dep"
        m = f'lower("{metrics_col}")' if lower else f'"{metrics_col}"'
        rows = cur.execute(
            f'SELECT v FROM (SELECT DISTINCT "{logs_col}" AS v FROM logs UNION SELECT DISTINCT {m} FROM metrics) '
            f"WHERE v IS NOT NULL AND v <> '' ORDER BY v LIMIT 500").fetchall()
        out[param] = [r[0] for r in rows]
    _options_cache[id(store)] = (time.monotonic(), out)
    return out


# --- Discover ------------------------------------------------------------------------------------

DEFAULT_COLUMNS = {
    "logs": ["azure.open_ai.category", "aoai.operation", "aoai.deployment", "aoai.status_code", "aoai.duration_ms", "aoai.tokens.total"],
    "metrics": ["azure.metric_name", "azure.dimensions.model_deployment_name", "azure.dimensions.status_code",
                "azure.open_ai.requests.total", "azure.open_ai.token_transaction.total"],
}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table(q) -> str:
    table = q.get("table") or "logs"
    if table not in data_tables():
        raise BadRequest(f"unknown table {table!r}; one of {', '.join(data_tables())}")
    return table


def discover_where(store: Store, table: str, q) -> tuple[str, list]:
    """Time range + controls + the KQL query bar, as one parameterized WHERE (positional parameters)."""
    start, end, _ = time_range(q)
    cols = table_columns(store, table)
    parts = ['"@timestamp" >= epoch_ms(?::BIGINT)', '"@timestamp" < epoch_ms(?::BIGINT)']
    params: list = [start, end]
    for param, logs_col, metrics_col in P.CONTROLS:
        v = q.get(param)
        col = logs_col if table == "logs" else metrics_col
        if v and col in cols:
            if table != "logs" and param != "dep":
                parts.append(f"lower({_q(col)}) = ?")
                params.append(v.lower())
            else:
                parts.append(f"{_q(col)} = ?")
                params.append(v.lower() if param != "dep" else v)
    text = q.get("q") or ""
    if text.strip():
        sql, kql_params = compile_kql(text, table, cols)
        parts.append(f"({sql})")
        params += kql_params
    return " AND ".join(parts), params


def discover(store: Store, q) -> dict:
    table = _table(q)
    cols = table_columns(store, table)
    raw = q.get("columns") or ""
    if raw == "-":  # the user removed every column
        wanted = []
    else:
        wanted = [c for c in raw.split(",") if c] or [c for c in DEFAULT_COLUMNS.get(table, []) if c in cols]
    for c in wanted:
        if c not in cols:
            raise BadRequest(f"unknown column {c!r} in {table}")
    limit = min(max(_int(q, "limit", 50), 1), PAGE_LIMIT)
    offset = max(_int(q, "offset", 0), 0)
    desc = (q.get("sort") or "desc") != "asc"
    where, params = discover_where(store, table, q)
    start, end, bucket = time_range(q)
    cur = store.cursor()
    total = cur.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()[0]
    select = ", ".join(_q(c) for c in ["id", "@timestamp"] + [c for c in wanted if c not in ("id", "@timestamp")])
    rows = cur.execute(
        f'SELECT {select} FROM {table} WHERE {where} ORDER BY "@timestamp" {"DESC" if desc else "ASC"}, id LIMIT ? OFFSET ?',
        params + [limit, offset]).fetchall()
    names = ["id", "@timestamp"] + [c for c in wanted if c not in ("id", "@timestamp")]
    hist = cur.execute(
        f'SELECT (epoch_ms("@timestamp") // ?) * ? AS t, count(*) FROM {table} WHERE {where} GROUP BY 1 ORDER BY 1',
        [bucket, bucket] + params).fetchall()
    return {"table": table, "total": total, "columns": names, "rows": [list(r) for r in rows],
            "histogram": [list(r) for r in hist], "bucket": bucket, "start": start, "end": end}


def fields(store: Store, q) -> dict:
    """The table's fields, with how many of a sample of matching documents carry each (Kibana's sidebar)."""
    table = _table(q)
    cols = table_columns(store, table)
    where, params = discover_where(store, table, q)
    names = [c for c in cols if c not in ("id", "extra")]
    counts = store.cursor().execute(
        "SELECT " + ", ".join(f"count({_q(c)})" for c in names) + f" FROM (SELECT * FROM {table} WHERE {where} LIMIT 500)",
        params).fetchone()
    described = {f.name: f.description for f in schema.TABLES.get(table, ())}
    return {"fields": [{"name": n, "type": cols[n], "sample_count": c, "description": described.get(n, "")}
                       for n, c in zip(names, counts)]}


def top_values(store: Store, q) -> dict:
    """Top 10 values of one field among the documents the current query matches."""
    table = _table(q)
    cols = table_columns(store, table)
    name = q.get("field") or ""
    if name not in cols or name in ("id", "extra"):
        raise BadRequest(f"unknown field {name!r} in {table}")
    where, params = discover_where(store, table, q)
    col = _q(name)
    value = f"unnest({col})" if cols[name].endswith("[]") else f"CAST({col} AS VARCHAR)"
    cur = store.cursor()
    rows = cur.execute(
        f"SELECT v, count(*) AS n FROM (SELECT {value} AS v FROM {table} WHERE {where} AND {col} IS NOT NULL) "
        f"GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10", params).fetchall()
    present = cur.execute(f"SELECT count({col}), count(*) FROM {table} WHERE {where}", params).fetchone()
    return {"field": name, "type": cols[name], "values": [list(r) for r in rows], "present": present[0], "total": present[1]}


def document(store: Store, table: str, doc_id: str, ts: int | None) -> dict | None:
    if table not in data_tables():
        raise BadRequest(f"unknown table {table!r}")
    try:
        uid = str(uuid.UUID(doc_id))
    except ValueError:
        raise BadRequest("id must be a UUID") from None
    where, params = "id = ?::UUID", [uid]
    if ts is not None:  # narrows the scan to the row groups of that instant
        where += ' AND "@timestamp" = epoch_ms(?::BIGINT)'
        params.append(ts)
    cur = store.cursor().execute(f"SELECT * FROM {table} WHERE {where} LIMIT 1", params)
    names = [d[0] for d in cur.description]
    row = cur.fetchone()
    if row is None:
        return None
    doc = dict(zip(names, row))
    extra = doc.pop("extra", None)
    fields_out = [[k, _maybe_json(k, v, table)] for k, v in doc.items() if v is not None]
    if extra:
        try:
            for k, v in orjson.loads(extra).items():
                fields_out.append([k, v])
        except orjson.JSONDecodeError:
            fields_out.append(["extra", extra])
    fields_out.sort(key=lambda kv: (kv[0] not in ("@timestamp", "id"), kv[0]))
    return {"table": table, "id": uid, "fields": fields_out, "extra_keys": sorted(orjson.loads(extra)) if extra else [],
            "raw": doc.get("event.original")}


_JSON_FIELDS = {t: {f.name for f in fs if schema.duckdb_type(f, t) == "JSON"} for t, fs in schema.TABLES.items()}


def _maybe_json(name: str, value, table: str):
    if isinstance(value, str) and name in _JSON_FIELDS.get(table, ()):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


# --- Traces page (query/traces.py) ---------------------------------------------------------------------

TRACE_FILTERS = (("service", "service.name"), ("deployment", "aoai.deployment"), ("outcome", "event.outcome"))
TRACE_PAGE = 100


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadRequest("id must be a UUID") from None


def traces_list(store: Store, q) -> dict:
    """Spans newest first: the time range and KQL bar over the spans table (Discover's WHERE), plus the
    page's service / deployment (or the top bar's) / outcome filters; `facets` feed the filter pickers."""
    where, params = discover_where(store, "spans", q)
    for param, col in TRACE_FILTERS:
        v = q.get(param) or (q.get("dep") if param == "deployment" else None)
        if v:
            where += f" AND {_q(col)} = ?"
            params.append(v)
    limit = min(max(_int(q, "limit", TRACE_PAGE), 1), PAGE_LIMIT)
    offset = max(_int(q, "offset", 0), 0)
    start, end, _ = time_range(q)
    cur = store.cursor()
    total = cur.execute(f"SELECT count(*) FROM spans WHERE {where}", params).fetchone()[0]
    rows = T._rows(cur.execute(
        f'SELECT {", ".join(_q(c) for c in T.LIST_COLUMNS)} FROM spans WHERE {where} '
        'ORDER BY "@timestamp" DESC, "span.id" LIMIT ? OFFSET ?', params + [limit, offset]))
    facets = {}
    for param, col in TRACE_FILTERS:
        facets[param] = [r[0] for r in cur.execute(
            f'SELECT DISTINCT {_q(col)} FROM spans WHERE "@timestamp" >= epoch_ms(?::BIGINT) '
            f'AND "@timestamp" < epoch_ms(?::BIGINT) AND {_q(col)} IS NOT NULL ORDER BY 1 LIMIT 200', [start, end]).fetchall()]
    return {"total": total, "rows": rows, "facets": facets, "start": start, "end": end, "limit": limit, "offset": offset}


def _group_chart(rows: list[dict], measure: str, key: str, bucket: int) -> dict:
    """Rows of (bucket, group, measures…) → the time-chart shape {t, series: {group: values}, bucket}."""
    times = sorted({r[key] for r in rows})
    index = {t: i for i, t in enumerate(times)}
    series: dict[str, list] = {}
    for r in rows:
        name = "(none)" if r["group"] is None else str(r["group"])
        series.setdefault(name, [None] * len(times))[index[r[key]]] = r[measure]
    return {"t": times, "series": series, "bucket": bucket}


def traces_panels(store: Store, q) -> dict:
    """App-side panels: per group (service.name by default) requests, errors, latency and TTFT percentiles,
    tokens and cost; the same measures per time bucket; app-side against service-side latency."""
    start, end, bucket = time_range(q)
    group = q.get("group") or "service.name"
    if group not in T.GROUPS:
        raise BadRequest(f"group must be one of {', '.join(T.GROUPS)}")
    series = T.app_timeseries(store, start_ms=start, end_ms=end, bucket_s=bucket // 1000, group_by=group)
    for r in series:
        r["bucket"] = _default(r["bucket"]) if isinstance(r["bucket"], dt.datetime) else r["bucket"]
    return {"start": start, "end": end, "bucket": bucket, "group": group, "groups": list(T.GROUPS),
            "rows": T.app_panels(store, start_ms=start, end_ms=end, group_by=group),
            "charts": {m: _group_chart(series, m, "bucket", bucket) for m in ("p95_ms", "ttft_p95_ms", "tokens", "cost")},
            "latency": T.app_vs_service_latency(store, start_ms=start, end_ms=end)}


def span_detail(store: Store, ref: str) -> dict | None:
    """A span (document id or 16-hex span.id) with its trace, the linked service log and both latencies."""
    ref = ref.strip().lower()
    if not (len(ref) == 16 and all(c in "0123456789abcdef" for c in ref)):
        ref = _uuid(ref)
    detail = T.span_detail(store, ref)
    if detail is not None:
        app_ms, svc_ms = detail["app_ms"], detail["service_ms"]
        detail["gap_ms"] = app_ms - svc_ms if app_ms is not None and svc_ms is not None else None
    return detail


# --- Cost dashboard (pricing/reports.py) -------------------------------------------------------------

COST_TOP_SERIES = 10


def pricing_for(store: Store):
    """The Pricing the store's ingest pricer uses, else the [pricing] section of $AOAI_MONITOR_CONFIG."""
    pricing = getattr(getattr(store, "pricer", None), "_pricing", None)
    if pricing is None:
        from ..pricing import load_pricing
        try:
            pricing = load_pricing()
        except ValueError as exc:
            raise BadRequest(f"pricing configuration: {exc}") from None
    return pricing


def _daily_chart(rows: list[dict], key: str) -> dict:
    """daily_by rows → a time chart of cost per UTC day, top COST_TOP_SERIES series, the rest as 'Other'."""
    totals: dict[str, float] = {}
    for r in rows:
        totals[r[key]] = totals.get(r[key], 0.0) + r["cost"]
    top = set(sorted(totals, key=lambda k: (-totals[k], str(k)))[:COST_TOP_SERIES])
    days = sorted({r["day"] for r in rows})
    t = [int(dt.datetime.strptime(d, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc).timestamp() * 1000) for d in days]
    index = {d: i for i, d in enumerate(days)}
    series: dict[str, list] = {}
    for r in rows:
        name = str(r[key]) if r[key] in top else "Other"
        values = series.setdefault(name, [None] * len(days))
        values[index[r["day"]]] = (values[index[r["day"]]] or 0.0) + r["cost"]
    return {"t": t, "series": series, "bucket": 86400_000}


def cost_report(store: Store, q) -> dict:
    """The Cost dashboard's report: reports.summary() for the range, restricted to the Deployment control
    when set (hourly rows and PTU rows carry the deployment). Top callers, unpriced reasons and the
    forecast cover every deployment; no report row carries subscription, resource group or resource."""
    from ..alerting.service import PUBLISHED
    from ..pricing import reports as R

    start, end, _ = time_range(q)
    ctl = controls(q)
    dep = ctl["dep"]
    pricing = pricing_for(store)
    rows = R.hourly_costs(store, pricing, start, end)
    if dep:
        rows = [r for r in rows if r["deployment"] == dep]
    ptu = R.ptu_vs_payg(store, pricing, start, end, rows)
    if dep:
        ptu = [p for p in ptu if p["deployment"] == dep]
    by_source: dict[str, float] = {}
    for r in rows:
        by_source[r["source"]] = by_source.get(r["source"], 0.0) + r["cost"]
    reasons = R.unpriced_reasons(store, pricing, start, end)
    daily_dep, daily_model = R.daily_by(rows, "deployment"), R.daily_by(rows, "model")
    now = int(time.time() * 1000)
    token_cost, ptu_cost = sum(r["cost"] for r in rows), sum(p["ptu_cost"] or 0 for p in ptu)
    budgets = []
    for rule in (store.get_state(PUBLISHED) or {}).get("rules", []):
        if rule.get("kind") == "budget" and rule.get("monthly_budget"):
            budgets.append({"rule": rule["id"], "name": rule.get("name"), "measure": rule.get("measure"),
                            "warning": rule.get("warning"), "critical": rule.get("critical"),
                            **R.budget_status(store, pricing, float(rule["monthly_budget"]), now)})
    return {
        "start": start, "end": end, "currency": pricing.prices.currency,
        "total": token_cost + ptu_cost, "token_cost": token_cost, "ptu_cost": ptu_cost, "by_source": by_source,
        "unpriced_requests": sum(r["requests"] for r in reasons),
        "unpriced_deployment_hours": sum(r.get("deployment_hours", 0) for r in reasons),
        "unpriced_reasons": reasons,
        "daily_by_deployment": daily_dep, "daily_by_model": daily_model,
        "by_deployment": R.totals_by(rows, "deployment"), "by_model": R.totals_by(rows, "model"),
        "charts": {"deployment": _daily_chart(daily_dep, "deployment"), "model": _daily_chart(daily_model, "model")},
        "top_callers": R.top_callers(store, start, end),
        "ptu_vs_payg": ptu, "break_even": R.break_even(ptu),
        "forecast": R.forecast(store, pricing, min(end, now)),
        "budgets": budgets,
        "filtered_by": ["dep"] if dep else [],
        "not_filtered": [k for k in ("sub", "rg", "res") if ctl[k]] + (["dep: top callers, unpriced, forecast"] if dep else []),
    }


# --- HTTP layer ----------------------------------------------------------------------------------

def _session_value(token: str) -> str:
    return hmac.new(token.encode(), b"aoai-monitor-session", hashlib.sha256).hexdigest()


class SecurityMiddleware:
    """Token or loopback-Host check on every request, and security headers on every response."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.token = token
        self.session = _session_value(token) if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        denied = self._check(request)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                headers += [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
                            (b"cross-origin-opener-policy", b"same-origin")]
                if scope["path"].startswith("/api/"):
                    headers.append((b"cache-control", b"no-store"))
            await send(message)

        if denied is not None:
            await denied(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _check(self, request: Request) -> Response | None:
        if self.token is None:
            host = (request.headers.get("host") or "").rsplit(":", 1)[0] if not (request.headers.get("host") or "").startswith("[") \
                else (request.headers.get("host") or "").split("]")[0] + "]"
            if host.lower() not in LOOPBACK_HOSTS:
                return _error("this server only answers on 127.0.0.1/localhost; start it with a token to expose it", 403)
            return None
        given = request.query_params.get("token")
        if given is not None and request.url.path == "/":
            if hmac.compare_digest(given.encode(), self.token.encode()):
                resp = RedirectResponse("/", status_code=303)
                resp.set_cookie(COOKIE, self.session, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https", path="/")
                return resp
            return HTMLResponse("<h1>401</h1><p>Wrong access token.</p>", status_code=401)
        auth = request.headers.get("authorization") or ""
        if auth.lower().startswith("bearer ") and hmac.compare_digest(auth[7:].strip().encode(), self.token.encode()):
            return None
        cookie = request.cookies.get(COOKIE)
        if cookie and hmac.compare_digest(cookie.encode(), self.session.encode()):
            return None
        if request.url.path.startswith("/api/"):
            return _error("access token required: send 'Authorization: Bearer <token>' or open the URL with ?token=", 401)
        return HTMLResponse("<h1>aoai-monitor</h1><p>Access token required: open the URL printed by "
                            "<code>aoai-monitor serve</code> (it ends with <code>?token=…</code>).</p>", status_code=401)


def create_app(store: Store, token: str | None = None) -> Starlette:
    """The UI and its API over `store` (open it with query.sql.open_for_queries for a read-only server)."""
    from ..alerting.api import routes as alert_routes

    def endpoint(fn):
        async def handler(request: Request) -> Response:
            try:
                result = await run_in_threadpool(fn, request)
            except BadRequest as exc:
                return _error(str(exc))
            except KqlError as exc:
                return _json({"error": str(exc), "position": exc.position}, 400)
            except QueryError as exc:
                return _error(str(exc))
            return result if isinstance(result, Response) else _json(result)
        return handler

    def api_dashboards(request):
        return {"dashboards": dashboards_meta(store), "sql_examples": [{"title": t, "sql": s} for t, s in P.SQL_EXAMPLES],
                "tables": data_tables()}

    def api_dashboard(request):
        return run_dashboard(store, request.path_params["dashboard"], request.query_params)

    def api_panel(request):
        return run_panel(store, request.path_params["dashboard"], request.path_params["panel"], request.query_params)

    def api_options(request):
        return control_options(store)

    def api_discover(request):
        return discover(store, request.query_params)

    def api_fields(request):
        return fields(store, request.query_params)

    def api_values(request):
        return top_values(store, request.query_params)

    def api_doc(request):
        doc = document(store, request.path_params["table"], request.path_params["id"], _int(request.query_params, "ts"))
        return doc if doc is not None else _error("no such document", 404)

    def api_traces(request):
        return traces_list(store, request.query_params)

    def api_traces_panels(request):
        return traces_panels(store, request.query_params)

    def api_span(request):
        detail = span_detail(store, request.path_params["ref"])
        return detail if detail is not None else _error("no such span", 404)

    def api_log_spans(request):
        return {"spans": T.spans_for_log(store, _uuid(request.path_params["id"]))}

    def api_cost(request):
        return cost_report(store, request.query_params)

    async def api_sql(request: Request) -> Response:
        if not (request.headers.get("content-type") or "").startswith("application/json"):
            return _error("send the query as JSON: {\"sql\": \"SELECT …\"}", 415)
        try:
            body = orjson.loads(await request.body())
            sql = body["sql"]
            params = body.get("params") or []
            if not isinstance(sql, str) or not isinstance(params, list):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _error("body must be {\"sql\": \"SELECT …\", \"params\": [...]}")

        def run():
            t0 = time.perf_counter()
            columns, rows = run_query(store, sql, params, limit=SQL_ROW_LIMIT + 1)
            return {"columns": columns, "rows": [list(r) for r in rows[:SQL_ROW_LIMIT]],
                    "truncated": len(rows) > SQL_ROW_LIMIT, "took_ms": round((time.perf_counter() - t0) * 1000, 1)}
        try:
            return _json(await run_in_threadpool(run))
        except QueryError as exc:
            return _error(str(exc))

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    routes = [
        Route("/", index),
        Route("/api/dashboards", endpoint(api_dashboards)),
        Route("/api/dashboard/{dashboard}", endpoint(api_dashboard)),
        Route("/api/panel/{dashboard}/{panel}", endpoint(api_panel)),
        Route("/api/options", endpoint(api_options)),
        Route("/api/discover", endpoint(api_discover)),
        Route("/api/fields", endpoint(api_fields)),
        Route("/api/values", endpoint(api_values)),
        Route("/api/doc/{table}/{id}", endpoint(api_doc)),
        Route("/api/doc/logs/{id}/spans", endpoint(api_log_spans)),
        Route("/api/traces", endpoint(api_traces)),
        Route("/api/traces/panels", endpoint(api_traces_panels)),
        Route("/api/span/{ref}", endpoint(api_span)),
        Route("/api/cost", endpoint(api_cost)),
        Route("/api/sql", api_sql, methods=["POST"]),
        *alert_routes(store),  # Alerts and SLO pages (aoai_monitor/alerting/api.py)
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    threading.Thread(target=rollups_for(store).refresh, name="aoai-rollups", daemon=True).start()
    app = Starlette(routes=routes)
    app.add_middleware(SecurityMiddleware, token=token)
    app.state.store = store
    return app
