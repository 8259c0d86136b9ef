"""OTLP/HTTP receiver (sources/otlp.py) over real HTTP, and the Traces page queries (query/traces.py).

The receiver runs through run_otlp_receiver (the service's entry) on a free port; payloads are OTLP/JSON
and protobuf bodies as SDKs send them, gzip included.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path

import orjson
import pytest

from aoai_monitor.normalize import normalize_record
from aoai_monitor.query import traces
from aoai_monitor.sources.otlp import run_otlp_receiver
from aoai_monitor.store import Store

TOKEN = "s3cret"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms


@contextlib.contextmanager
def running_receiver(store: Store, token: str | None = TOKEN, **settings):
    """run_otlp_receiver in its own thread and loop, as `aoai-monitor run` runs it; yields the base URL.

    Decoding runs in the default worker process (one on a 2-CPU machine) unless settings say workers=0."""
    status: dict = {}
    stop = threading.Event()
    config = {"port": 0, "token": token, **settings}
    thread = threading.Thread(target=lambda: asyncio.run(run_otlp_receiver(config, store, status, stop)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while "port" not in status.get("otlp", {}):
        assert time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{status['otlp']['port']}", status["otlp"]
    finally:
        stop.set()
        thread.join(10)


def post(url: str, body: bytes, content_type: str = "application/json", token: str | None = TOKEN,
         gzipped: bool = False) -> tuple[int, bytes]:
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers, method="POST"), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _kv(key, value):
    if isinstance(value, bool):
        v = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}
    elif isinstance(value, float):
        v = {"doubleValue": value}
    elif isinstance(value, list):
        v = {"arrayValue": {"values": [{"stringValue": x} for x in value]}}
    else:
        v = {"stringValue": value}
    return {"key": key, "value": v}


def json_span(span_id: str, start_ms: int, duration_ms: float, attrs: dict, service="shop", trace_id="ab" * 16,
              status_code: int | str = 0) -> dict:
    start = start_ms * 1_000_000
    return {"resourceSpans": [{"resource": {"attributes": [_kv("service.name", service), _kv("team", "payments")]},
                               "scopeSpans": [{"scope": {"name": "test", "version": "1"}, "spans": [{
                                   "traceId": trace_id, "spanId": span_id, "name": "chat dep", "kind": "SPAN_KIND_CLIENT",
                                   "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + int(duration_ms * 1e6)),
                                   "attributes": [_kv(k, v) for k, v in attrs.items()], "status": {"code": status_code}}]}]}]}


@pytest.fixture()
def store(tmp_path):
    with Store(tmp_path / "t.duckdb") as s:
        yield s


def test_json_gzip_span_from_another_instrumentation_gets_unified_fields(store):
    """openai-v2 says provider openai and the seed sets bare labels: the receiver still fills aoai.* so pages work."""
    attrs = {"gen_ai.system": "openai", "gen_ai.operation.name": "chat", "server.address": "acme.openai.azure.com",
             "gen_ai.request.model": "gpt4o-prod", "gen_ai.response.model": "gpt-4o-2024-08-06",
             "gen_ai.usage.input_tokens": 14, "gen_ai.usage.output_tokens": 8, "token_count": 22, "cost": 0.5,
             "gen_ai.response.finish_reasons": ["stop"], "http.response.status_code": 200}
    with running_receiver(store) as (url, stats):
        code, body = post(url + "/v1/traces", orjson.dumps(json_span("01" * 8, T0, 120.5, attrs)), gzipped=True)
    assert (code, orjson.loads(body)) == (200, {})
    row = store.cursor().execute(
        'SELECT "service.name", "span.kind", "aoai.provider", "aoai.deployment", "aoai.model", "aoai.tokens.total", '
        '"aoai.cost", "aoai.duration_ms", "event.outcome", "gen_ai.response.finish_reasons", "resource.attributes", '
        "extra->>'$.\"numeric_labels.token_count\"' FROM spans").fetchall()
    assert row == [("shop", "client", "azure.ai.openai", "gpt4o-prod", "gpt-4o-2024-08-06", 22, 0.5, 120.5, "success",
                    '["stop"]', '{"team":"payments"}', "22")]
    assert stats["spans"] == 1


def test_protobuf_duplicates_partial_success_and_errors(store):
    """A re-sent batch is stored once; a span without ids is reported as rejected; bad requests get 4xx."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "billing"
    spans = rs.scope_spans.add().spans
    for i in range(3):
        sp = spans.add(trace_id=bytes.fromhex("cd" * 16), span_id=bytes([i + 1] * 8), name=f"s{i}",
                       start_time_unix_nano=(T0 + i) * 1_000_000, end_time_unix_nano=(T0 + i + 5) * 1_000_000)
        a = sp.attributes.add()
        a.key, a.value.int_value = "aoai.tokens.input", 10 + i
    spans.add(name="no ids", start_time_unix_nano=T0 * 1_000_000)
    body = req.SerializeToString()
    with running_receiver(store) as (url, stats):
        code, raw = post(url + "/v1/traces", body, "application/x-protobuf")
        again, _ = post(url + "/v1/traces", body, "application/x-protobuf", gzipped=True)
        unauthorized, _ = post(url + "/v1/traces", body, "application/x-protobuf", token="wrong")
        no_token, _ = post(url + "/v1/traces", body, "application/x-protobuf", token=None)
        media, _ = post(url + "/v1/traces", body, "text/plain")
        broken, err = post(url + "/v1/traces", b"{not json", "application/json")
        missing, _ = post(url + "/v1/nothing", b"{}")
    response = ExportTraceServiceResponse()
    response.ParseFromString(raw)
    assert (code, again) == (200, 200)
    assert response.partial_success.rejected_spans == 1
    assert (unauthorized, no_token, media, broken, missing) == (401, 401, 415, 400, 404)
    assert "not valid JSON" in orjson.loads(err)["message"]
    assert store.cursor().execute('SELECT count(*), sum("aoai.tokens.input") FROM spans').fetchone() == (3, 33)
    assert (stats["spans"], stats["duplicates"], stats["rejected"]) == (3, 3, 2)


