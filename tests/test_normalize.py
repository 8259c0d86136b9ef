"""Normalizer tests, table-driven from the reference samples and tests/fixtures.

Each case names a payload and the fields its documents must carry (values as Elastic's pipeline
produces them, or as documented where aoai-monitor deliberately differs).
"""

from __future__ import annotations

import gzip
from datetime import datetime, timezone

import pytest

from aoai_monitor.normalize import nest, normalize_payload
from aoai_monitor.normalize.common import parse_time_ms, snake_case
from tests.core_helpers import fixture, sample

SUB = "12cabcb4-86e8-404f-a3d2-1dc9982f45ca"
OPENAI_RID = f"/subscriptions/{SUB}/resourcegroups/obs-openai-service-rs/providers/microsoft.cognitiveservices/accounts/obs-openai-test-01"

# (payload loader, document index, expected fields)
CASES = [
    pytest.param(lambda: sample("elastic/test-open-ai-audit.log"), 0, {
        "@timestamp": parse_time_ms("2024-04-17T06:03:30.000Z"),
        "azure.open_ai.category": "Audit", "azure.open_ai.operation_name": "ListKey",
        "azure.open_ai.asset_identity": "07628fea-67bb-424d-b160-fdc46c82d0b4", "azure.open_ai.tenant": "eastus",
        "azure.open_ai.properties.object_id": "b610ab05-ce06-4cc1-a6dd-174b9f80468a",
        "azure.resource.id": OPENAI_RID, "azure.resource.group": "obs-openai-service-rs",
        "azure.resource.name": "obs-openai-test-01", "azure.resource.provider": "microsoft.cognitiveservices/accounts",
        "azure.subscription_id": SUB, "cloud.account.id": SUB, "cloud.provider": "azure",
        "data_stream.dataset": "azure_openai.logs", "event.duration": None, "event.outcome": None,
    }, id="audit"),
    pytest.param(lambda: sample("elastic/test-open-ai-request-response.log"), 0, {
        # Matches Elastic's logs_sample_event.json, except object_id "" (Elastic's final step drops empty values;
        # the sample predates that) and the subscription/cloud.account fields of Elastic's newer shared pipeline.
        "@timestamp": parse_time_ms("2024-04-08T12:23:02.435Z"),
        "azure.open_ai.caller_ip_address": "81.2.69.***", "azure.open_ai.category": "RequestResponse",
        "azure.open_ai.correlation_id": "9d3a6e98-fc11-48d0-82cf-4de065c1a1f8", "azure.open_ai.event": "ShoeboxCallResult",
        "azure.open_ai.location": "eastus", "azure.open_ai.operation_name": "Create_Thread",
        "azure.open_ai.properties.api_name": "Azure OpenAI API version 2024-02-15-preview",
        "azure.open_ai.properties.request_length": 2, "azure.open_ai.properties.request_time": 638481757794854611,
        "azure.open_ai.properties.response_length": 113, "azure.open_ai.properties.response_time": 638481757795877942,
        "azure.open_ai.properties.object_id": None, "azure.open_ai.result_signature": "200", "azure.open_ai.tenant": "eastus",
        "event.duration": 102_000_000, "azure.resource.id": OPENAI_RID,
        # aoai-monitor additions
        "aoai.status_code": 200, "event.outcome": "success", "aoai.api_version": "2024-02-15-preview",
        "aoai.duration_ms": 102.0, "aoai.operation": "Create_Thread",
    }, id="request-response-string-properties"),
    pytest.param(lambda: sample("elastic/test-open-ai-request-response.log"), 1, {
        "azure.open_ai.properties.model_deployment_name": "gpt-chat-pilot", "azure.open_ai.properties.model_name": "gpt-35-turbo",
        "azure.open_ai.properties.model_version": "0301", "azure.open_ai.properties.stream_type": "Non-Streaming",
        "event.duration": 1_021_000_000, "aoai.deployment": "gpt-chat-pilot", "aoai.model": "gpt-35-turbo",
        "aoai.model_version": "0301", "aoai.stream": False,
    }, id="request-response-object-properties"),
    pytest.param(lambda: sample("elastic/test-open-ai-gateway.log"), 0, {
        "azure.open_ai.category": "GatewayLogs", "azure.open_ai.deployment_version": "0.44.18652.0",
        "azure.open_ai.is_request_success": True, "azure.open_ai.sku": "Basic", "azure.open_ai.truncated": 0,
        "azure.open_ai.location": "East US", "log.level": "4", "source.ip": "89.160.20.156",
        "azure.open_ai.caller_ip_address": None, "event.outcome": "success", "azure.open_ai.result_type": None,
        "http.request.method": "POST", "http.response.status_code": 200, "event.duration": 176_000_000,
        "azure.open_ai.properties.backend_request_body.model": "gpt-chat-pilot",
        "azure.open_ai.properties.backend_request_body.messages": [{"role": "user", "content": "capital of tamilnadu?"}],
        "azure.open_ai.properties.backend_response_body.usage.input_tokens": 14,
        "azure.open_ai.properties.backend_response_body.usage.output_tokens": 8,
        "azure.open_ai.properties.backend_response_body.usage.total_tokens": 22,
        "azure.open_ai.properties.backend_response_body.content_filtered_categories": [{"category_name": "hate", "severity": "low"}],
        "azure.open_ai.properties.backend_response_body.system_fingerprint": None,
        "azure.open_ai.properties.request_length": 536, "azure.open_ai.properties.request_body": None,
        "azure.open_ai.properties.response_body": None,
        "url.domain": "azure-openai-apm.azure-api.net", "url.scheme": "https",
        "url.path": "/deployments/gpt-chat-pilot/chat/completions", "url.query": "api-version=2024-02-15-preview",
        "aoai.deployment": "gpt-chat-pilot", "aoai.model": "gpt-35-turbo", "aoai.tokens.input": 14,
        "aoai.tokens.output": 8, "aoai.tokens.total": 22, "aoai.status_code": 200,
        "aoai.content_filter.output": ["hate:low"], "aoai.content_filter.filtered": False,
        "aoai.api_version": "2024-02-15-preview",
    }, id="gateway-200-completion"),
    pytest.param(lambda: sample("elastic/test-open-ai-gateway.log"), 2, {
        "http.response.status_code": 400, "event.outcome": "failure",
        "azure.open_ai.properties.backend_response_body.error.code": "content_filter",
        "azure.open_ai.properties.backend_response_body.error.innererror.content_filtered_categories": [
            {"category_name": "violence", "severity": "medium"}],
        "azure.open_ai.properties.backend_response_body.error.innererror.content_filter_result.violence.severity": "medium",
        "azure.open_ai.properties.backend_response_body.error.innererror.content_filter_result.violence.filtered": True,
        "aoai.content_filter.input": ["violence:medium"], "aoai.content_filter.filtered": True,
    }, id="gateway-400-content-filter"),
    pytest.param(lambda: fixture("gateway_llm_logs.ndjson"), 0, {
        "azure.open_ai.category": "GatewayLlmLogs", "azure.open_ai.properties.deployment_name": "gpt-4o",
        "azure.open_ai.properties.prompt_tokens": 120, "azure.open_ai.properties.completion_tokens": 30,
        "azure.open_ai.properties.sequence_number": 0, "aoai.deployment": "gpt-4o", "aoai.model": "gpt-4o-2024-11-20",
        "aoai.tokens.input": 120, "aoai.tokens.output": 30, "aoai.tokens.total": 150, "aoai.tokens.cached": 64,
        "aoai.stream": True, "aoai.api_version": "2024-10-21", "data_stream.dataset": "azure_openai.logs",
    }, id="gateway-llm-logs-tokens"),
    pytest.param(lambda: fixture("gateway_llm_logs.ndjson"), 1, {
        "azure.open_ai.properties.sequence_number": 1,
        "azure.open_ai.properties.request_messages": [{"role": "user", "content": "<script>alert(1)</script> hello"}],
    }, id="gateway-llm-logs-message-chunk"),
    pytest.param(lambda: fixture("request_usage.ndjson"), 0, {
        "azure.open_ai.category": "AzureOpenAIRequestUsage", "aoai.deployment": "gpt-4o-mini", "aoai.model": "gpt-4o-mini",
        "aoai.tokens.input": 900, "aoai.tokens.output": 100, "aoai.tokens.total": 1000, "aoai.tokens.cached": 512,
        "aoai.status_code": 200, "event.duration": 812_000_000,
    }, id="request-usage"),
    pytest.param(lambda: sample("azure/storage-archive_insights-logs-requestresponse_PT1H.EXCERPT.jsonl"), 0, {
        "azure.open_ai.enqueue_time": "2025-11-04T02:03:59.9460000", "azure.open_ai.caller_ip_address": "20.236.11.***",
        "aoai.deployment": "gpt-4o", "event.duration": 11_830_000_000,
        "@timestamp": parse_time_ms("2025-11-04T02:03:59.991Z"),
    }, id="storage-archive-line"),
    pytest.param(lambda: sample("azure/otel-contrib_eventhub_testdata_log-maximum.json"), 0, {
        # Another service's category is kept (Elastic drops it), flagged by category; durationMs "1234" is a string.
        "data_stream.dataset": "azure.platformlogs", "azure.platformlogs.category": "AuditEvent",
        "azure.platformlogs.operation_name": "SecretGet", "event.duration": 1_234_000_000, "log.level": "Warning",
        "azure.platformlogs.properties": {"string": "string", "int": 429, "float": 3.14, "bool": False},
    }, id="other-category-kept"),
    pytest.param(lambda: sample("azure/msdocs_resource-logs_eventhub-envelope.sample.json"), 0, {
        "data_stream.dataset": "azure.platformlogs", "azure.platformlogs.category": "WorkflowRuntime",
    }, id="sub-resource-envelope"),
    pytest.param(lambda: sample("azure/malformed/functionapplogs_single-quotes_properties.elastic-integrations-5880.txt"), 0, {
        "azure.platformlogs.category": "FunctionAppLogs", "aoai.repairs": ["single_quotes"],
    }, id="quirk-single-quoted-properties"),
    pytest.param(lambda: sample("azure/malformed/postgresql-flex_blob-data-placeholder.elastic-beats-40641.EXCERPT.txt"), 0, {
        "azure.platformlogs.category": "PostgreSQLLogs", "azure.platformlogs.properties": "[ 227 B blob data ]",
        "aoai.repairs": ["placeholder", "salvaged"],
    }, id="quirk-placeholder-and-truncated-envelope"),
    pytest.param(lambda: fixture("quirks.txt"), 0, {
        "azure.platformlogs.properties": {"appName": "myapp", "message": 'say "hi"', "count": 3},
        "aoai.repairs": ["properties_single_quotes"],
    }, id="quirk-stringified-single-quotes"),
    pytest.param(lambda: fixture("raw_newline_envelope.json"), 0, {
        "azure.platformlogs.properties": {"message": "line one\nline two\ttabbed"}, "aoai.repairs": ["control_characters"],
    }, id="quirk-raw-newline"),
    pytest.param(lambda: gzip.compress(fixture("bare_array.json")), 1, {
        "azure.open_ai.properties.object_id": "b",
    }, id="gzip-bare-array"),
]


