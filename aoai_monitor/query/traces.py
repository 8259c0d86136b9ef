"""Data for the Traces page and the app-side panels, and the span ↔ service-log link.

Read-only, parameterized SQL on the store's spans and logs tables. Rows come back as dicts keyed by
column name (JSON columns parsed). The link between a span and a service log is made here, at query
time, in this order (docs/instrumentation.md "Correlation"):
1. response id: spans."gen_ai.response.id" = logs."azure.open_ai.properties.backend_response_body.id"
   (APIM GatewayLogs with body logging);
2. request id: spans."aoai.apim_request_id" / "aoai.request_id" (response headers) = logs."azure.open_ai.
   correlation_id" or logs."azure.open_ai.properties.request_id";
3. fallback: same deployment, log time within FALLBACK_MS of the span, nearest first ("approximate").
"""

from __future__ import annotations

import orjson

from ..store import Store

ID_WINDOW_MS = 3_600_000  # id matches look this far either side of the span (clock skew, late service logs)
FALLBACK_MS = 5_000
GROUPS = ("service.name", "aoai.deployment", "aoai.model", "gen_ai.operation.name", "service.version")
_JSON = {"extra", "span.events", "resource.attributes", "gen_ai.response.finish_reasons"}
_REQUEST_CATEGORIES = ("GatewayLogs", "RequestResponse", "GatewayLlmLogs", "AzureOpenAIRequestUsage")
# Preferred log when several match: the gateway record (bodies, tokens), then the service's own, then
# GatewayLlmLogs row 0.
_LOG_RANK = ('CASE "azure.open_ai.category" WHEN \'GatewayLogs\' THEN 0 WHEN \'RequestResponse\' THEN 1 '
             'WHEN \'GatewayLlmLogs\' THEN 2 ELSE 3 END + coalesce("azure.open_ai.properties.sequence_number", 0) * 10')
LIST_COLUMNS = ("id", "@timestamp", "trace.id", "span.id", "parent.id", "span.name", "service.name", "event.outcome",
                "aoai.deployment", "aoai.model", "aoai.operation", "aoai.status_code", "aoai.duration_ms", "aoai.ttft_ms",
                "aoai.stream", "aoai.tokens.input", "aoai.tokens.output", "aoai.cost", "error.type")