def test_json_histogram_metric_points(store):
    """GenAI metric points land in app_metrics with their buckets and dimensions."""
    payload = {"resourceMetrics": [{"resource": {"attributes": [_kv("service.name", "shop")]}, "scopeMetrics": [{
        "scope": {"name": "aoai_monitor.instrument"}, "metrics": [{
            "name": "gen_ai.client.token.usage", "unit": "{token}", "histogram": {
                "aggregationTemporality": 2, "dataPoints": [{
                    "attributes": [_kv("gen_ai.token.type", "input"), _kv("gen_ai.request.model", "dep")],
                    "startTimeUnixNano": str(T0 * 1_000_000), "timeUnixNano": str((T0 + 60_000) * 1_000_000),
                    "count": "2", "sum": 28, "bucketCounts": ["0", "0", "2", "0"], "explicitBounds": [1, 4, 16],
                    "min": 14, "max": 14}]}}]}]}]}
    with running_receiver(store) as (url, _):
        code, _ = post(url + "/v1/metrics", orjson.dumps(payload))
    assert code == 200
    assert store.cursor().execute(
        'SELECT "metric.name", "metric.temporality", "metric.count", "metric.sum", "metric.bucket_counts", '
        '"gen_ai.token.type", "gen_ai.request.model", "service.name" FROM app_metrics').fetchall() == [
        ("gen_ai.client.token.usage", "cumulative", 2, 28.0, "[0,0,2,0]", "input", "dep", "shop")]


def _gateway_log(ts_ms: int, correlation_id: str, deployment: str, response_id: str | None, duration_ms: int) -> dict:
    """An APIM GatewayLogs record as Azure writes it, normalized by the real normalizer."""
    from datetime import datetime

    props = {"method": "POST", "url": f"https://apim.example.net/openai/deployments/{deployment}/chat/completions",
             "backendUrl": f"https://acme.openai.azure.com/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21",
             "responseCode": 200, "backendResponseCode": 200, "backendTime": duration_ms - 5}
    if response_id:
        props["backendResponseBody"] = orjson.dumps({"id": response_id, "model": "gpt-4o-2024-08-06",
                                                     "usage": {"prompt_tokens": 14, "completion_tokens": 8, "total_tokens": 22}}).decode()
    record = {"time": datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
              "resourceId": "/SUBSCRIPTIONS/0000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/APIM",
              "category": "GatewayLogs", "operationName": "Microsoft.ApiManagement/GatewayLogs",
              "correlationId": correlation_id, "durationMs": duration_ms, "resultType": "Succeeded", "properties": props}
    table, doc = normalize_record(record, orjson.dumps(record).decode(), "test")
    assert table == "logs"
    return doc