@pytest.mark.parametrize("load,index,expected", CASES)
def test_documents_carry_expected_fields(load, index, expected):
    result = normalize_payload(load(), "test")
    docs = result.logs + result.metrics
    assert len(docs) > index, result.rejects
    doc = docs[index]
    for field, value in expected.items():
        assert doc.get(field) == value, f"{field}: {doc.get(field)!r} != {value!r}"


ENVELOPES = [
    ("records envelope", lambda: sample("azure/otel-contrib_eventhub_testdata_log-maximum.json"), 1, 0),
    ("bare array", lambda: fixture("bare_array.json"), 2, 0),
    ("single object", lambda: sample("elastic/test-open-ai-audit.log"), 1, 0),
    ("ndjson", lambda: sample("elastic/test-open-ai-gateway.log"), 3, 0),
    ("ndjson of envelopes", lambda: b"\n".join([fixture("bare_array.json").replace(b"[", b'{"records":[', 1) + b"}"] * 2), 4, 0),
    ("gzip", lambda: gzip.compress(sample("elastic/test-open-ai-request-response.log")), 2, 0),
    ("truncated envelope", lambda: fixture("truncated_envelope.json"), 1, 1),
    ("ndjson with bad lines", lambda: fixture("ndjson_with_bad_lines.ndjson"), 1, 2),
    ("empty", lambda: b"  \n", 0, 0),
    ("scalar", lambda: b"42", 0, 1),
]


