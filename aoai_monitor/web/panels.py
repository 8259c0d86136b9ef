"""Every dashboard and panel, declared as data.

The same declarations drive the JSON API, the browser tests (numbers are checked against `sql_for`), and
bench/bench_panels.py. A panel's SQL is a trusted template: `{where}` is replaced by the time-range and
control filters built here from fixed column names; every user value travels as a named parameter
($start, $end, $bucket, $sub, $rg, $res, $dep). Nothing a user types is ever spliced into SQL.

Defects of Elastic's dashboards fixed here (elastic-integration.md 4.5): every panel is filtered on its own
field (PTU cache match rate, content-filter "sexual"), errors use the numeric unified status code, latency
uses the corrected duration (never negative), and content-filter panels read the unified
'category:severity' arrays so input/output × category cannot be miswired.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BUCKET = '(epoch_ms("@timestamp") // $bucket) * $bucket'
M = "azure.open_ai."
CF_BODY = "azure.open_ai.properties.backend_response_body."

# Control filters: (parameter, logs column, metrics column). Metrics keep Azure's casing of resource
# group and name while logs lower-case them (Elastic's pipeline), so metrics compare case-insensitively.
CONTROLS = (
    ("sub", "azure.subscription_id", "azure.subscription_id"),
    ("rg", "azure.resource.group", "azure.resource.group"),
    ("res", "azure.resource.name", "azure.resource.name"),
    ("dep", "aoai.deployment", "azure.dimensions.model_deployment_name"),
)
_CASE_INSENSITIVE = {"sub", "rg", "res"}


@dataclass(frozen=True)
class Rollup:
    """A per-minute aggregate of one table that panels read instead of raw rows (10 M logs → ~1 M rows).

    The web app keeps it in memory: rows ingested more than LAG ago are aggregated once, the recent tail
    is aggregated per request, so answers equal a raw query (tests check) at one-minute resolution.
    """
    name: str
    source: str
    where: str
    keys: tuple[str, ...]
    measures: tuple[tuple[str, str], ...]  # (name, additive aggregate over the source)

    def select(self, first: bool) -> str:
        """Aggregate rows ingested in [?, ?); the first batch also takes rows without event.ingested.
        The bare column comparison lets DuckDB skip row groups by their min/max (ingestion order)."""
        keys = ", ".join(_q(k) for k in self.keys)
        measures = ", ".join(f"{expr} AS {_q(name)}" for name, expr in self.measures)
        ingested = ('("event.ingested" IS NULL OR "event.ingested" >= epoch_ms(?::BIGINT)) ' if first
                    else '"event.ingested" >= epoch_ms(?::BIGINT) ')
        return (f"SELECT time_bucket(INTERVAL 1 minute, \"@timestamp\") AS \"@timestamp\", {keys}, {measures} "
                f"FROM {self.source} WHERE {self.where} AND {ingested}"
                f"AND \"event.ingested\" < epoch_ms(?::BIGINT) GROUP BY ALL")


# RequestResponse records, the Overview's log panels: ~1 row per minute × deployment × status × resource.
REQUESTS_1M = Rollup("requests_1m", "logs", "\"azure.open_ai.category\" = 'RequestResponse'",
                     ("azure.subscription_id", "azure.resource.group", "azure.resource.name", "aoai.deployment",
                      "aoai.model", "aoai.operation", "aoai.status_code"),
                     (("n", "count(*)"), ("dur_sum", 'sum("aoai.duration_ms")'), ("dur_n", 'count("aoai.duration_ms")')))
ROLLUPS = {r.name: r for r in (REQUESTS_1M,)}


@dataclass(frozen=True)
class Panel:
    id: str
    title: str
    description: str
    kind: str  # stat | timeseries | donut
    table: str  # logs | metrics | a rollup name (ROLLUPS), which carries the logs' column names
    sql: str  # template with {where}; stat → one value; donut → (label, value); timeseries → (t, series, value)
    unit: str = "count"  # count | tokens | ms | percent | currency
    chart: str = "bar"  # bar (stacked) | line, for time series
    discover: str = ""  # KQL that opens the panel's documents in Discover
    requires: tuple[str, ...] = ()  # columns that must exist (e.g. aoai.cost.*), else the panel is hidden
    width: int = 1  # grid columns (of 4) the panel spans


@dataclass(frozen=True)
class Dashboard:
    id: str
    title: str
    description: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def where_clause(table: str, controls: dict[str, str | None]) -> str:
    """Time range plus the controls that are set; values stay parameters."""
    parts = ['"@timestamp" >= epoch_ms($start::BIGINT)', '"@timestamp" < epoch_ms($end::BIGINT)']
    for param, logs_col, metrics_col in CONTROLS:
        if controls.get(param):
            col = _q(metrics_col if table == "metrics" else logs_col)
            if table == "metrics" and param in _CASE_INSENSITIVE:
                col = f"lower({col})"
            parts.append(f"{col} = ${param}")
    return " AND ".join(parts)


def params_for(start_ms: int, end_ms: int, bucket_ms: int, controls: dict[str, str | None], sql: str) -> dict:
    """Named parameters the SQL mentions (DuckDB rejects unused ones)."""
    values = {"start": int(start_ms), "end": int(end_ms), "bucket": int(bucket_ms)}
    for param, _, _ in CONTROLS:
        v = controls.get(param)
        if v:
            values[param] = v.lower() if param in _CASE_INSENSITIVE else v
    return {k: v for k, v in values.items() if f"${k}" in sql}


def sql_for(panel: Panel, controls: dict[str, str | None]) -> str:
    """The panel's SQL with its filters; a rollup reads its stored part plus `<name>_tail` (recent rows)."""
    sql = panel.sql.replace("{where}", where_clause(panel.table, controls))
    if panel.table in ROLLUPS:
        name = panel.table
        sql = sql.replace(f"FROM {name} ", f"FROM (SELECT * FROM {name} UNION ALL SELECT * FROM {name}_tail) ")
    return sql


