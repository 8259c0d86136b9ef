"""The demo generator: a small run through the real normalizer into a real store, checked with SQL."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from aoai_monitor import schema
from aoai_monitor.demo import generate_demo
from aoai_monitor.store import Store

END = datetime(2025, 11, 4, 23, 0, tzinfo=timezone.utc)  # 18:00 in eastus: the window covers a working day
ARGS = dict(end=END, days=0.5, seed=11, scale=0.25, progress=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("demo") / "demo.duckdb")
    summary = generate_demo(store, **ARGS)
    yield store, summary
    store.close()


def q(store, sql, params=()):
    return store.cursor().execute(sql, list(params)).fetchall()


def test_summary_and_nothing_dead_lettered(demo):
    store, summary = demo
    assert summary["dead_lettered"] == 0
    assert summary["logs"] == store.count("logs") > 1000
    assert summary["metrics"] == store.count("metrics") > 1000
    assert q(store, "SELECT count(*) FROM dead_letters") == [(0,)]


def test_every_category_and_both_regions(demo):
    store, _ = demo
    cats = {r[0] for r in q(store, 'SELECT DISTINCT "azure.open_ai.category" FROM logs')}
    assert cats == {"RequestResponse", "AzureOpenAIRequestUsage", "Audit", "GatewayLogs", "GatewayLlmLogs"}
    regions = {r[0] for r in q(store, 'SELECT DISTINCT "azure.open_ai.location" FROM logs WHERE "azure.open_ai.category" = ?',
                               ["RequestResponse"])}
    assert regions == {"eastus", "swedencentral"}
    assert {r[0] for r in q(store, 'SELECT DISTINCT "cloud.region" FROM metrics')} == {"eastus", "swedencentral"}
    assert len(q(store, 'SELECT DISTINCT "azure.subscription_id" FROM logs')) == 2


def test_raw_records_keep_azure_shapes(demo):
    store, _ = demo
    (raw,) = q(store, 'SELECT "event.original" FROM logs WHERE "azure.open_ai.category" = ? LIMIT 1', ["RequestResponse"])[0]
    assert '"properties":"{\\"apiName\\"' in raw  # properties as a JSON string, as storage archives carry it
    assert "/SUBSCRIPTIONS/" in raw and '"EnqueueTime"' in raw
    masked = q(store, 'SELECT count(*) FILTER (WHERE "azure.open_ai.caller_ip_address" LIKE ?), count(*) FROM logs '
                      'WHERE "azure.open_ai.category" = ?', ["%.*%", "RequestResponse"])[0]
    assert masked[0] == masked[1]
    # ticks → duration agree with durationMs, so no duration repair was needed
    assert q(store, "SELECT count(*) FROM logs WHERE list_contains(\"aoai.repairs\", 'negative_duration')") == [(0,)]


def test_ptu_429_burst_and_utilization(demo):
    store, _ = demo
    throttled = q(store, 'SELECT count(*) FROM logs WHERE "aoai.deployment" = ? AND "aoai.status_code" = 429 '
                         'AND "azure.open_ai.category" = ?', ["gpt-4o-ptu", "RequestResponse"])[0][0]
    assert throttled >= 20
    peak = q(store, 'SELECT max("azure.open_ai.provisioned_managed_utilization_v2.avg") FROM metrics '
                    'WHERE "azure.dimensions.model_deployment_name" = ?', ["gpt-4o-ptu"])[0][0]
    assert peak >= 100
    # PTU-only metrics only on the PTU deployment
    ptu_only = [m.azure_name for m in schema.METRICS if m.ptu_only]
    deployments = q(store, 'SELECT DISTINCT "azure.dimensions.model_deployment_name" FROM metrics '
                           'WHERE "azure.metric_name" IN (SELECT unnest(?))', [ptu_only])
    assert deployments == [("gpt-4o-ptu",)]


def test_latency_incident(demo):
    store, _ = demo
    worst = q(store, 'SELECT "azure.dimensions.model_deployment_name", max("azure.open_ai.time_to_response.avg") '
                     'FROM metrics GROUP BY 1 ORDER BY 2 DESC LIMIT 1')[0]
    assert worst[0] == "gpt-4o-mini" and worst[1] > 5000  # above Elastic's latency alert threshold


def test_content_filter_categories_on_both_sides(demo):
    store, _ = demo
    inputs = {r[0].split(":")[0] for r in q(store, 'SELECT DISTINCT unnest("aoai.content_filter.input") FROM logs')}
    outputs = {r[0].split(":")[0] for r in q(store, 'SELECT DISTINCT unnest("aoai.content_filter.output") FROM logs')}
    assert inputs == outputs == set(schema.CONTENT_FILTER_CATEGORIES)
    severities = {r[0].split(":")[1] for r in q(store, 'SELECT DISTINCT unnest(list_concat("aoai.content_filter.input", '
                                                       '"aoai.content_filter.output")) FROM logs')}
    assert len(severities) >= 2
    inner = q(store, 'SELECT count(*) FROM logs WHERE "azure.open_ai.properties.backend_response_body.error.innererror.code" = ?',
              ["ResponsibleAIPolicyViolation"])[0][0]
    assert inner >= 4
    rai = {r[0] for r in q(store, 'SELECT DISTINCT "azure.dimensions.text_type" FROM metrics WHERE "azure.metric_name" = ?',
                           ["RAIRejectedRequests"])}
    assert rai == {"Prompt", "Completion"}


def test_gateway_prompts_and_tokens(demo):
    store, _ = demo
    prompts = q(store, 'SELECT count(*) FROM logs WHERE "azure.open_ai.category" = ? AND '
                       'json_extract_string("azure.open_ai.properties.backend_request_body.messages", ?) IS NOT NULL',
                ["GatewayLogs", "$[1].content"])[0][0]
    assert prompts > 10
    llm = q(store, 'SELECT count(*) FILTER (WHERE "aoai.tokens.total" > 0), count(*) FILTER (WHERE '
                   '"azure.open_ai.properties.request_messages" IS NOT NULL) FROM logs WHERE "azure.open_ai.category" = ?',
            ["GatewayLlmLogs"])[0]
    assert llm[0] > 10 and llm[1] == llm[0]


def test_every_metric_present(demo):
    store, _ = demo
    present = {r[0] for r in q(store, 'SELECT DISTINCT "azure.metric_name" FROM metrics')}
    assert present == {m.azure_name for m in schema.METRICS}
    # every document carries the metric's primary aggregation field
    for m in schema.METRICS:
        column = f"azure.open_ai.{m.field}.{schema.AGG_SUFFIX[m.primary]}"
        missing = q(store, f'SELECT count(*) FROM metrics WHERE "azure.metric_name" = ? AND "{column}" IS NULL', [m.azure_name])
        assert missing == [(0,)], m.azure_name


def test_metrics_add_up_to_the_logs(demo):
    store, _ = demo
    rows = q(store, """
        WITH l AS (SELECT "azure.resource.name" AS r, "aoai.deployment" AS d, count(*) AS n, sum("aoai.tokens.total") AS t
                   FROM logs WHERE "azure.open_ai.category" = 'RequestResponse' GROUP BY 1, 2),
             u AS (SELECT "azure.resource.name" AS r, "aoai.deployment" AS d, sum("aoai.tokens.total") AS t
                   FROM logs WHERE "azure.open_ai.category" = 'AzureOpenAIRequestUsage' GROUP BY 1, 2),
             m AS (SELECT "azure.resource.name" AS r, "azure.dimensions.model_deployment_name" AS d,
                          sum("azure.open_ai.requests.total") FILTER (WHERE "azure.metric_name" = 'AzureOpenAIRequests') AS n,
                          sum("azure.open_ai.token_transaction.total") FILTER (WHERE "azure.metric_name" = 'TokenTransaction') AS t
                   FROM metrics GROUP BY 1, 2)
        SELECT l.r, l.d, l.n, m.n, u.t, m.t FROM l JOIN m USING (r, d) LEFT JOIN u USING (r, d)""")
    assert len(rows) == 8  # every deployment of the three accounts
    for r, d, log_n, metric_n, usage_tokens, metric_tokens in rows:
        assert log_n == metric_n, (r, d)
        assert metric_tokens >= usage_tokens  # metrics also count prompt tokens of filtered (400) requests


def test_same_seed_same_documents(demo, tmp_path):
    store, _ = demo
    with Store(tmp_path / "again.duckdb") as again:
        generate_demo(again, **ARGS)
        for table in ("logs", "metrics"):
            sql = f"SELECT list(id ORDER BY id) FROM {table}"
            assert q(again, sql) == q(store, sql), table
