"""The KQL-like query bar: queries → rows on a real store filled through the real normalizer."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aoai_monitor.normalize import normalize_payload
from aoai_monitor.query.kql import KqlError, compile_kql
from aoai_monitor.store import Store

RID = "/SUBSCRIPTIONS/12CABCB4-86E8-404F-A3D2-1DC9982F45CA/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.COGNITIVESERVICES/ACCOUNTS/AOAI-EASTUS"
APIM = "/SUBSCRIPTIONS/12CABCB4-86E8-404F-A3D2-1DC9982F45CA/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/APIM"


def _rr(corr, deployment, status, time, duration, stream="Non-Streaming"):
    props = {"apiName": "Azure OpenAI API version 2024-10-21", "requestTime": 638978186277847539,
             "requestLength": 100, "responseTime": 638978186396151323, "responseLength": 500, "objectId": "",
             "streamType": stream, "modelDeploymentName": deployment, "modelName": deployment, "modelVersion": "1"}
    return {"callerIpAddress": "20.236.11.***", "category": "RequestResponse", "correlationId": corr,
            "durationMs": duration, "event": "ShoeboxCallResult", "location": "eastus",
            "operationName": "ChatCompletions_Create", "properties": orjson.dumps(props).decode(),
            "resourceId": RID, "resultSignature": str(status), "time": time, "Tenant": "eastus"}


def _gateway(corr, status, user_text, response):
    request = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": user_text}]}).decode()
    return {"DeploymentVersion": "0.47", "Level": 4, "Sku": "Basic", "callerIpAddress": "89.160.20.156",
            "category": "GatewayLogs", "correlationId": corr, "durationMs": 400, "isRequestSuccess": status < 400,
            "location": "East US", "operationName": "Microsoft.ApiManagement/GatewayLogs",
            "properties": {"backendRequestBody": request, "backendResponseBody": orjson.dumps(response).decode(),
                           "backendResponseCode": status, "responseCode": status, "method": "POST",
                           "backendUrl": "https://aoai-eastus.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
                           "url": "https://apim.azure-api.net/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"},
            "resourceId": APIM, "resultType": "Succeeded" if status < 400 else "Failed",
            "time": "2025-11-04T10:00:00.0000000Z", "truncated": 0}


_SAFE = {c: {"filtered": False, "severity": "safe"} for c in ("hate", "self_harm", "sexual", "violence")}
RECORDS = [
    _rr("rr-ok", "gpt-4o", 200, "2025-11-03T08:00:00.0000000Z", 900),
    _rr("rr-429", "gpt-4o-mini", 429, "2025-11-04T09:30:00.0000000Z", 12, "Streaming"),
    _rr("rr-500", "gpt-4o-ptu", 500, "2025-11-04T11:00:00.0000000Z", 5200),
    {"AssetIdentity": "07628fea-67bb-424d-b160-fdc46c82d0b4", "Tenant": "eastus", "category": "Audit",
     "operationName": "ListKey", "properties": {"objectId": "b610ab05"}, "resourceId": RID,
     "time": "2025-11-02T06:03:30.0000000Z", "customKey": "kept-in-extra"},
    _gateway("gw-ok", 200, "What is the capital of Tamil Nadu?", {
        "choices": [{"finish_reason": "stop", "index": 0, "message": {"role": "assistant", "content": "Chennai."},
                     "content_filter_results": {**_SAFE, "hate": {"filtered": True, "severity": "low"}}}],
        "model": "gpt-4o", "usage": {"prompt_tokens": 14, "completion_tokens": 8, "total_tokens": 22}}),
    _gateway("gw-cf", 400, "a violent request", {
        "error": {"code": "content_filter", "status": 400, "message": "filtered",
                  "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                      **_SAFE, "violence": {"filtered": True, "severity": "high"}}}}}),
]
ALL = {"rr-ok", "rr-429", "rr-500", "Audit", "gw-ok", "gw-cf"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("kql") / "kql.duckdb")
    out = normalize_payload(b"\n".join(orjson.dumps(r) for r in RECORDS), "test")
    assert not out.rejects and len(out.logs) == len(RECORDS)
    s.commit(logs=out.logs)
    yield s
    s.close()


@pytest.fixture(scope="module")
def columns(store):
    rows = store.cursor().execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'logs'").fetchall()
    return dict(rows)


NOW = datetime(2025, 11, 4, 12, 0, tzinfo=timezone.utc)


def run(store, columns, query):
    where, params = compile_kql(query, "logs", columns, now=NOW)
    rows = store.cursor().execute(
        f'SELECT coalesce("azure.open_ai.correlation_id", "azure.open_ai.category") FROM logs WHERE {where}',
        params).fetchall()
    return {r[0] for r in rows}


CASES = [
    ("", ALL),
    ("*", ALL),
    ("aoai.deployment:gpt-4o", {"rr-ok", "gw-ok", "gw-cf"}),
    ("aoai.deployment:GPT-4O", set()),  # exact values are case-sensitive (keyword semantics)
    ("aoai.deployment:gpt-4o*", {"rr-ok", "rr-429", "rr-500", "gw-ok", "gw-cf"}),
    ("aoai.deployment:GPT-4O-M*", {"rr-429"}),  # wildcards are case-insensitive
    ('aoai.deployment:"gpt-4o*"', set()),  # a star inside quotes is literal
    ("aoai.status_code >= 400", {"rr-429", "rr-500", "gw-cf"}),
    ("aoai.status_code:(429 or 500)", {"rr-429", "rr-500"}),
    ("aoai.status_code:(429 OR 500) and aoai.stream:true", {"rr-429"}),
    ("aoai.deployment:gpt-4o AND NOT azure.open_ai.category:GatewayLogs", {"rr-ok"}),
    ("not aoai.status_code >= 400", {"rr-ok", "Audit", "gw-ok"}),  # NOT also matches rows without the field
    ("aoai.status_code >= 400 or azure.open_ai.category:Audit and azure.open_ai.operation_name:ListKey",
     {"rr-429", "rr-500", "gw-cf", "Audit"}),  # AND binds tighter than OR
    ("(aoai.status_code >= 400 or azure.open_ai.category:Audit) and aoai.deployment:gpt-4o*", {"rr-429", "rr-500", "gw-cf"}),
    ("aoai.duration_ms > 1000 and aoai.duration_ms < 6000.5", {"rr-500"}),
    ("aoai.tokens.total:*", {"gw-ok"}),
    ("aoai.content_filter.input:violence\\:high", {"gw-cf"}),
    ("aoai.content_filter.output:hate*", {"gw-ok"}),
    ("aoai.content_filter.filtered:true", {"gw-cf"}),
    ("@timestamp >= 2025-11-04", {"rr-429", "rr-500", "gw-ok", "gw-cf"}),
    ("@timestamp:2025-11-03", {"rr-ok"}),
    ("@timestamp < 2025-11-03T08:00:00.001Z", {"rr-ok", "Audit"}),
    ("@timestamp > now-3h", {"rr-429", "rr-500", "gw-ok", "gw-cf"}),
    ("@timestamp > now-2h", {"rr-500"}),
    ("url.original:https://apim.azure-api.net/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
     {"gw-ok", "gw-cf"}),
    ('"capital of tamil"', {"gw-ok"}),  # free text: contains, case-insensitive, over event.original
    ("ShoeboxCallResult and gpt-4o-mini", {"rr-429"}),
    ("azure.open_ai.properties.backend_request_body.messages.content:*violent*", {"gw-cf"}),
    ("azure.open_ai.properties.backend_response_body.choices.message.content:Chennai.", {"gw-ok"}),
    ("azure.open_ai.properties.backend_response_body.choices.finish_reason:*", {"gw-ok"}),
    ("extra.azure.open_ai.custom_key:kept-in-extra", {"Audit"}),  # keys the schema lacks live in `extra`
    ("azure.open_ai.properties.backend_response_body.error.status >= 400", {"gw-cf"}),
]


@pytest.mark.parametrize("query,expected", CASES, ids=[c[0] or "<empty>" for c in CASES])
def test_queries_match_expected_rows(store, columns, query, expected):
    assert run(store, columns, query) == expected


@pytest.mark.parametrize("query,position,fragment", [
    ("deploymnt:gpt-4o", 0, "aoai.deployment"),
    ("aoai.status_code:abc", 17, "not a number"),
    ("aoai.deployment:(gpt-4o", 23, "')'"),
    ('aoai.deployment:"gpt', 16, "unterminated"),
    ("aoai.status_code >= ", 20, "expected a value"),
    ("aoai.stream:maybe", 12, "true or false"),
    ("@timestamp > yesterday", 13, "not a date"),
    ("aoai.status_code:4*", 17, "wildcards"),
    ("aoai.content_filter.input > a", 28, "ranges do not apply"),
    ("aoai.deployment = gpt-4o", 16, "field:value"),
    ("a and or b", 6, "expected a field"),
    ("(" * 100 + "x" + ")" * 100, 64, "nests deeper"),
])
def test_errors_carry_position_and_hint(columns, query, position, fragment):
    with pytest.raises(KqlError) as info:
        compile_kql(query, "logs", columns)
    assert info.value.position == position
    assert fragment in str(info.value)


@pytest.mark.parametrize("query", [
    "aoai.deployment:\"a' OR 1=1 --\"",
    "aoai.deployment:a'); DROP TABLE logs; --",
    "\"'; DELETE FROM logs; --\"",
    "aoai.deployment:(x or \"' OR ''='\")",
    "extra.a:\"b'); DROP TABLE logs; --\"",
    "azure.open_ai.properties.backend_request_body.messages.x\\\"y:1",
    "azure.open_ai.properties.backend_request_body.messages.x'y:1",
])
def test_injection_through_values_matches_nothing(store, columns, query):
    """Values are parameters: the text is compared, never executed (a refused query is as safe)."""
    try:
        assert run(store, columns, query) == set()
    except KqlError:
        pass
    assert store.count("logs") == len(RECORDS)


@pytest.mark.parametrize("query", [
    '"aoai.deployment":x',
    'aoai.deployment"; DROP TABLE logs; --:x',
    "x\" OR 1=1 --:a",
    "aoai.deployment\\\":x",
])
def test_injection_through_field_names_is_refused(store, columns, query):
    with pytest.raises(KqlError):
        compile_kql(query, "logs", columns)
    assert store.count("logs") == len(RECORDS)


_ALPHABET = st.sampled_from(list("ab:*()\"'\\<>=-. 1") + ["and ", " or ", "not ", "aoai.deployment", "aoai.status_code",
                                                           "@timestamp", "aoai.stream", "extra.", "tags", "now-1h",
                                                           "aoai.content_filter.input", "2025-11-04", "true"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=40), st.lists(_ALPHABET, max_size=12).map("".join)))
def test_any_input_compiles_and_runs_or_raises_kql_error(store, columns, text):
    try:
        where, params = compile_kql(text, "logs", columns)
    except KqlError:
        return
    store.cursor().execute(f"SELECT count(*) FROM logs WHERE {where}", params).fetchone()


def test_known_extra_keys_can_be_named_directly(store, columns):
    with pytest.raises(KqlError, match="unknown field"):
        compile_kql("azure.open_ai.custom_key:kept-in-extra", "logs", columns)
    where, params = compile_kql("azure.open_ai.custom_key:kept-in-extra", "logs", columns,
                                extra_keys={"azure.open_ai.custom_key"})
    assert store.cursor().execute(f"SELECT count(*) FROM logs WHERE {where}", params).fetchone()[0] == 1