def _series(table: str, value: str, series: str, cond: str, top: int, additive: bool = True, weight: str = "count(*)") -> str:
    """Stacked series per time bucket, limited to the top N series; the rest become 'Other' when additive.
    Averages (not additive) rank series by `weight`, the number of requests behind them."""
    rank = "sum(v)" if additive else "sum(n)"
    rest = "'Other'" if additive else "NULL"
    return (
        f"WITH b AS (SELECT {BUCKET} AS t, coalesce(CAST({series} AS VARCHAR), '(none)') AS s, {value} AS v, "
        f"{weight} AS n FROM {table} WHERE {{where}} AND {cond} GROUP BY ALL), "
        f"k AS (SELECT s FROM b GROUP BY s ORDER BY {rank} DESC NULLS LAST, s LIMIT {top}) "
        f"SELECT t, s2 AS s, {'sum(v)' if additive else 'max(v)'} AS v FROM "
        f"(SELECT t, CASE WHEN s IN (SELECT s FROM k) THEN s ELSE {rest} END AS s2, v FROM b) "
        f"WHERE s2 IS NOT NULL GROUP BY ALL ORDER BY t, s")


def _donut(table: str, value: str, label: str, cond: str, top: int) -> str:
    return (
        f"WITH g AS (SELECT coalesce(CAST({label} AS VARCHAR), '(none)') AS l, {value} AS v FROM {table} "
        f"WHERE {{where}} AND {cond} GROUP BY 1), r AS (SELECT l, v, row_number() OVER (ORDER BY v DESC, l) AS i FROM g) "
        f"SELECT CASE WHEN i <= {top} THEN l ELSE 'Other' END AS l, sum(v) AS v FROM r GROUP BY 1 ORDER BY v DESC")


def _stat(table: str, value: str, cond: str = "true") -> str:
    return f"SELECT {value} FROM {table} WHERE {{where}} AND {cond}"


def _filtered_by_severity(side: str, category: str) -> str:
    """Filtered prompts (input) or completions (output) of one category, by severity."""
    col = _q(f"aoai.content_filter.{side}")
    return (
        f"SELECT {BUCKET} AS t, split_part(c, ':', 2) AS s, count(*) AS v FROM "
        f"(SELECT \"@timestamp\", unnest({col}) AS c FROM logs WHERE {{where}} AND {col} IS NOT NULL) "
        f"WHERE starts_with(c, '{category}:') AND split_part(c, ':', 2) <> 'safe' GROUP BY ALL ORDER BY t, s")