@pytest.mark.parametrize("name,load,docs,rejects", ENVELOPES, ids=[e[0] for e in ENVELOPES])
def test_envelope_forms(name, load, docs, rejects):
    result = normalize_payload(load(), "test")
    assert len(result.logs) + len(result.metrics) == docs
    assert len(result.rejects) == rejects
    assert result.records == docs + rejects


def test_rejects_carry_reason_and_raw():
    result = normalize_payload(fixture("ndjson_with_bad_lines.ndjson"), "src")
    reasons = {r[1].split(":")[0] for r in result.rejects}
    assert reasons == {"invalid JSON after repairs", "record has no valid time (time, TimeGenerated, EnqueueTime …)"}
    assert any(raw == "this line is not json at all" for _, _, raw in result.rejects)


def test_azure_metrics_records_become_metric_documents():
    result = normalize_payload(sample("azure/otel-contrib_eventhub_testdata_metrics.json"), "hub")
    assert len(result.metrics) == 1
    doc = result.metrics[0]
    # An Application Insights resource: generic azure.metrics.* naming (Metricbeat's rule), dataset azure.monitor.
    assert doc["azure.metrics.dependencies_per_duration.total"] == 12292.1382
    assert doc["azure.metrics.dependencies_per_duration.count"] == 23
    assert doc["data_stream.dataset"] == "azure.monitor"
    openai = dict(result.metrics[0])
    record = {"time": "2025-07-14T12:45:00.0000000Z", "metricName": "AzureOpenAIRequests", "timeGrain": "PT1M",
              "total": 7, "count": 7, "minimum": 1, "maximum": 1, "average": 1,
              "resourceId": "/SUBSCRIPTIONS/12CABCB4-86E8-404F-A3D2-1DC9982F45CA/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.COGNITIVESERVICES/ACCOUNTS/AOAI"}
    openai = normalize_payload(__import__("orjson").dumps({"records": [record]}), "hub").metrics[0]
    assert openai["azure.open_ai.requests.total"] == 7
    assert openai["data_stream.dataset"] == "azure.open_ai"
    assert openai["azure.resource.name"] == "aoai"