def _rows(cur) -> list[dict]:
    names = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        doc = {}
        for name, value in zip(names, row):
            if name in _JSON and isinstance(value, str):
                value = orjson.loads(value)
            elif name == "id" and value is not None:
                value = str(value)
            doc[name] = value
        out.append(doc)
    return out


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def list_spans(store: Store, *, start_ms: int | None = None, end_ms: int | None = None, service: str | None = None,
               deployment: str | None = None, model: str | None = None, operation: str | None = None,
               outcome: str | None = None, trace_id: str | None = None, name: str | None = None,
               min_duration_ms: float | None = None, genai_only: bool = False, limit: int = 100,
               offset: int = 0) -> list[dict]:
    """Spans newest first, filtered; `name` matches span.name case-insensitively as a substring."""
    where, params = [], []
    for column, value in (("service.name", service), ("aoai.deployment", deployment), ("aoai.model", model),
                          ("aoai.operation", operation), ("event.outcome", outcome), ("trace.id", trace_id)):
        if value is not None:
            where.append(f"{_q(column)} = ?")
            params.append(value)
    if start_ms is not None:
        where.append('"@timestamp" >= epoch_ms(?::BIGINT)')
        params.append(start_ms)
    if end_ms is not None:
        where.append('"@timestamp" < epoch_ms(?::BIGINT)')
        params.append(end_ms)
    if name:
        where.append('"span.name" ILIKE ?')
        params.append("%" + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    if min_duration_ms is not None:
        where.append('"aoai.duration_ms" >= ?')
        params.append(min_duration_ms)
    if genai_only:
        where.append('"gen_ai.operation.name" IS NOT NULL')
    sql = (f"SELECT {', '.join(_q(c) for c in LIST_COLUMNS)} FROM spans"
           + (f" WHERE {' AND '.join(where)}" if where else "")
           + ' ORDER BY "@timestamp" DESC, "span.id" LIMIT ? OFFSET ?')
    return _rows(store.cursor().execute(sql, [*params, int(limit), int(offset)]))


def get_span(store: Store, ref: str) -> dict | None:
    """A span by document id (UUID) or span.id (16 hex digits), all columns."""
    rows = _rows(store.cursor().execute(
        'SELECT * FROM spans WHERE id = TRY_CAST(? AS UUID) OR "span.id" = ? LIMIT 1', [ref, ref.lower()]))
    return rows[0] if rows else None


def span_detail(store: Store, ref: str) -> dict | None:
    """Everything the span detail view shows: the span, its trace, the correlated service log and both
    latencies side by side ("app_ms" vs "service_ms")."""
    span = get_span(store, ref)
    if span is None:
        return None
    trace = _rows(store.cursor().execute(
        f'SELECT {", ".join(_q(c) for c in LIST_COLUMNS)} FROM spans WHERE "trace.id" = ? ORDER BY "@timestamp", "span.id"',
        [span["trace.id"]]))
    log, link = correlated_log(store, span)
    return {"span": span, "trace": trace, "log": log, "link": link, "app_ms": span.get("aoai.duration_ms"),
            "service_ms": log.get("aoai.duration_ms") if log else None}


def _epoch_ms(value) -> int:
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else int(value)


def correlated_log(store: Store, span: dict) -> tuple[dict | None, str | None]:
    """The service log of the span's request and how it was found: response_id, request_id, approximate."""
    start = _epoch_ms(span["@timestamp"])
    end = start + int(span.get("aoai.duration_ms") or 0)
    response_id = span.get("gen_ai.response.id")
    request_ids = [span.get("aoai.apim_request_id"), span.get("aoai.request_id")]
    cur = store.cursor()
    if response_id or any(request_ids):
        rows = _rows(cur.execute(
            f'SELECT *, CASE WHEN "azure.open_ai.properties.backend_response_body.id" = ? THEN 0 ELSE 1 END AS _by_id, '
            f'{_LOG_RANK} AS _rank FROM logs '
            'WHERE "@timestamp" BETWEEN epoch_ms(?::BIGINT) AND epoch_ms(?::BIGINT) '
            'AND ("azure.open_ai.properties.backend_response_body.id" = ? OR "azure.open_ai.correlation_id" IN (?, ?) '
            'OR "azure.open_ai.properties.request_id" IN (?, ?)) ORDER BY _by_id, _rank LIMIT 1',
            [response_id, start - ID_WINDOW_MS, end + ID_WINDOW_MS, response_id, *request_ids, *request_ids]))
        if rows:
            log = rows[0]
            link = "response_id" if log.pop("_by_id") == 0 else "request_id"
            log.pop("_rank")
            return log, link
    if not span.get("aoai.deployment"):
        return None, None
    rows = _rows(cur.execute(
        f'SELECT *, {_LOG_RANK} AS _rank FROM logs WHERE "aoai.deployment" = ? '
        'AND "@timestamp" BETWEEN epoch_ms(?::BIGINT) AND epoch_ms(?::BIGINT) '
        f'AND "azure.open_ai.category" IN ({", ".join("?" * len(_REQUEST_CATEGORIES))}) '
        'ORDER BY abs(epoch_ms("@timestamp") - ?), _rank LIMIT 1',
        [span["aoai.deployment"], start - FALLBACK_MS, end + FALLBACK_MS, *_REQUEST_CATEGORIES, start]))
    if not rows:
        return None, None
    rows[0].pop("_rank")
    return rows[0], "approximate"


def spans_for_log(store: Store, log_id: str) -> list[dict]:
    """The app spans of a service log's request (the log's document view), each with its "link" method."""
    cur = store.cursor()
    logs = _rows(cur.execute(
        'SELECT "@timestamp", "aoai.deployment", "azure.open_ai.correlation_id" AS cid, '
        '"azure.open_ai.properties.request_id" AS rid, "azure.open_ai.properties.backend_response_body.id" AS resp '
        "FROM logs WHERE id = TRY_CAST(? AS UUID)", [log_id]))
    if not logs:
        return []
    log = logs[0]
    ts = _epoch_ms(log["@timestamp"])
    ids = [log["cid"], log["rid"]]
    columns = ", ".join(_q(c) for c in LIST_COLUMNS)
    if log["resp"] or any(ids):
        rows = _rows(cur.execute(
            f'SELECT {columns}, CASE WHEN "gen_ai.response.id" = ? THEN \'response_id\' ELSE \'request_id\' END AS link '
            'FROM spans WHERE "@timestamp" BETWEEN epoch_ms(?::BIGINT) AND epoch_ms(?::BIGINT) '
            'AND ("gen_ai.response.id" = ? OR "aoai.apim_request_id" IN (?, ?) OR "aoai.request_id" IN (?, ?)) '
            'ORDER BY "@timestamp", "span.id"',
            [log["resp"], ts - ID_WINDOW_MS, ts + ID_WINDOW_MS, log["resp"], *ids, *ids]))
        if rows:
            return rows
    if not log["aoai.deployment"]:
        return []
    return _rows(cur.execute(
        f"SELECT {columns}, 'approximate' AS link FROM spans WHERE \"aoai.deployment\" = ? "
        'AND "@timestamp" BETWEEN epoch_ms(?::BIGINT) AND epoch_ms(?::BIGINT) '
        'ORDER BY abs(epoch_ms("@timestamp") - ?), "span.id" LIMIT 1',
        [log["aoai.deployment"], ts - FALLBACK_MS, ts + FALLBACK_MS, ts]))


def app_panels(store: Store, *, start_ms: int, end_ms: int, group_by: str = "service.name") -> list[dict]:
    """Per group (default service.name): requests, errors, latency p50/p95/p99, TTFT p50/p95, tokens, cost.

    `unpriced` counts calls with tokens but no cost, so a missing price shows instead of reading as $0.
    """
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPS)}")
    sql = (f'SELECT {_q(group_by)} AS "group", count(*) AS requests, '
           "count(*) FILTER (WHERE \"event.outcome\" = 'failure') AS errors, "
           'count(*) FILTER (WHERE "aoai.status_code" = 429) AS throttled, '
           'quantile_cont("aoai.duration_ms", 0.5) AS p50_ms, quantile_cont("aoai.duration_ms", 0.95) AS p95_ms, '
           'quantile_cont("aoai.duration_ms", 0.99) AS p99_ms, quantile_cont("aoai.ttft_ms", 0.5) AS ttft_p50_ms, '
           'quantile_cont("aoai.ttft_ms", 0.95) AS ttft_p95_ms, sum("aoai.tokens.input") AS input_tokens, '
           'sum("aoai.tokens.output") AS output_tokens, sum("aoai.cost") AS cost, '
           'count(*) FILTER (WHERE "aoai.cost" IS NULL AND "aoai.tokens.input" IS NOT NULL) AS unpriced '
           'FROM spans WHERE "@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT) '
           'AND "gen_ai.operation.name" IS NOT NULL GROUP BY 1 ORDER BY requests DESC, 1')
    return _rows(store.cursor().execute(sql, [start_ms, end_ms]))