_TOKENS_IN_OUT = (
    f"SELECT t, s, v FROM (SELECT {BUCKET} AS t, sum({_q(M + 'processed_prompt_tokens.total')}) AS \"Prompt tokens\", "
    f"sum({_q(M + 'generated_tokens.total')}) AS \"Generated tokens\" FROM metrics WHERE {{where}} AND "
    f"({_q(M + 'processed_prompt_tokens.total')} IS NOT NULL OR {_q(M + 'generated_tokens.total')} IS NOT NULL) "
    f"GROUP BY 1) UNPIVOT (v FOR s IN (\"Prompt tokens\", \"Generated tokens\")) ORDER BY t, s")

_DEP_DIM = _q("azure.dimensions.model_deployment_name")
_MODEL_DIM = _q("azure.dimensions.model_name")
_CF = '"aoai.content_filter.filtered"'

OVERVIEW = Dashboard("overview", "Overview", "Request rate, errors, throttling, token usage and latency of your Azure OpenAI deployments.", (
    Panel("total_requests", "Total requests", "Requests the service logged (RequestResponse records), one per API call.",
          "stat", "requests_1m", _stat("requests_1m", "coalesce(sum(n), 0)"), discover='azure.open_ai.category : "RequestResponse"'),
    Panel("total_tokens", "Total tokens", "Prompt + generated tokens (TokenTransaction metric).",
          "stat", "metrics", _stat("metrics", f"sum({_q(M + 'token_transaction.total')})"), unit="tokens"),
    Panel("total_errors", "Total errors", "Requests answered with HTTP status ≥ 400 (numeric status, not a string range).",
          "stat", "requests_1m", _stat("requests_1m", "coalesce(sum(n), 0)", '"aoai.status_code" >= 400'),
          discover='azure.open_ai.category : "RequestResponse" and aoai.status_code >= 400'),
    Panel("throttled", "Throttled (429)", "Requests rejected for rate or quota limits (HTTP 429).",
          "stat", "requests_1m", _stat("requests_1m", "coalesce(sum(n), 0)", '"aoai.status_code" = 429'),
          discover='azure.open_ai.category : "RequestResponse" and aoai.status_code : 429'),
    Panel("model_usage", "Model usage", "Requests per deployment (top 10).", "donut", "requests_1m",
          _donut("requests_1m", "sum(n)", '"aoai.deployment"', "true", 10)),
    Panel("request_rate", "Request rate by deployment", "Requests per interval (AzureOpenAIRequests metric), top 20 deployments.",
          "timeseries", "metrics", _series("metrics", f"sum({_q(M + 'requests.total')})", _DEP_DIM, f"{_q(M + 'requests.total')} IS NOT NULL", 20),
          width=3),
    Panel("error_rate", "Error rate by response code", "Failed requests per interval, by HTTP status (top 20).", "timeseries", "requests_1m",
          _series("requests_1m", "sum(n)", '"aoai.status_code"', '"aoai.status_code" >= 400', 20), width=2,
          discover='azure.open_ai.category : "RequestResponse" and aoai.status_code >= 400'),
    Panel("throttling", "Throttling (429) by deployment", "HTTP 429 responses per interval, by deployment.", "timeseries", "requests_1m",
          _series("requests_1m", "sum(n)", '"aoai.deployment"', '"aoai.status_code" = 429', 20), width=2,
          discover='azure.open_ai.category : "RequestResponse" and aoai.status_code : 429'),
    Panel("token_usage", "Token usage", "Processed prompt tokens vs generated completion tokens (metrics).", "timeseries", "metrics",
          _TOKENS_IN_OUT, unit="tokens", width=2),
    Panel("latency", "Chat completion latency by model", "Average request duration (ms, corrected when Azure logs a negative duration), by model.",
          "timeseries", "requests_1m", _series("requests_1m", "sum(dur_sum) / sum(dur_n)", '"aoai.model"',
                                               "\"aoai.operation\" IN ('ChatCompletions_Create', 'Completions_Create') AND dur_n > 0", 10,
                                               additive=False, weight="sum(dur_n)"),
          unit="ms", chart="line", width=2),
    Panel("cost_total", "Cost", "Estimated cost of the requests in the range (a request logged by APIM and by the "
          "service is counted once).", "stat", "logs",
          # One value per request: rows sharing a correlation id (GatewayLogs + GatewayLlmLogs of one call) count once.
          'SELECT sum(c) FROM (SELECT max("aoai.cost.total") AS c FROM logs WHERE {where} AND "aoai.cost.total" IS NOT NULL '
          'GROUP BY coalesce("azure.open_ai.correlation_id", CAST(id AS VARCHAR)))',
          unit="currency", requires=("aoai.cost.total",)),
))