def test_traces_queries_filters_panels_and_fallback_link(store):
    """List/filter, percentiles by service, and the deployment+time fallback link when no id matches."""
    docs = []
    from aoai_monitor.sources.otlp import decode_traces

    for i, (service, ms, ttft) in enumerate([("shop", 100.0, 20.0), ("shop", 300.0, 40.0), ("crm", 50.0, None)]):
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "azure.ai.openai", "aoai.deployment": "dep",
                 "aoai.tokens.input": 10, "aoai.tokens.output": 5, "aoai.cost": 0.25}
        if ttft is not None:
            attrs["aoai.ttft_ms"] = ttft
        spans, _ = decode_traces(orjson.dumps(json_span(f"{i + 1:016x}", T0 + i * 10_000, ms, attrs, service=service,
                                                        trace_id=f"{i + 1:032x}")), True)
        docs += spans
    store.commit(spans=docs)
    store.commit(logs=[_gateway_log(T0 + 20_400, "11111111-2222-3333-4444-555555555555", "dep", None, 40)])

    listed = traces.list_spans(store, service="shop", min_duration_ms=150)
    assert [s["span.id"] for s in listed] == [f"{2:016x}"]
    assert [s["service.name"] for s in traces.list_spans(store, name="CHAT")] == ["crm", "shop", "shop"]
    panels = {p["group"]: p for p in traces.app_panels(store, start_ms=T0, end_ms=T0 + 60_000)}
    assert (panels["shop"]["requests"], panels["shop"]["p50_ms"], panels["shop"]["ttft_p50_ms"]) == (2, 200.0, 30.0)
    assert (panels["crm"]["cost"], panels["shop"]["input_tokens"], panels["shop"]["unpriced"]) == (0.25, 20, 0)
    series = traces.app_timeseries(store, start_ms=T0, end_ms=T0 + 60_000, bucket_s=60)
    assert sorted((r["group"], r["requests"]) for r in series) == [("crm", 1), ("shop", 2)]
    detail = traces.span_detail(store, f"{3:016x}")
    assert (detail["link"], detail["service_ms"], detail["app_ms"]) == ("approximate", 40.0, 50.0)
    assert [s["span.id"] for s in traces.spans_for_log(store, detail["log"]["id"])] == [f"{3:016x}"]
    with pytest.raises(ValueError):
        traces.app_panels(store, start_ms=T0, end_ms=T0 + 1, group_by='"; DROP TABLE spans; --')