def app_timeseries(store: Store, *, start_ms: int, end_ms: int, bucket_s: int = 60,
                   group_by: str = "service.name") -> list[dict]:
    """The same measures per time bucket (for the panels' charts): bucket start, group, requests, p95, tokens, cost."""
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPS)}")
    sql = (f'SELECT time_bucket(to_seconds(?::BIGINT), "@timestamp") AS bucket, {_q(group_by)} AS "group", '
           'count(*) AS requests, quantile_cont("aoai.duration_ms", 0.95) AS p95_ms, '
           'quantile_cont("aoai.ttft_ms", 0.95) AS ttft_p95_ms, sum("aoai.tokens.total") AS tokens, sum("aoai.cost") AS cost '
           'FROM spans WHERE "@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT) '
           'AND "gen_ai.operation.name" IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2')
    return _rows(store.cursor().execute(sql, [int(bucket_s), start_ms, end_ms]))


def app_vs_service_latency(store: Store, *, start_ms: int, end_ms: int) -> list[dict]:
    """Per deployment, over spans linked to a service log by id: app-side and service-side p50/p95 and the
    median gap (network, queueing and client time the service does not see)."""
    sql = f"""
    WITH s AS (
        SELECT "span.id" AS sid, "aoai.deployment" AS dep, "aoai.duration_ms" AS app_ms,
               "gen_ai.response.id" AS k1, "aoai.apim_request_id" AS k2, "aoai.request_id" AS k3
        FROM spans WHERE "@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT)
          AND "aoai.deployment" IS NOT NULL),
    sk AS (SELECT sid, unnest([k1, k2, k3]) AS k FROM s),
    lk AS (SELECT unnest(["azure.open_ai.properties.backend_response_body.id", "azure.open_ai.correlation_id",
                          "azure.open_ai.properties.request_id"]) AS k, "aoai.duration_ms" AS svc_ms, {_LOG_RANK} AS rnk
           FROM logs WHERE "@timestamp" BETWEEN epoch_ms(?::BIGINT) AND epoch_ms(?::BIGINT)
             AND "aoai.duration_ms" IS NOT NULL),
    pairs AS (SELECT sk.sid, arg_min(lk.svc_ms, lk.rnk) AS svc_ms FROM sk JOIN lk ON sk.k = lk.k
              WHERE sk.k IS NOT NULL GROUP BY sk.sid)
    SELECT s.dep AS deployment, count(*) AS linked, quantile_cont(s.app_ms, 0.5) AS app_p50_ms,
           quantile_cont(s.app_ms, 0.95) AS app_p95_ms, quantile_cont(pairs.svc_ms, 0.5) AS service_p50_ms,
           quantile_cont(pairs.svc_ms, 0.95) AS service_p95_ms, median(s.app_ms - pairs.svc_ms) AS gap_p50_ms
    FROM s JOIN pairs USING (sid) GROUP BY 1 ORDER BY 1"""
    return _rows(store.cursor().execute(sql, [start_ms, end_ms, start_ms - ID_WINDOW_MS, end_ms + ID_WINDOW_MS]))