PTU = Dashboard("ptu", "PTU deployments", "Provisioned throughput: responsiveness, active tokens, utilization and prompt-cache hits (PTU metrics).", (
    Panel("time_to_response", "Time to first response", "Average time to first response (ms) by model, top 5.", "timeseries", "metrics",
          _series("metrics", f"avg({_q(M + 'time_to_response.avg')})", _MODEL_DIM, f"{_q(M + 'time_to_response.avg')} IS NOT NULL", 5, additive=False),
          unit="ms", chart="line", width=2),
    Panel("active_tokens", "Active tokens", "Tokens processed minus cached tokens, by model (top 5).", "timeseries", "metrics",
          _series("metrics", f"sum({_q(M + 'active_tokens.total')})", _MODEL_DIM, f"{_q(M + 'active_tokens.total')} IS NOT NULL", 5),
          unit="tokens", width=2),
    Panel("utilization", "Provisioned utilization", "Peak PTU utilization (%) by model; at 100% calls are throttled (429).", "timeseries", "metrics",
          _series("metrics", f"max({_q(M + 'provisioned_managed_utilization_v2.avg')})", _MODEL_DIM,
                  f"{_q(M + 'provisioned_managed_utilization_v2.avg')} IS NOT NULL", 5, additive=False),
          unit="percent", chart="line", width=2),
    Panel("cache_match_rate", "Prompt cache match rate", "Average context-token cache match rate (%) by model, filtered on its own metric.",
          "timeseries", "metrics",
          _series("metrics", f"avg({_q(M + 'context_tokens_cache_match_rate.avg')})", _MODEL_DIM,
                  f"{_q(M + 'context_tokens_cache_match_rate.avg')} IS NOT NULL", 5, additive=False),
          unit="percent", chart="line", width=2),
))

_SEVERITY_PANELS = tuple(
    Panel(f"{side}_{cat}", f"{label} ({'prompt' if side == 'input' else 'completion'})",
          f"{'Prompts' if side == 'input' else 'Completions'} filtered for {label.lower()}, by severity.",
          "timeseries", "logs", _filtered_by_severity(side, cat),
          discover=f'aoai.content_filter.{side} : "{cat}:*"')
    for side in ("input", "output")
    for cat, label in (("self_harm", "Self-harm"), ("violence", "Violence"), ("sexual", "Sexual"), ("hate", "Hate")))

CONTENT_FILTERING = Dashboard("content", "Content filtering", "Requests blocked by the content filter: volume, latency, error codes, tokens, and prompt/completion categories by severity.", (
    Panel("cf_requests", "Filtered requests", "Requests whose prompt or completion the content filter blocked.", "stat", "logs",
          _stat("logs", "count(*)", f"{_CF}"), discover="aoai.content_filter.filtered : true"),
    Panel("cf_latency", "Average latency", "Average duration (ms) of filtered requests.", "stat", "logs",
          _stat("logs", 'avg("aoai.duration_ms")', _CF), unit="ms"),
    Panel("cf_tokens", "Tokens", "Total tokens of filtered requests.", "stat", "logs",
          _stat("logs", 'sum("aoai.tokens.total")', _CF), unit="tokens"),
    Panel("cf_error_codes", "Error codes", "Error codes of failed gateway requests (top 5).", "donut", "logs",
          _donut("logs", "count(*)", _q(CF_BODY + "error.code"), f"{_q(CF_BODY + 'error.code')} IS NOT NULL", 5)),
    *_SEVERITY_PANELS,
    Panel("cf_tokens_time", "Tokens of filtered requests", "Total tokens of filtered requests by model (top 10).", "timeseries", "logs",
          _series("logs", 'sum("aoai.tokens.total")', '"aoai.model"', _CF, 10), unit="tokens", width=2),
    Panel("cf_latency_time", "Latency of filtered requests", "Average duration (ms) of filtered requests by model (top 10).", "timeseries", "logs",
          _series("logs", 'avg("aoai.duration_ms")', '"aoai.model"', f'{_CF} AND "aoai.duration_ms" IS NOT NULL', 10, additive=False),
          unit="ms", chart="line", width=2),
))