def test_negative_duration_is_recomputed_from_ticks():
    """elastic/integrations #9987: DALL-E records carry durationMs -1021; the ticks give the real duration."""
    record = (b'{"Tenant":"eastus","callerIpAddress":"81.2.69.***","category":"RequestResponse","correlationId":"d427a391",'
              b'"durationMs":-1021,"event":"ShoeboxCallResult","location":"eastus","operationName":"ImagesGenerations_Create",'
              b'"properties":{"apiName":"Azure OpenAI API version 2023-07-01-preview","requestTime":638515262815394150,'
              b'"responseTime":638515262825606520,"modelDeploymentName":"dall-e-3"},'
              b'"resourceId":"/SUBSCRIPTIONS/12CABCB4-86E8-404F-A3D2-1DC9982F45CA/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.COGNITIVESERVICES/ACCOUNTS/A",'
              b'"resultSignature":"200","time":"2024-05-24T12:23:02.4350000Z"}')
    doc = normalize_payload(record).logs[0]
    assert doc["aoai.duration_ms"] == pytest.approx(1021.237)
    assert doc["event.duration"] == 1_021_237_000
    assert doc["aoai.repairs"] == ["negative_duration"]


def test_same_record_same_id_across_envelopes_and_formatting():
    line = sample("azure/storage-archive_insights-logs-requestresponse_PT1H.EXCERPT.jsonl").splitlines()[0]
    import orjson

    record = orjson.loads(line)
    compact = orjson.dumps(record)
    envelope = orjson.dumps({"records": [record]})
    ids = {normalize_payload(p).logs[0]["id"] for p in (line, compact, envelope)}
    assert len(ids) == 1


def test_nest_builds_elastic_shape():
    doc = normalize_payload(sample("elastic/test-open-ai-audit.log")).logs[0]
    nested = nest(doc)
    assert nested["azure"]["open_ai"]["properties"]["object_id"] == "b610ab05-ce06-4cc1-a6dd-174b9f80468a"
    assert nested["azure"]["resource"]["name"] == "obs-openai-test-01"


@pytest.mark.parametrize("key,expected", [
    ("callerIpAddress", "caller_ip_address"), ("durationMs", "duration_ms"), ("AssetIdentity", "asset_identity"),
    ("DeploymentVersion", "deployment_version"), ("Sku", "sku"), ("isRequestSuccess", "is_request_success"),
    ("clientTlsCipherSuite", "client_tls_cipher_suite"), ("objectId", "object_id"),
    ("modelDeploymentName", "model_deployment_name"), ("requestTime", "request_time"),
])
def test_snake_case_matches_elastic_rule(key, expected):
    assert snake_case(key) == expected


@pytest.mark.parametrize("value,expected", [
    ("2024-07-02T06:31:31.4465902Z", 1719901891446),
    ("2025-11-04T02:03:59.9460000", 1762221839946),
    ("2024-04-17T06:03:30Z", 1713333810000),
    ("2024-04-17T08:03:30+02:00", 1713333810000),
    ("not a time", None), (12, None),
])
def test_time_parsing_truncates_to_milliseconds(value, expected):
    assert parse_time_ms(value) == expected


def test_time_parsing_remembers_a_bounded_number_of_seconds():
    """A long ingest sees ever new seconds: what parse_time_ms keeps of them stays bounded (and still right)."""
    from aoai_monitor.normalize import common

    start = 1_762_000_000
    for s in range(common._PREFIX_MS_MAX * 3):
        whole = datetime.fromtimestamp(start + s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        assert parse_time_ms(f"{whole}.1234567Z") == (start + s) * 1000 + 123
    assert len(common._PREFIX_MS) <= common._PREFIX_MS_MAX