def test_cli_otlp_command_stores_spans(tmp_path):
    """`aoai-monitor otlp` runs the receiver without the service."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "cli.duckdb"
    proc = subprocess.Popen([sys.executable, "-m", "aoai_monitor.cli", "otlp", "--store", str(db), "--port", str(port),
                             "--token", TOKEN], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        body = orjson.dumps(json_span("0a" * 8, T0, 12.0, {"gen_ai.operation.name": "chat"}))
        deadline = time.monotonic() + 20
        while True:
            try:
                code, _ = post(f"http://127.0.0.1:{port}/v1/traces", body)
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read().decode()
                time.sleep(0.1)
        assert code == 200
        # The receiver holds the store; `query` asks it, as it asks `aoai-monitor run` (examples/README.md).
        query = subprocess.run([sys.executable, "-m", "aoai_monitor.cli", "query", "--store", str(db), "--format", "json",
                                'SELECT "span.name" FROM spans'], capture_output=True, timeout=60)
        assert query.returncode == 0, query.stderr.decode()
        assert [orjson.loads(line) for line in query.stdout.splitlines()] == [{"span.name": "chat dep"}]
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0, proc.stderr.read().decode()  # SIGTERM: a clean stop
    assert not Path(str(db) + ".service.json").exists()
    with Store(db, read_only=True) as s:
        assert s.cursor().execute('SELECT "span.name", "aoai.duration_ms" FROM spans').fetchall() == [("chat dep", 12.0)]


def _pb_spans(trace: int, count: int) -> tuple[bytes, list[str]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    ids = []
    for i in range(count):
        span_id = bytes([trace, i + 1]) + bytes(6)
        spans.add(trace_id=bytes([trace]) * 16, span_id=span_id, name="chat", start_time_unix_nano=(T0 + i) * 1_000_000,
                  end_time_unix_nano=(T0 + i + 5) * 1_000_000)
        ids.append(span_id.hex())
    return req.SerializeToString(), ids


@pytest.mark.parametrize("workers", [0, 1])
def test_concurrent_requests_are_answered_after_their_spans_are_committed(store, workers):
    """Requests that arrive together commit together; each 200 means its spans are queryable, re-sent ones
    are counted as duplicates."""
    requests = [_pb_spans(trace, 40) for trace in range(1, 13)]
    requests += requests[:4]  # sent twice
    seen_after_ok = []

    def send(request):
        body, ids = request
        code, _ = post(url + "/v1/traces", body, "application/x-protobuf")
        cur = store.cursor()
        seen = cur.execute('SELECT count(*) FROM spans WHERE "span.id" IN (SELECT unnest(?))', [ids]).fetchone()[0]
        seen_after_ok.append((code, seen == len(ids)))

    with running_receiver(store, workers=workers) as (url, stats):
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, requests))
    assert seen_after_ok == [(200, True)] * 16
    assert store.count("spans") == 12 * 40
    assert (stats["spans"], stats["duplicates"]) == (480, 160)


def test_store_failure_answers_503_and_a_retry_stores(store, monkeypatch):
    """The sender's retry is the buffer: a failing commit answers 503 with Retry-After and stores nothing."""
    from aoai_monitor.store import StoreError

    real = store.transaction
    failing = [True]

    def transaction():
        if failing[0]:
            raise StoreError("disk full (test)")
        return real()

    monkeypatch.setattr(store, "transaction", transaction)
    body, _ = _pb_spans(7, 5)
    with running_receiver(store, workers=0) as (url, stats):
        code, raw = post(url + "/v1/traces", body, "application/x-protobuf")
        assert code == 503 and b"disk full (test)" in raw and store.count("spans") == 0
        failing[0] = False
        assert post(url + "/v1/traces", body, "application/x-protobuf")[0] == 200
    assert store.count("spans") == 5 and stats["errors"] == 1 and stats["last_error"].startswith("store error")


def _worker_pids() -> list[int]:
    pids = []
    for children in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        pids += [int(p) for p in children.read_text().split()]
    return [p for p in pids if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def test_a_killed_decoding_worker_is_replaced_and_no_request_fails(store):
    body, _ = _pb_spans(8, 5)
    second, _ = _pb_spans(9, 5)
    third, _ = _pb_spans(10, 5)
    with running_receiver(store, workers=1) as (url, stats):
        assert post(url + "/v1/traces", body, "application/x-protobuf")[0] == 200
        workers = _worker_pids()
        assert len(workers) == 1
        os.kill(workers[0], signal.SIGKILL)
        time.sleep(0.5)
        assert post(url + "/v1/traces", second, "application/x-protobuf")[0] == 200
        deadline = time.monotonic() + 20
        while not (replaced := _worker_pids()):
            assert time.monotonic() < deadline, "no new decoding worker"
            time.sleep(0.1)
        assert post(url + "/v1/traces", third, "application/x-protobuf")[0] == 200
    assert store.count("spans") == 15
    assert workers[0] not in replaced


@pytest.mark.parametrize("workers", [0, 1])
def test_body_limits_hold_before_and_after_gunzip(store, workers):
    """413 for a body over max_body_bytes, and for a small gzip body that inflates past it (decoded in a
    worker process, the refusal still comes back as 413)."""
    limit = 64 * 1024
    with running_receiver(store, workers=workers, max_body_bytes=limit) as (url, stats):
        big, _ = post(url + "/v1/traces", b"{" + b" " * limit + b"}")
        bomb, err = post(url + "/v1/traces", b"{" + b" " * (limit * 4) + b"}", gzipped=True)
        fine, _ = post(url + "/v1/traces", orjson.dumps({"resourceSpans": []}), gzipped=True)
    assert (big, bomb, fine) == (413, 413, 200)
    assert "decompressed body larger" in orjson.loads(err)["message"]
    assert store.count("spans") == 0