COST = Dashboard("cost", "Cost", "Estimated cost (each request counted once, from the best token source) and token volumes per deployment (metrics).", (
    Panel("cost_prompt_tokens", "Prompt tokens", "Processed prompt tokens in the range.", "stat", "metrics",
          _stat("metrics", f"sum({_q(M + 'processed_prompt_tokens.total')})"), unit="tokens"),
    Panel("cost_generated_tokens", "Generated tokens", "Generated completion tokens in the range.", "stat", "metrics",
          _stat("metrics", f"sum({_q(M + 'generated_tokens.total')})"), unit="tokens"),
    Panel("cost_total_tokens", "Total tokens", "Prompt + generated tokens (TokenTransaction).", "stat", "metrics",
          _stat("metrics", f"sum({_q(M + 'token_transaction.total')})"), unit="tokens"),
    Panel("cost_share", "Token share by deployment", "Share of tokens per deployment (top 10).", "donut", "metrics",
          _donut("metrics", f"sum({_q(M + 'token_transaction.total')})", _DEP_DIM, f"{_q(M + 'token_transaction.total')} IS NOT NULL", 10)),
    Panel("cost_tokens_time", "Tokens by deployment", "Tokens per interval by deployment (top 10).", "timeseries", "metrics",
          _series("metrics", f"sum({_q(M + 'token_transaction.total')})", _DEP_DIM, f"{_q(M + 'token_transaction.total')} IS NOT NULL", 10),
          unit="tokens", width=4),
    # Cost itself comes from pricing/reports.py (/api/cost, shown above these panels): summing
    # aoai.cost.total over logs would count a request seen by APIM and by the service twice.
))

DASHBOARDS: dict[str, Dashboard] = {d.id: d for d in (OVERVIEW, PTU, CONTENT_FILTERING, COST)}

# Kusto examples of Microsoft's monitoring page (seed 004) and their SQL equivalents, plus a few useful ones.
SQL_EXAMPLES = (
    ("AzureDiagnostics | take 100 | project TimeGenerated, _ResourceId, Category, OperationName, DurationMs, ResultSignature, properties_s",
     'SELECT "@timestamp" AS TimeGenerated, "azure.resource.id" AS _ResourceId, "azure.open_ai.category" AS Category,\n'
     '       "azure.open_ai.operation_name" AS OperationName, "aoai.duration_ms" AS DurationMs,\n'
     '       "azure.open_ai.result_signature" AS ResultSignature, "event.original" AS properties_s\n'
     'FROM logs ORDER BY "@timestamp" DESC LIMIT 100'),
    ("AzureDiagnostics | take 100", 'SELECT * FROM logs ORDER BY "@timestamp" DESC LIMIT 100'),
    ("AzureMetrics | take 100 | project TimeGenerated, MetricName, Total, Count, TimeGrain, UnitName",
     'SELECT "@timestamp" AS TimeGenerated, "azure.metric_name" AS MetricName,\n'
     '       coalesce("azure.open_ai.requests.total", "azure.open_ai.token_transaction.total",\n'
     '                "azure.open_ai.processed_prompt_tokens.total", "azure.open_ai.generated_tokens.total") AS Total,\n'
     '       "azure.timegrain" AS TimeGrain\n'
     'FROM metrics ORDER BY "@timestamp" DESC LIMIT 100'),
    ("Requests, errors, throttling and p95 latency per deployment",
     'SELECT "aoai.deployment" AS deployment, count(*) AS requests,\n'
     '       count(*) FILTER (WHERE "aoai.status_code" >= 400) AS errors,\n'
     '       count(*) FILTER (WHERE "aoai.status_code" = 429) AS throttled,\n'
     '       round(quantile_cont("aoai.duration_ms", 0.95)) AS p95_ms\n'
     'FROM logs WHERE "azure.open_ai.category" = \'RequestResponse\'\nGROUP BY 1 ORDER BY 2 DESC'),
    ("Tokens per deployment per day (metrics)",
     'SELECT date_trunc(\'day\', "@timestamp") AS day, "azure.dimensions.model_deployment_name" AS deployment,\n'
     '       sum("azure.open_ai.processed_prompt_tokens.total") AS prompt, sum("azure.open_ai.generated_tokens.total") AS generated\n'
     'FROM metrics GROUP BY ALL ORDER BY 1, 2'),
)


def nice_bucket_ms(span_ms: int, target: int = 80) -> int:
    """A round interval giving about `target` buckets (never below one minute, the metrics' time grain)."""
    steps = [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800]
    want = max(span_ms / 1000 / target, 1)
    for s in steps:
        if s >= want:
            return s * 1000
    return steps[-1] * 1000
