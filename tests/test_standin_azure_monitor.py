"""The Azure Monitor / ARM / Entra stand-in works with the real, unpatched Azure SDK clients.

Also records how the SDKs behave against it (retry policy, TLS trust, connection reuse) so product code
can rely on measured facts.  Run: ``python -m pytest tests/test_standin_azure_monitor.py -q``.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import ssl
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
from azure.core import PipelineClient
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.policies import BearerTokenCredentialPolicy, RetryPolicy
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import HttpRequest
from azure.identity import ClientSecretCredential
from azure.identity.aio import ClientSecretCredential as AsyncClientSecretCredential
from azure.mgmt.monitor import MonitorManagementClient
from azure.monitor.querymetrics import MetricsClient
from azure.monitor.querymetrics.aio import MetricsClient as AsyncMetricsClient

from tests.standins.azure_monitor import (
    ACCOUNT_TYPE,
    DEFAULT_SUBSCRIPTION_ID,
    METRIC_NAMESPACE,
    METRICS,
    SECOND_SUBSCRIPTION_ID,
    SyntheticModel,
    build_fleet,
    default_resources,
    expected_bucket_value,
    expected_value,
)
from tests.standins.azure_monitor_fixtures import (  # noqa: F401  (pytest fixtures)
    azure_monitor_server,
    azure_monitor_server_factory,
)

MAIN = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _window(minutes: int, *, lag: int = 10) -> tuple[datetime, datetime]:
    """[start, end) ending ``lag`` minutes ago, aligned to 5 minutes."""
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    end = now - timedelta(minutes=lag + now.minute % 5)
    return end - timedelta(minutes=minutes), end


def _eastus_ids(server) -> list[str]:
    return [r.id for r in server.model.accounts(DEFAULT_SUBSCRIPTION_ID, "eastus")
            if r.kind in ("OpenAI", "AIServices")]


def _metrics_client(server, region: str = "eastus", **kw) -> MetricsClient:
    return MetricsClient(server.metrics_endpoint(region), server.credential(), audience=server.metrics_audience,
                         connection_verify=server.ca_bundle_path, **kw)


def _series(result, metric: str) -> dict[tuple, list]:
    return {tuple(sorted(ts.metadata_values.items())): ts.data for ts in result.metrics[metric].timeseries}


def _rid(result) -> str:
    # MetricsQueryResult carries no resource id of its own: take it from a metric id.
    return result.metrics[0].id.split("/providers/Microsoft.Insights/metrics/")[0]


# ------------------------------------------------------------------------------------------------
# Entra ID
# ------------------------------------------------------------------------------------------------

def test_client_secret_credential_gets_tokens_with_audience(azure_monitor_server):
    s = azure_monitor_server
    cred = ClientSecretCredential(s.tenant_id, s.client_id, s.client_secret, authority=s.authority,
                                  disable_instance_discovery=True, connection_verify=s.ca_bundle_path)
    arm = cred.get_token(s.arm_scope)
    met = cred.get_token(s.metrics_scope)
    assert arm.expires_on > time.time() + 3000
    assert s.decode_token(arm.token)["aud"] == "https://management.azure.com"
    assert s.decode_token(met.token)["aud"] == "https://metrics.monitor.azure.com"
    assert s.decode_token(met.token)["appid"] == s.client_id
    # MSAL (sync credential) first reads the tenant's OpenID configuration, then posts to the token
    # endpoint; with disable_instance_discovery=True it never asks for instance discovery.
    kinds = [r.kind for r in s.requests()]
    assert kinds == ["openid", "token", "token"]
    assert s.requests()[0].path == f"/{s.tenant_id}/v2.0/.well-known/openid-configuration"
    form = s.requests("token")[0].body.decode()
    assert "grant_type=client_credentials" in form and "scope=https%3A%2F%2Fmanagement.azure.com%2F.default" in form
    # Cached: a second get_token for the same scope makes no request.
    cred.get_token(s.arm_scope)
    assert s.count("token") == 2


def test_credential_rejects_bad_secret_and_tenant(azure_monitor_server):
    s = azure_monitor_server
    bad = ClientSecretCredential(s.tenant_id, s.client_id, "wrong", authority=s.authority,
                                 disable_instance_discovery=True, connection_verify=s.ca_bundle_path)
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        bad.get_token(s.arm_scope)
    other = ClientSecretCredential("00000000-0000-0000-0000-000000000000", s.client_id, s.client_secret,
                                   authority=s.authority, disable_instance_discovery=True,
                                   connection_verify=s.ca_bundle_path)
    with pytest.raises(ClientAuthenticationError, match="AADSTS90002"):
        other.get_token(s.arm_scope)


@pytest.mark.asyncio
async def test_async_credential_posts_to_token_endpoint_directly(azure_monitor_server):
    s = azure_monitor_server
    async with AsyncClientSecretCredential(s.tenant_id, s.client_id, s.client_secret, authority=s.authority,
                                           disable_instance_discovery=True,
                                           connection_verify=s.ca_bundle_path) as cred:
        tok = await cred.get_token(s.metrics_scope)
    assert s.decode_token(tok.token)["aud"] == s.metrics_audience
    # The aio credential does not use MSAL's discovery: one POST, no openid request.
    assert [r.kind for r in s.requests()] == ["token"]


# ------------------------------------------------------------------------------------------------
# Batch metrics through azure.monitor.querymetrics.MetricsClient
# ------------------------------------------------------------------------------------------------

def test_metrics_client_keeps_endpoint_path_prefix_and_values_match(azure_monitor_server):
    s = azure_monitor_server
    ids = _eastus_ids(s)
    assert len(ids) == 3
    start, end = _window(15)
    names = ["AzureOpenAIRequests", "ProcessedPromptTokens", "GeneratedTokens", "TokenTransaction"]
    with _metrics_client(s) as mc:
        results = mc.query_resources(resource_ids=ids, metric_namespace=METRIC_NAMESPACE, metric_names=names,
                                     timespan=(start, end), granularity=timedelta(minutes=5),
                                     aggregations=["Total"], filter="ModelDeploymentName eq '*'", max_results=2)
    (rec,) = s.requests("batch")
    assert rec.path == f"/regions/eastus/subscriptions/{DEFAULT_SUBSCRIPTION_ID}/metrics:getBatch"
    assert rec.param("filter") == "ModelDeploymentName eq '*'" and rec.param("top") == "2"
    assert rec.json == {"resourceids": ids}
    assert rec.audience == "https://metrics.monitor.azure.com"
    headers = {k.lower() for k in rec.headers}
    assert "authorization" in headers
    assert len(results) == 3
    by_id = {_rid(r).lower(): r for r in results}
    checked = 0
    for rid in ids:
        res = by_id[rid.lower()]
        assert res.resource_region == "eastus"
        assert res.granularity == timedelta(minutes=5)
        assert res.namespace == METRIC_NAMESPACE
        # active OpenAI-format deployments (Phi-4 emits only the "Models" metrics, idle-mini nothing)
        deployments = [d for d in s.model.find(rid).deployments if d.traffic > 0 and d.model_format == "OpenAI"]
        for name in names:
            series = _series(res, name)
            # top=2 truncates per metric per resource (aoai-prod-eastus has three active deployments)
            assert len(series) == min(2, len(deployments)), (rid, name)
            for key, data in series.items():
                assert [k for k, _ in key] == ["modeldeploymentname"]  # lower-cased dimension names
                assert [p.timestamp for p in data] == [start + timedelta(minutes=5 * i) for i in range(3)]
                for p in data:
                    exp = expected_bucket_value(rid, name, dict(key), p.timestamp,
                                                p.timestamp + timedelta(minutes=5), "Total")
                    assert p.total == exp
                    checked += 1
    assert checked == 3 * 4 * (2 + 1 + 1)  # buckets x metrics x series (prod: top 2; dev, foundry: 1)
    # TokenTransaction = ProcessedPromptTokens + GeneratedTokens for every point.
    res = by_id[ids[0].lower()]
    for key, data in _series(res, "TokenTransaction").items():
        prompt, gen = _series(res, "ProcessedPromptTokens")[key], _series(res, "GeneratedTokens")[key]
        assert [p.total for p in data] == [a.total + b.total for a, b in zip(prompt, gen)]


def test_metrics_client_top_keeps_largest_series_and_minute_values(azure_monitor_server):
    s = azure_monitor_server
    rid = s.model.resource("aoai-prod-eastus").id
    start, end = _window(5)
    with _metrics_client(s) as mc:
        (res,) = mc.query_resources(resource_ids=[rid], metric_namespace=METRIC_NAMESPACE,
                                    metric_names=["AzureOpenAIRequests"], timespan=(start, end),
                                    granularity=timedelta(minutes=1), aggregations=["Total"],
                                    filter="ModelDeploymentName eq '*' and StatusCode eq '*'", max_results=4)
    series = _series(res, "AzureOpenAIRequests")
    assert len(series) == 4
    totals = {}
    for d in s.model.find(rid).deployments:
        for code in ("200", "429", "500"):
            dims = {"ModelDeploymentName": d.name, "StatusCode": code}
            totals[(("modeldeploymentname", d.name), ("statuscode", code))] = expected_bucket_value(
                rid, "AzureOpenAIRequests", dims, start, end, "Total")
    largest = sorted(totals, key=lambda k: (-totals[k], k))[:4]
    assert set(series) == set(largest)
    for key, data in series.items():
        assert len(data) == 5
        for p in data:
            assert p.total == expected_value(rid, "AzureOpenAIRequests", dict(key), p.timestamp, "Total")


def test_average_min_max_absent_and_total_zero_in_empty_intervals(azure_monitor_server):
    s = azure_monitor_server
    rid = s.model.resource("aoai-prod-eastus").id
    dims = {"ModelDeploymentName": "gpt-4o", "StatusCode": "500"}
    # StatusCode 500 is rare: the last 30 minutes with a latency for some (in a half hour with none, there is no
    # latency series at all, and the test failed at those times of day).
    start, end = next((start, end) for lag in range(10, 24 * 60, 5) for start, end in [_window(30, lag=lag)]
                      if any(expected_value(rid, "AzureOpenAITimeToResponse", dims, start + timedelta(minutes=m),
                                            "Average") is not None for m in range(30)))
    flt = "ModelDeploymentName eq 'gpt-4o' and StatusCode eq '500'"
    with _metrics_client(s) as mc:
        (tot,) = mc.query_resources(resource_ids=[rid], metric_namespace=METRIC_NAMESPACE,
                                    metric_names=["AzureOpenAIRequests"], timespan=(start, end),
                                    granularity=timedelta(minutes=1), aggregations=["Total"], filter=flt)
        (lat,) = mc.query_resources(resource_ids=[rid], metric_namespace=METRIC_NAMESPACE,
                                    metric_names=["AzureOpenAITimeToResponse"], timespan=(start, end),
                                    granularity=timedelta(minutes=1),
                                    aggregations=["Average", "Minimum", "Maximum"], filter=flt)
    (t_data,) = _series(tot, "AzureOpenAIRequests").values()
    (l_data,) = _series(lat, "AzureOpenAITimeToResponse").values()
    assert len(t_data) == len(l_data) == 30
    empty = [p for p in t_data if p.total == 0]
    assert empty, "StatusCode 500 is rare: some minutes must be empty"
    for p, q in zip(t_data, l_data):
        assert p.total == expected_value(rid, "AzureOpenAIRequests", dims, p.timestamp, "Total")
        for agg in ("Average", "Minimum", "Maximum"):
            exp = expected_value(rid, "AzureOpenAITimeToResponse", dims, q.timestamp, agg)
            got = getattr(q, agg.lower())
            assert got == (pytest.approx(exp) if exp is not None else None)
    # An empty minute: total 0 is present; average/min/max are absent (None), not zero.
    e = next(p.timestamp for p in t_data if p.total == 0
             and expected_value(rid, "AzureOpenAITimeToResponse", dims, p.timestamp, "Average") is None)
    q = next(q for q in l_data if q.timestamp == e)
    assert (q.average, q.minimum, q.maximum) == (None, None, None)
    assert q.total is None  # Total was not requested for this metric


def test_ptu_only_metric_is_empty_for_standard_deployments(azure_monitor_server):
    s = azure_monitor_server
    prod = s.model.resource("aoai-prod-eastus").id
    dev = s.model.resource("aoai-dev-eastus").id
    start, end = _window(10)
    with _metrics_client(s) as mc:
        split = mc.query_resources(resource_ids=[prod, dev], metric_namespace=METRIC_NAMESPACE,
                                   metric_names=["AzureOpenAIProvisionedManagedUtilizationV2"],
                                   timespan=(start, end), granularity=timedelta(minutes=5),
                                   aggregations=["Average", "Maximum"], filter="ModelDeploymentName eq '*'")
        whole = mc.query_resources(resource_ids=[dev], metric_namespace=METRIC_NAMESPACE,
                                   metric_names=["AzureOpenAIProvisionedManagedUtilizationV2"],
                                   timespan=(start, end), granularity=timedelta(minutes=5),
                                   aggregations=["Average"])
    by_id = {_rid(r).lower(): r for r in split}
    util = "AzureOpenAIProvisionedManagedUtilizationV2"
    assert list(_series(by_id[prod.lower()], util)) == [(("modeldeploymentname", "gpt-4o-ptu"),)]
    assert _series(by_id[dev.lower()], util) == {}  # standard deployments only: no series at all
    (only,) = whole[0].metrics[util].timeseries  # no filter: one series with nothing in it
    assert only.metadata_values == {} and [p.average for p in only.data] == [None, None]


def test_batch_limits_are_enforced(azure_monitor_server_factory):
    fleet = build_fleet(60, regions=("eastus",))
    s = azure_monitor_server_factory(SyntheticModel(default_resources() + fleet))
    start, end = _window(5)
    ids = [r.id for r in fleet]
    common = dict(metric_namespace=METRIC_NAMESPACE, timespan=(start, end), granularity=timedelta(minutes=5))
    with _metrics_client(s) as mc:
        with pytest.raises(HttpResponseError, match="maximum of 50") as e1:
            mc.query_resources(resource_ids=ids[:51], metric_names=["AzureOpenAIRequests"], **common)
        assert e1.value.status_code == 400
        assert len(mc.query_resources(resource_ids=ids[:50], metric_names=["AzureOpenAIRequests"], **common)) == 50
        names = list(METRICS)[:21]
        with pytest.raises(HttpResponseError, match="at most 20"):
            mc.query_resources(resource_ids=ids[:1], metric_names=names, **common)
        mc.query_resources(resource_ids=ids[:1], metric_names=names[:20], **common)
        sweden = s.model.resource("aoai-prod-swedencentral").id
        with pytest.raises(HttpResponseError, match="endpoint's region"):
            mc.query_resources(resource_ids=[ids[0], sweden], metric_names=["AzureOpenAIRequests"], **common)
        other_sub = s.model.resource("aoai-other-westeurope").id
        with pytest.raises(HttpResponseError, match="subscription"):
            mc.query_resources(resource_ids=[ids[0], other_sub], metric_names=["AzureOpenAIRequests"], **common)
        with pytest.raises(HttpResponseError, match="does not support requested dimension"):
            mc.query_resources(resource_ids=ids[:1], metric_names=["TokenTransaction"],
                               filter="StatusCode eq '*'", **common)
    # The same region path works when asked on the right "regional host".
    with _metrics_client(s, "swedencentral") as mc:
        (r,) = mc.query_resources(resource_ids=[sweden], metric_names=["AzureOpenAIRequests"], **common)
        assert r.resource_region == "swedencentral"
    # An ARM-audience token is refused by the batch endpoint.
    wrong = MetricsClient(s.metrics_endpoint("eastus"), s.credential(), audience=s.arm_audience,
                          connection_verify=s.ca_bundle_path)
    with wrong, pytest.raises(ClientAuthenticationError, match="InvalidAuthenticationTokenAudience"):
        wrong.query_resources(resource_ids=ids[:1], metric_names=["AzureOpenAIRequests"], **common)
    rec = s.requests("batch")[-1]
    assert rec.status == 401 and rec.audience == "https://management.azure.com"


def test_rate_limit_headers_on_batch(azure_monitor_server):
    s = azure_monitor_server
    start, end = _window(5)
    seen = {}
    with _metrics_client(s) as mc:
        mc.query_resources(resource_ids=_eastus_ids(s)[:1], metric_namespace=METRIC_NAMESPACE,
                           metric_names=["AzureOpenAIRequests"], timespan=(start, end),
                           raw_response_hook=lambda resp: seen.update(resp.http_response.headers))
    assert seen["X-Rate-Limit-Limit"] == "30s" and seen["X-Rate-Limit-Remaining"] == "2999"
    assert seen["Content-Type"] == "application/json; charset=utf-8"


# ------------------------------------------------------------------------------------------------
# SDK retry behaviour (azure-core RetryPolicy defaults: retry_total=10, retry_status=3,
# backoff 0.8 s x 2^(n-1) with the first retry immediate; getBatch is a POST)
# ------------------------------------------------------------------------------------------------

def _batch_once(s, mc) -> float:
    start, end = _window(5)
    t0 = time.monotonic()
    mc.query_resources(resource_ids=_eastus_ids(s)[:1], metric_namespace=METRIC_NAMESPACE,
                       metric_names=["AzureOpenAIRequests"], timespan=(start, end))
    return time.monotonic() - t0


def test_sdk_honours_retry_after_on_429(azure_monitor_server):
    s = azure_monitor_server
    with _metrics_client(s) as mc:
        mc._config.credential.get_token(s.metrics_scope)  # keep token acquisition out of the timing
        rule = s.inject("batch", 429, times=2, retry_after=1)
        elapsed = _batch_once(s, mc)
    statuses = [r.status for r in s.requests("batch")]
    assert statuses == [429, 429, 200] and rule.hits == 2
    gaps = [b.time - a.time for a, b in zip(s.requests("batch"), s.requests("batch")[1:])]
    assert all(0.95 <= g < 1.6 for g in gaps), gaps  # slept Retry-After (1 s) each time, no extra backoff
    assert 2.0 <= elapsed < 3.5


def test_sdk_gives_up_after_retry_status_limit_on_429(azure_monitor_server):
    s = azure_monitor_server
    with _metrics_client(s) as mc:
        s.inject("batch", 429, times=None, retry_after=0.2)
        with pytest.raises(HttpResponseError) as exc:
            _batch_once(s, mc)
    assert exc.value.status_code == 429
    assert s.count("batch") == 4  # 1 try + retry_status=3


def test_sdk_does_not_retry_post_429_without_retry_after(azure_monitor_server):
    s = azure_monitor_server
    with _metrics_client(s) as mc:
        s.inject("batch", 429, times=1)
        with pytest.raises(HttpResponseError) as exc:
            _batch_once(s, mc)
    assert exc.value.status_code == 429 and exc.value.error.code == "TooManyRequests"
    assert s.count("batch") == 1


def test_sdk_retries_503_and_500_with_backoff(azure_monitor_server):
    s = azure_monitor_server
    with _metrics_client(s) as mc:
        mc._config.credential.get_token(s.metrics_scope)
        s.inject("batch", 503, times=2)
        elapsed = _batch_once(s, mc)
        assert [r.status for r in s.requests("batch")] == [503, 503, 200]
        assert 1.5 <= elapsed < 2.6  # 0 s, then 1.6 s (0.8 * 2)
        s.reset_log()
        s.inject("batch", 500, times=1)  # the sporadic ArgumentOutOfRange of elastic/beats#41790
        elapsed = _batch_once(s, mc)
        assert [r.status for r in s.requests("batch")] == [500, 200]
        assert elapsed < 1.0  # first retry is immediate


def test_529_is_not_retried_for_post_unless_retry_after(azure_monitor_server):
    s = azure_monitor_server
    with _metrics_client(s) as mc:
        s.inject("batch", 529, times=1)
        with pytest.raises(HttpResponseError) as exc:
            _batch_once(s, mc)
        assert exc.value.status_code == 529 and s.count("batch") == 1
        s.reset_log()
        s.inject("batch", 529, times=1, retry_after=1)
        _batch_once(s, mc)
        assert [r.status for r in s.requests("batch")] == [529, 200]


def test_connection_reset_on_post_is_not_retried(azure_monitor_server):
    s = azure_monitor_server
    with _metrics_client(s) as mc:
        mc._config.credential.get_token(s.metrics_scope)
        s.inject("batch", None, action="reset")
        with pytest.raises((ServiceResponseError, ServiceRequestError)):
            _batch_once(s, mc)
        assert s.count("batch") == 1
        _batch_once(s, mc)  # the next call works again
        assert s.count("batch", status=200) == 1


def test_probabilistic_faults_are_reproducible(azure_monitor_server):
    s = azure_monitor_server
    rule = s.inject("batch", 503, times=None, probability=0.5, seed=42)
    pattern = []
    with _metrics_client(s, retry_total=0) as mc:
        for _ in range(12):
            try:
                _batch_once(s, mc)
                pattern.append(0)
            except HttpResponseError:
                pattern.append(1)
    import random

    rng = random.Random(42)
    assert pattern == [1 if rng.random() < 0.5 else 0 for _ in range(12)]
    assert rule.hits == sum(pattern) and 0 < rule.hits < 12


# ------------------------------------------------------------------------------------------------
# ARM: per-resource metrics, definitions, resource listing
# ------------------------------------------------------------------------------------------------

def test_arm_metrics_through_monitor_management_client(azure_monitor_server):
    s = azure_monitor_server
    rid = s.model.resource("aoai-prod-eastus").id
    start, end = _window(10)
    client = MonitorManagementClient(s.credential(), DEFAULT_SUBSCRIPTION_ID, base_url=s.arm_endpoint,
                                     credential_scopes=[s.arm_scope], connection_verify=s.ca_bundle_path)
    with client:
        resp = client.metrics.list(rid, timespan=f"{start:%Y-%m-%dT%H:%M:%SZ}/{end:%Y-%m-%dT%H:%M:%SZ}",
                                   interval="PT5M", metricnames="TokenTransaction,AzureOpenAIRequests",
                                   aggregation="Total", filter="ModelDeploymentName eq '*'", top=10,
                                   metricnamespace=METRIC_NAMESPACE)
        defs = {d.name.value: d for d in client.metric_definitions.list(rid, metricnamespace=METRIC_NAMESPACE)}
    assert resp.namespace == METRIC_NAMESPACE and resp.resourceregion == "eastus"
    assert resp.interval == "PT5M"  # a string in azure-mgmt-monitor 7.0.0
    assert [m.name.value for m in resp.value] == ["TokenTransaction", "AzureOpenAIRequests"]
    for m in resp.value:
        assert len(m.timeseries) == 3
        for ts in m.timeseries:
            (md,) = ts.metadatavalues
            assert md.name.value == "modeldeploymentname"
            for p in ts.data:
                assert p.total == expected_bucket_value(rid, m.name.value, {"ModelDeploymentName": md.value},
                                                        p.time_stamp, p.time_stamp + timedelta(minutes=5), "Total")
    assert defs["AzureOpenAITimeToResponse"].supported_aggregation_types == ["Average", "Minimum", "Maximum"]
    assert [d.value for d in defs["TokenTransaction"].dimensions] == [
        "ApiName", "ModelDeploymentName", "FeatureName", "UsageChannel", "Region", "ModelVersion"]
    rec = s.requests("arm_metrics")[0]
    assert rec.path == rid + "/providers/Microsoft.Insights/metrics" and rec.param("$filter")
    assert rec.audience == "https://management.azure.com"
    defs_rec = s.requests("arm_metric_definitions")[0]
    assert defs_rec.status == 200


def test_arm_requires_arm_audience(azure_monitor_server):
    s = azure_monitor_server
    client = MonitorManagementClient(s.credential(), DEFAULT_SUBSCRIPTION_ID, base_url=s.arm_endpoint,
                                     credential_scopes=[s.metrics_scope], connection_verify=s.ca_bundle_path)
    with client, pytest.raises(ClientAuthenticationError, match="InvalidAuthenticationTokenAudience"):
        list(client.metric_definitions.list(s.model.resource("aoai-prod-eastus").id))
    assert s.requests("arm_metric_definitions")[0].status == 401


@pytest.mark.parametrize("azure_monitor_server", [{"arm_page_size": 2}], indirect=True)
def test_resource_listing_through_azure_core_pipeline_with_paging(azure_monitor_server):
    s = azure_monitor_server
    cred = s.credential()
    pipeline = PipelineClient(base_url=s.arm_endpoint,
                              policies=[RetryPolicy(), BearerTokenCredentialPolicy(cred, s.arm_scope)],
                              connection_verify=s.ca_bundle_path)
    with pipeline:
        # PipelineClient.send_request does not join relative URLs with base_url: use format_url.
        url = pipeline.format_url(f"/subscriptions/{DEFAULT_SUBSCRIPTION_ID}/resources")
        req = HttpRequest("GET", url, params={"$filter": f"resourceType eq '{ACCOUNT_TYPE}'",
                                              "api-version": "2021-04-01"})
        items = []
        while True:
            resp = pipeline.send_request(req)
            resp.raise_for_status()
            body = resp.json()
            items += body["value"]
            if not body.get("nextLink"):
                break
            req = HttpRequest("GET", body["nextLink"])
        assert resp.headers["x-ms-ratelimit-remaining-subscription-reads"].isdigit()
        names = sorted(i["name"] for i in items)
        assert names == ["aoai-dev-eastus", "aoai-prod-eastus", "aoai-prod-swedencentral",
                         "foundry-hub-eastus", "lang-eastus"]
        assert s.count("arm_resources") == 3  # 5 items, 2 per page
        assert {i["kind"] for i in items} == {"OpenAI", "AIServices", "TextAnalytics"}
        rg = pipeline.send_request(HttpRequest(
            "GET",
            pipeline.format_url(f"/subscriptions/{DEFAULT_SUBSCRIPTION_ID}/resourceGroups/rg-aoai-prod/resources"),
            params={"api-version": "2021-04-01", "$filter": "tagName eq 'team' and tagValue eq 'search'"}))
        assert [i["name"] for i in rg.json()["value"]] == ["aoai-prod-eastus"]
        one = pipeline.send_request(HttpRequest("GET", pipeline.format_url(s.model.resource("aoai-prod-eastus").id),
                                                params={"api-version": "2024-10-01"})).json()
        assert one["properties"]["endpoint"] == "https://aoai-prod-eastus.openai.azure.com/"
        missing = pipeline.send_request(HttpRequest("GET", pipeline.format_url(one["id"] + "x"),
                                                    params={"api-version": "2024-10-01"}))
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "ResourceNotFound"


@pytest.mark.asyncio
async def test_resource_and_deployment_listing_with_plain_aiohttp(azure_monitor_server):
    s = azure_monitor_server
    ctx = ssl.create_default_context(cafile=s.ca_bundle_path)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        async with AsyncClientSecretCredential(s.tenant_id, s.client_id, s.client_secret, authority=s.authority,
                                               disable_instance_discovery=True,
                                               transport=AioHttpTransport(session=session,
                                                                          session_owner=False)) as cred:
            token = (await cred.get_token(s.arm_scope)).token
        hdrs = {"Authorization": f"Bearer {token}"}
        params = {"$filter": f"resourceType eq '{ACCOUNT_TYPE}'", "api-version": "2021-04-01"}
        async with session.get(f"{s.arm_endpoint}/subscriptions/{DEFAULT_SUBSCRIPTION_ID}/resources",
                               params=params, headers=hdrs) as r:
            accounts = (await r.json())["value"]
        prod = next(a for a in accounts if a["name"] == "aoai-prod-eastus")
        async with session.get(f"{s.arm_endpoint}{prod['id']}/deployments",
                               params={"api-version": "2024-10-01"}, headers=hdrs) as r:
            deps = (await r.json())["value"]
        async with session.get(f"{s.arm_endpoint}/subscriptions/{DEFAULT_SUBSCRIPTION_ID}/resources",
                               params=params) as r:
            assert r.status == 401 and "WWW-Authenticate" in r.headers
    assert {(d["name"], d["sku"]["name"], d["sku"]["capacity"], d["properties"]["model"]["name"],
             d["properties"]["model"]["version"]) for d in deps} == {
        ("gpt-4o", "GlobalStandard", 450, "gpt-4o", "2024-11-20"),
        ("gpt-4o-ptu", "ProvisionedManaged", 100, "gpt-4o", "2024-08-06"),
        ("text-embedding-3-large", "Standard", 120, "text-embedding-3-large", "1")}


# ------------------------------------------------------------------------------------------------
# TLS trust for async clients, call counting, data model, CLI
# ------------------------------------------------------------------------------------------------

@pytest.mark.asyncio
async def test_async_metrics_client_ca_handling_and_connection_reuse(azure_monitor_server):
    s = azure_monitor_server
    ids = _eastus_ids(s)
    start, end = _window(5)
    kw = dict(resource_ids=ids, metric_namespace=METRIC_NAMESPACE, metric_names=["AzureOpenAIRequests"],
              timespan=(start, end), granularity=timedelta(minutes=5))
    # (a) connection_verify=<path>: works, but azure-core builds a new SSLContext per request, so aiohttp
    #     opens a new TLS connection for every call.
    async with AsyncClientSecretCredential(s.tenant_id, s.client_id, s.client_secret, authority=s.authority,
                                           disable_instance_discovery=True,
                                           connection_verify=s.ca_bundle_path) as cred:
        async with AsyncMetricsClient(s.metrics_endpoint("eastus"), cred, audience=s.metrics_audience,
                                      connection_verify=s.ca_bundle_path) as mc:
            await mc.query_resources(**kw)
            c0 = s.connections_accepted
            for _ in range(3):
                await mc.query_resources(**kw)
            per_path = s.connections_accepted - c0
    # (b) one SSLContext + one shared aiohttp session for every client: connections are reused.
    ctx = ssl.create_default_context(cafile=s.ca_bundle_path)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        async with AsyncClientSecretCredential(s.tenant_id, s.client_id, s.client_secret, authority=s.authority,
                                               disable_instance_discovery=True,
                                               transport=AioHttpTransport(session=session,
                                                                          session_owner=False)) as cred:
            async with AsyncMetricsClient(s.metrics_endpoint("eastus"), cred, audience=s.metrics_audience,
                                          transport=AioHttpTransport(session=session,
                                                                     session_owner=False)) as mc:
                await mc.query_resources(**kw)
                c0 = s.connections_accepted
                results = await asyncio.gather(*[mc.query_resources(**kw) for _ in range(3)])
                await mc.query_resources(**kw)
                shared = s.connections_accepted - c0
    assert per_path == 3
    assert shared <= 3 and all(len(r) == 3 for r in results)


def test_call_count_target_is_measurable(azure_monitor_server_factory):
    """Product target: batch calls per cycle <= ceil(resources/50) x ceil(metrics/20) per region."""
    fleet = build_fleet(120, regions=("eastus", "swedencentral"))
    s = azure_monitor_server_factory(SyntheticModel(fleet))
    names = [m.name for m in METRICS.values() if "Total" in m.aggregations and m.family in ("openai", "legacy")]
    assert len(names) == 22
    start, end = _window(1)
    s.reset_log()
    for region in ("eastus", "swedencentral"):
        ids = [r.id for r in s.model.accounts(DEFAULT_SUBSCRIPTION_ID, region)]
        with _metrics_client(s, region) as mc:
            for i in range(0, len(ids), 50):
                for j in range(0, len(names), 20):
                    res = mc.query_resources(resource_ids=ids[i:i + 50], metric_namespace=METRIC_NAMESPACE,
                                             metric_names=names[j:j + 20], timespan=(start, end),
                                             granularity=timedelta(minutes=1), aggregations=["Total"])
                    assert len(res) == len(ids[i:i + 50])
    target = math.ceil(60 / 50) * math.ceil(len(names) / 20)
    assert s.count("batch", region="eastus") == target
    assert s.counts_by_region() == {"eastus": target, "swedencentral": target}
    assert s.counts()["token"] == 2  # one credential per region in this test


def test_expected_value_is_a_pure_function_of_seed():
    rid = default_resources()[0].id
    minute = datetime(2025, 3, 1, 12, 34, tzinfo=timezone.utc)
    a = SyntheticModel(seed=1)
    b = SyntheticModel(seed=1)
    c = SyntheticModel(seed=2)
    dims = {"ModelDeploymentName": "gpt-4o"}
    va = [a.expected_value(rid, "ProcessedPromptTokens", dims, minute + timedelta(minutes=i), "Total")
          for i in range(30)]
    vb = [b.expected_value(rid, "ProcessedPromptTokens", dims, minute + timedelta(minutes=i), "Total")
          for i in range(30)]
    vc = [c.expected_value(rid, "ProcessedPromptTokens", dims, minute + timedelta(minutes=i), "Total")
          for i in range(30)]
    assert va == vb and va != vc and any(va)
    # Whole-resource value = sum over deployments for Total metrics.
    per_dep = sum(a.expected_value(rid, "GeneratedTokens", {"ModelDeploymentName": d.name}, minute, "Total")
                  for d in a.find(rid).deployments)
    assert a.expected_value(rid, "GeneratedTokens", {}, minute, "Total") == per_dep
    # Module-level function: model chosen by resource id (newest live model), or given explicitly.
    assert expected_value(rid, "GeneratedTokens", {}, minute, "Total", model=a) == per_dep


def test_ingestion_delay_hides_recent_minutes(azure_monitor_server_factory):
    now = datetime.now(timezone.utc).replace(second=30, microsecond=0)
    model = SyntheticModel(ingestion_delay=240, clock=lambda: now)
    s = azure_monitor_server_factory(model)
    rid = model.resource("aoai-prod-eastus").id
    start = now.replace(second=0) - timedelta(minutes=10)
    with _metrics_client(s) as mc:
        (res,) = mc.query_resources(resource_ids=[rid], metric_namespace=METRIC_NAMESPACE,
                                    metric_names=["AzureOpenAIRequests", "AzureOpenAITimeToResponse"],
                                    timespan=(start, now), granularity=timedelta(minutes=1),
                                    aggregations=["Total", "Average"])
    reqs = res.metrics["AzureOpenAIRequests"].timeseries[0].data
    lat = res.metrics["AzureOpenAITimeToResponse"].timeseries[0].data
    cutoff = now - timedelta(seconds=240 + 60)
    for p, q in zip(reqs, lat):
        if p.timestamp > cutoff:
            assert p.total == 0 and q.average is None  # not arrived yet
        else:
            assert p.total == expected_value(rid, "AzureOpenAIRequests", {}, p.timestamp, "Total") > 0
    assert sum(1 for p in reqs if p.timestamp > cutoff) == 4  # minutes mm-4 .. mm-1 (now = mm:30)
    assert expected_value(rid, "AzureOpenAIRequests", {}, reqs[-1].timestamp, "Total", as_of=now) == 0


def test_second_subscription_and_unknown_resource_in_batch(azure_monitor_server):
    s = azure_monitor_server
    other = s.model.resource("aoai-other-westeurope").id
    ghost = other.replace("aoai-other-westeurope", "deleted-account")
    start, end = _window(5)
    with _metrics_client(s, "westeurope") as mc:
        res = mc.query_resources(resource_ids=[other, ghost], metric_namespace=METRIC_NAMESPACE,
                                 metric_names=["AzureOpenAIRequests"], timespan=(start, end))
    assert s.requests("batch")[0].path.endswith(f"/subscriptions/{SECOND_SUBSCRIPTION_ID}/metrics:getBatch")
    assert len(res) == 2
    assert res[1].metrics["AzureOpenAIRequests"].timeseries == []


def test_module_runs_standalone():
    proc = subprocess.Popen([sys.executable, "-m", "tests.standins.azure_monitor", "--fleet", "3"], cwd=MAIN,
                            stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        while True:
            line = proc.stdout.readline()
            assert line, "server exited early"
            lines.append(line)
            if line.startswith("}"):
                break
        info = json.loads("".join(lines))
        assert info["metrics_endpoint_template"].endswith("/regions/{region}")
        cred = ClientSecretCredential(info["tenant_id"], info["client_id"], info["client_secret"],
                                      authority=info["authority"], disable_instance_discovery=True,
                                      connection_verify=info["ca_bundle_path"])
        assert cred.get_token(info["metrics_scope"]).token
    finally:
        proc.terminate()
        proc.wait(10)
