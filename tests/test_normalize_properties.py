"""Property tests: whatever bytes or records arrive, the normalizer never raises and loses nothing —
every record either becomes a document or a dead letter with a reason."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aoai_monitor.normalize import decode_line, normalize_payload
from aoai_monitor.normalize.decode import decode_parsed_line
from aoai_monitor.normalize.fastpath import extract, parse_lines
from aoai_monitor.store.duckdb_store import docs_to_arrow

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 63 - 1), st.floats(allow_nan=False),
                         st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)), max_leaves=12)

KEYS = ["time", "category", "resourceId", "operationName", "properties", "durationMs", "resultSignature",
        "callerIpAddress", "correlationId", "Level", "resultType", "metricName", "total", "average", "EnqueueTime"]
CATEGORIES = ["RequestResponse", "Audit", "GatewayLogs", "GatewayLlmLogs", "AzureOpenAIRequestUsage", "Other", ""]
TIMES = ["2025-01-01T00:00:00.1234567Z", "2025-01-01T00:00:00Z", "2025-01-01", "garbage", ""]

azureish = st.fixed_dictionaries(
    {"time": st.sampled_from(TIMES), "category": st.sampled_from(CATEGORIES)},
    optional={k: json_values for k in KEYS if k not in ("time", "category")}
    | {"properties": st.one_of(json_values, json_values.map(lambda v: orjson.dumps(v).decode()),
                               st.dictionaries(st.sampled_from(["backendRequestBody", "backendResponseBody", "url",
                                                                "responseCode", "requestTime", "responseTime",
                                                                "PromptTokens", "modelDeploymentName"]),
                                               st.one_of(json_scalars, json_values.map(lambda v: orjson.dumps(v).decode())),
                                               max_size=5)),
       "resourceId": st.sampled_from(["/SUBSCRIPTIONS/12CABCB4-86E8-404F-A3D2-1DC9982F45CA/RESOURCEGROUPS/R/PROVIDERS/A.B/C/D",
                                      "/subscriptions/x", "", "/providers/foo"])})


def _check(data: bytes) -> None:
    result = normalize_payload(data, "prop")
    assert result.records == len(result.logs) + len(result.metrics) + len(result.rejects)
    for source, reason, raw in result.rejects:
        assert reason and isinstance(raw, str)
    for table, docs in (("logs", result.logs), ("metrics", result.metrics)):
        for doc in docs:
            assert doc["id"] and isinstance(doc["@timestamp"], int)
        if docs:
            docs_to_arrow(table, docs, 0)  # every document also converts to the stored column types


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(azureish, max_size=4), st.sampled_from(["records", "array", "ndjson", "single"]))
def test_mutated_azure_records_normalize_or_dead_letter(records, form):
    if form == "records":
        data = orjson.dumps({"records": records})
    elif form == "array":
        data = orjson.dumps(records)
    elif form == "ndjson":
        data = b"\n".join(orjson.dumps(r) for r in records)
    else:
        data = orjson.dumps(records[0]) if records else b"{}"
    _check(data)
    lines = [orjson.dumps(r).decode() for r in records]
    table, leftovers = extract(lines)
    assert (table.num_rows if table is not None else 0) + len(leftovers) == len(lines)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data):
    _check(data)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_with_quotes_and_newlines_never_raises(text):
    _check(("{'records': [" + text + "]}").encode("utf-8", "surrogatepass"))


@settings(max_examples=200, deadline=None)
@given(st.one_of(azureish.map(lambda r: orjson.dumps(r).decode()), json_values.map(lambda v: orjson.dumps(v).decode()),
                 st.text(max_size=80)).map(lambda line: f" {line}\t"))
def test_a_line_parsed_once_decodes_as_decode_line_decodes_it(line):
    """The ingest parses each line once for the fast path and hands the value on (decode_parsed_line)."""
    value = parse_lines([line])[0]
    assert list(decode_parsed_line(value, line)) == list(decode_line(line.encode("utf-8", "surrogatepass")))
