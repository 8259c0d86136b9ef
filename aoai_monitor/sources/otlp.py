"""OTLP/HTTP receiver: applications' spans and GenAI metrics into the store (tables spans, app_metrics).

POST /v1/traces and /v1/metrics, protobuf (application/x-protobuf) or JSON (application/json), optionally
gzip (Content-Encoding: gzip); /v1/logs is accepted and ignored so an SDK exporting logs gets no errors.
With a token, requests need `Authorization: Bearer <token>` (OTEL_EXPORTER_OTLP_HEADERS=
"Authorization=Bearer%20<token>"). Worker processes decode requests; requests that wait together commit
together, and each is answered once its rows are committed; a span sent twice is stored once.

`create_otlp_app(store, token)` is the ASGI app, `run_otlp_receiver(...)` runs it inside `aoai-monitor
run`, and `aoai-monitor otlp` runs it alone. Span documents keep OpenTelemetry attribute names as keys,
so declared columns (schema "App traces") fill directly and the rest lands in `extra`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import time
import zlib
from collections import deque

import click
import orjson
import pyarrow as pa

from ..instrument._state import AZURE_HOST_SUFFIXES
from ..normalize.common import key_id
from ..store.duckdb_store import CommitResult, docs_to_arrow
from . import Workers

DEFAULT_PORT = 4318
DEFAULT_MAX_BODY = 32 * 1024 * 1024
AZURE_PROVIDER = "azure.ai.openai"
_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
_STATUS = ("unset", "ok", "error")
_TEMPORALITY = ("unspecified", "delta", "cumulative")
_RESOURCE_COLUMNS = {"service.name": "service.name", "service.version": "service.version",
                     "service.namespace": "service.namespace", "service.instance.id": "service.instance.id",
                     "deployment.environment": "deployment.environment",
                     "deployment.environment.name": "deployment.environment", "host.name": "host.name"}
# The seed's span attributes (Elastic APM shows them as numeric_labels.<name>); stored under that name.
SEED_LABELS = ("completion_count", "token_count", "prompt_tokens", "completion_tokens", "cost")
_SPAN_RESERVED = {"id", "extra", "@timestamp", "event.duration", "event.outcome", "event.ingested", "trace.id",
                  "span.id", "parent.id", "span.name", "span.kind", "span.status.code", "span.status.message",
                  "span.events", "resource.attributes", "otel.scope.name", "otel.scope.version", "aoai.source",
                  "aoai.duration_ms", "aoai.provider"}
_METRIC_RESERVED = {"id", "extra", "@timestamp", "event.ingested", "service.name", "service.version",
                    "otel.scope.name", "aoai.source"}


class OTLPDecodeError(ValueError):
    """The body is not an OTLP export request of the declared content type."""


# --- decoding: protobuf and JSON to the same plain tuples ------------------------------------------

def _pb_value(v):
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "array_value":
        return [_pb_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return None


def _pb_attrs(kvs) -> dict:
    return {kv.key: _pb_value(kv.value) for kv in kvs}


def _json_value(v: dict):
    if not isinstance(v, dict):
        return None
    for key, value in v.items():
        if key in ("stringValue", "string_value", "boolValue", "bool_value", "doubleValue", "double_value"):
            return float(value) if key.startswith("double") else value
        if key in ("intValue", "int_value"):
            return int(value)
        if key in ("arrayValue", "array_value"):
            return [_json_value(x) for x in (value or {}).get("values", [])]
        if key in ("kvlistValue", "kvlist_value"):
            return {kv["key"]: _json_value(kv.get("value")) for kv in (value or {}).get("values", [])}
        if key in ("bytesValue", "bytes_value"):
            return value
    return None


def _json_attrs(kvs) -> dict:
    return {kv["key"]: _json_value(kv.get("value")) for kv in kvs or ()}


def _g(d: dict, camel: str, snake: str, default=None):
    """OTLP/JSON uses lowerCamelCase; accept the protobuf field names too."""
    value = d.get(camel)
    if value is None:
        value = d.get(snake, default)
    return value


def _enum(value, names: tuple[str, ...]) -> int:
    """OTLP/JSON enums are integers; accept their names (SPAN_KIND_CLIENT, STATUS_CODE_ERROR) as well."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        tail = value.rsplit("_", 1)[-1].lower()
        return names.index(tail) if tail in names else 0
    return 0


def _parse_pb(message_cls, body: bytes):
    message = message_cls()
    try:
        message.ParseFromString(body)
    except Exception as exc:  # protobuf raises DecodeError (a Message error) on bad input
        raise OTLPDecodeError(f"not a valid protobuf {message_cls.__name__}: {exc}") from exc
    return message


def _parse_json(body: bytes) -> dict:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OTLPDecodeError(f"not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise OTLPDecodeError("an OTLP/JSON request is a JSON object")
    return obj


def _iter_spans(body: bytes, is_json: bool):
    """Yield (resource attrs, scope name, scope version, span tuple) for every span in an export request.

    span tuple = (trace_id hex, span_id hex, parent hex, name, kind, start ns, end ns, attrs, status code,
    status message, events [(name, time ns, attrs)]).
    """
    if is_json:
        for rs in _g(_parse_json(body), "resourceSpans", "resource_spans", []) or []:
            resource = _json_attrs((rs.get("resource") or {}).get("attributes"))
            for ss in _g(rs, "scopeSpans", "scope_spans", []) or []:
                scope = ss.get("scope") or {}
                for sp in ss.get("spans") or []:
                    status = sp.get("status") or {}
                    events = [(e.get("name", ""), int(_g(e, "timeUnixNano", "time_unix_nano", 0)), _json_attrs(e.get("attributes")))
                              for e in sp.get("events") or []]
                    yield resource, scope.get("name", ""), scope.get("version", ""), (
                        str(_g(sp, "traceId", "trace_id", "")).lower(), str(_g(sp, "spanId", "span_id", "")).lower(),
                        str(_g(sp, "parentSpanId", "parent_span_id", "") or "").lower(), sp.get("name", ""),
                        _enum(sp.get("kind", 0), _KINDS),
                        int(_g(sp, "startTimeUnixNano", "start_time_unix_nano", 0)),
                        int(_g(sp, "endTimeUnixNano", "end_time_unix_nano", 0)), _json_attrs(sp.get("attributes")),
                        _enum(status.get("code", 0), _STATUS), status.get("message", ""), events)
        return
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    for rs in _parse_pb(ExportTraceServiceRequest, body).resource_spans:
        resource = _pb_attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            name, version = ss.scope.name, ss.scope.version
            for sp in ss.spans:
                events = [(e.name, e.time_unix_nano, _pb_attrs(e.attributes)) for e in sp.events] if sp.events else []
                yield resource, name, version, (
                    sp.trace_id.hex(), sp.span_id.hex(), sp.parent_span_id.hex(), sp.name, sp.kind,
                    sp.start_time_unix_nano, sp.end_time_unix_nano, _pb_attrs(sp.attributes),
                    sp.status.code, sp.status.message, events)


# --- documents -------------------------------------------------------------------------------------

def _resource_fields(resource: dict) -> dict:
    out, rest = {}, {}
    for key, value in resource.items():
        column = _RESOURCE_COLUMNS.get(key)
        if column:
            out[column] = value if isinstance(value, str) else str(value)
        else:
            rest[key] = value
    if rest:
        out["resource.attributes"] = rest
    return out


def span_document(resource: dict, scope_name: str, scope_version: str, span: tuple, source: str) -> dict | None:
    """One span as a flat document, with the unified aoai.* fields filled from whichever attributes exist."""
    trace_id, span_id, parent, name, kind, start, end, attrs, status, message, events = span
    if len(trace_id) != 32 or len(span_id) != 16 or not start:
        return None
    duration = max(end - start, 0) if end else 0
    doc = {**resource, "@timestamp": start // 1_000_000, "event.duration": duration, "aoai.duration_ms": duration / 1e6,
           "trace.id": trace_id, "span.id": span_id, "span.name": name,
           "span.kind": _KINDS[kind] if 0 <= kind < len(_KINDS) else "unspecified",
           "span.status.code": _STATUS[status] if 0 <= status < 3 else "unset", "aoai.source": source,
           "id": key_id("span", trace_id, span_id)}
    if parent and parent != "0000000000000000":
        doc["parent.id"] = parent
    if message:
        doc["span.status.message"] = message
    if scope_name:
        doc["otel.scope.name"] = scope_name
    if scope_version:
        doc["otel.scope.version"] = scope_version
    if events:
        doc["span.events"] = [{"name": n, "time": t // 1_000_000, "attributes": a} for n, t, a in events]
    for key, value in attrs.items():
        if key in _SPAN_RESERVED:
            doc["attributes." + key] = value
        elif key in SEED_LABELS and isinstance(value, (int, float)):
            doc["numeric_labels." + key] = value
        else:
            doc[key] = value
    _unify(doc)
    return doc


def _unify(doc: dict) -> None:
    """Spans from other instrumentations (openai-v2 says provider openai, the seed sets bare names) get the
    same aoai.* fields as ours, so pages and the log join work for them too."""
    provider = doc.get("gen_ai.provider.name") or doc.get("gen_ai.system")
    address = doc.get("server.address")
    azure = provider in (AZURE_PROVIDER, "az.ai.openai") or (isinstance(address, str) and address.endswith(AZURE_HOST_SUFFIXES))
    if azure:
        doc["aoai.provider"] = AZURE_PROVIDER
    elif provider:
        doc["aoai.provider"] = provider
    if "aoai.deployment" not in doc and azure and isinstance(doc.get("gen_ai.request.model"), str):
        doc["aoai.deployment"] = doc["gen_ai.request.model"]
    if "aoai.model" not in doc and isinstance(doc.get("gen_ai.response.model"), str):
        doc["aoai.model"] = doc["gen_ai.response.model"]
    for src, dst in (("gen_ai.usage.input_tokens", "aoai.tokens.input"), ("gen_ai.usage.output_tokens", "aoai.tokens.output"),
                     ("gen_ai.usage.cache_read.input_tokens", "aoai.tokens.cached")):
        if dst not in doc and src in doc:
            doc[dst] = doc[src]
    if "aoai.tokens.total" not in doc and "aoai.tokens.input" in doc and not doc.get("aoai.tokens.estimated"):
        doc["aoai.tokens.total"] = doc["aoai.tokens.input"] + (doc.get("aoai.tokens.output") or 0)
    if "aoai.cost" not in doc and isinstance(doc.get("numeric_labels.cost"), (int, float)):
        doc["aoai.cost"] = doc["numeric_labels.cost"]
    status = doc.get("aoai.status_code", doc.get("http.response.status_code"))
    if isinstance(status, int):
        doc["aoai.status_code"] = status
    failed = doc["span.status.code"] == "error" or (isinstance(status, int) and status >= 400)
    doc["event.outcome"] = "failure" if failed else "success"


def decode_traces(body: bytes, is_json: bool, source: str = "otlp") -> tuple[list[dict], int]:
    """Export request → (span documents, spans rejected for missing ids or start time)."""
    docs, rejected = [], 0
    cache: dict[int, dict] = {}
    for resource, scope_name, scope_version, span in _iter_spans(body, is_json):
        fields = cache.get(id(resource))
        if fields is None:
            fields = cache[id(resource)] = _resource_fields(resource)
        doc = span_document(fields, scope_name, scope_version, span, source)
        if doc is None:
            rejected += 1
        else:
            docs.append(doc)
    return docs, rejected


def decode_metrics(body: bytes, is_json: bool, source: str = "otlp") -> tuple[list[dict], int]:
    """Export request → (one document per data point, points rejected for a missing time)."""
    docs, rejected = [], 0
    for resource, scope_name, metric, kind, temporality, point in (_iter_points_json(body) if is_json else _iter_points_pb(body)):
        attrs, start, ts, value, hist = point
        if not ts:
            rejected += 1
            continue
        res = _resource_fields(resource)
        doc = {"@timestamp": ts // 1_000_000, "metric.name": metric[0], "metric.unit": metric[1], "metric.type": kind,
               "metric.temporality": _TEMPORALITY[temporality] if 0 <= temporality < 3 else "unspecified",
               "aoai.source": source}
        for key in ("service.name", "service.version"):
            if key in res:
                doc[key] = res[key]
        if scope_name:
            doc["otel.scope.name"] = scope_name
        if start:
            doc["metric.start"] = start // 1_000_000
        if value is not None:
            doc["metric.value"] = value
        if hist is not None:
            count, total, bounds, counts, lo, hi = hist
            doc.update({"metric.count": count, "metric.sum": total})
            if bounds is not None:
                doc["metric.bucket_bounds"] = bounds
                doc["metric.bucket_counts"] = counts
            if lo is not None:
                doc["metric.min"] = lo
            if hi is not None:
                doc["metric.max"] = hi
        for key, v in attrs.items():
            doc[("attributes." + key) if key in _METRIC_RESERVED or key.startswith("metric.") else key] = v
        doc["id"] = key_id("metric", res.get("service.name"), res.get("service.instance.id"), scope_name, metric[0],
                           orjson.dumps(attrs, option=orjson.OPT_SORT_KEYS).decode(), start, ts)
        docs.append(doc)
    return docs, rejected


def _iter_points_pb(body: bytes):
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    for rm in _parse_pb(ExportMetricsServiceRequest, body).resource_metrics:
        resource = _pb_attrs(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is None:
                    continue
                data = getattr(m, kind)
                temporality = getattr(data, "aggregation_temporality", 0)
                for p in data.data_points:
                    base = (_pb_attrs(p.attributes), p.start_time_unix_nano, p.time_unix_nano)
                    if kind in ("gauge", "sum"):
                        value = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
                        point = (*base, value, None)
                    elif kind == "histogram":
                        point = (*base, None, (p.count, p.sum, list(p.explicit_bounds), list(p.bucket_counts),
                                               p.min if p.HasField("min") else None, p.max if p.HasField("max") else None))
                    else:  # exponential_histogram, summary: count and sum only
                        point = (*base, None, (p.count, p.sum, None, None, None, None))
                    yield resource, sm.scope.name, (m.name, m.unit), kind, temporality, point


def _iter_points_json(body: bytes):
    kinds = ("gauge", "sum", "histogram", "exponentialHistogram", "summary")
    for rm in _g(_parse_json(body), "resourceMetrics", "resource_metrics", []) or []:
        resource = _json_attrs((rm.get("resource") or {}).get("attributes"))
        for sm in _g(rm, "scopeMetrics", "scope_metrics", []) or []:
            scope_name = (sm.get("scope") or {}).get("name", "")
            for m in sm.get("metrics") or []:
                kind = next((k for k in kinds if k in m), None)
                if kind is None:
                    continue
                data = m[kind] or {}
                temporality = _enum(_g(data, "aggregationTemporality", "aggregation_temporality", 0), _TEMPORALITY)
                name = "exponential_histogram" if kind == "exponentialHistogram" else kind
                for p in _g(data, "dataPoints", "data_points", []) or []:
                    base = (_json_attrs(p.get("attributes")), int(_g(p, "startTimeUnixNano", "start_time_unix_nano", 0)),
                            int(_g(p, "timeUnixNano", "time_unix_nano", 0)))
                    if name in ("gauge", "sum"):
                        raw = _g(p, "asDouble", "as_double")
                        point = (*base, float(raw if raw is not None else _g(p, "asInt", "as_int", 0)), None)
                    else:
                        bounds = _g(p, "explicitBounds", "explicit_bounds") if name == "histogram" else None
                        counts = _g(p, "bucketCounts", "bucket_counts") if name == "histogram" else None
                        point = (*base, None, (int(p.get("count", 0)), float(p.get("sum", 0.0)),
                                               [float(b) for b in bounds] if bounds is not None else None,
                                               [int(c) for c in counts] if counts is not None else None,
                                               p.get("min"), p.get("max")))
                    yield resource, scope_name, (m.get("name", ""), m.get("unit", "")), name, temporality, point


# --- HTTP ------------------------------------------------------------------------------------------

def _gunzip(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise OTLPDecodeError(f"body is not valid gzip: {exc}") from exc
    if len(out) > limit or d.unconsumed_tail:
        raise _TooLarge()
    return out


class _TooLarge(Exception):
    pass


def _status_pb(code: int, message: str) -> bytes:
    """google.rpc.Status{code, message}, the error body OTLP/HTTP specifies, encoded by hand (two fields)."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b, n = n & 0x7F, n >> 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)
    text = message.encode()
    return b"\x08" + varint(code) + b"\x12" + varint(len(text)) + text


def prepare_export(path: str, body: bytes, is_json: bool, gzipped: bool, source: str, max_body: int):
    """One export request → (table, (Arrow rows, lo ms, hi ms) or None, rejected count). Pure: runs in a worker
    process. Raises OTLPDecodeError for a body that is not what its content type says, _TooLarge past max_body."""
    if gzipped:
        body = _gunzip(body, max_body)
    decode, table = (decode_traces, "spans") if path == "/v1/traces" else (decode_metrics, "app_metrics")
    docs, rejected = decode(body, is_json, source)
    return table, (docs_to_arrow(table, docs, 0) if docs else None), rejected


def default_workers() -> int:
    return max(1, (os.cpu_count() or 1) - 1) if (os.cpu_count() or 1) > 1 else 0


class _GroupWriter:
    """Requests that arrive together commit together: whatever waits when the store is free goes into one
    transaction (a commit's fixed cost is paid once, not per request). A request is answered only after
    the transaction holding its rows committed, so a sender retries anything not stored."""

    MAX_ROWS = 65_536

    def __init__(self, store, stats: dict):
        self.store, self.stats = store, stats
        self._queue: deque = deque()
        self._task: asyncio.Task | None = None

    async def write(self, table: str, rows: tuple) -> None:
        done = asyncio.get_running_loop().create_future()
        self._queue.append((table, rows, done))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        await done

    async def _run(self) -> None:
        while self._queue:
            group, count = [], 0
            while self._queue and (not group or count + self._queue[0][1][0].num_rows <= self.MAX_ROWS):
                item = self._queue.popleft()
                group.append(item)
                count += item[1][0].num_rows
            try:
                result = await asyncio.to_thread(_commit_parts, self.store, [(table, rows) for table, rows, _ in group])
            except Exception as exc:  # noqa: BLE001 - every request of the group answers 503 with the reason
                for _, _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for table, key in (("spans", "spans"), ("app_metrics", "metric_points")):
                self.stats[key] += result.stored.get(table, 0)
                self.stats["duplicates"] += result.duplicates.get(table, 0)
            for _, _, done in group:
                if not done.done():
                    done.set_result(None)


def _commit_parts(store, parts: list) -> CommitResult:
    by_table: dict[str, list] = {}
    for table, rows in parts:
        by_table.setdefault(table, []).append(rows)
    with store.transaction() as tx:
        for table, items in by_table.items():
            tx.insert_arrow(table, pa.concat_tables([t for t, _, _ in items], promote_options="default"),
                            min(lo for _, lo, _ in items), max(hi for _, _, hi in items))
    return tx.result


def create_otlp_app(store, token: str | None = None, *, max_body_bytes: int = DEFAULT_MAX_BODY, status: dict | None = None,
                    workers: int = 0):
    """The OTLP/HTTP receiver as an ASGI app. `status` (a dict) gets counters under status["otlp"].

    `workers` processes decode requests (0: a thread of this process does).
    """
    stats = {"requests": 0, "spans": 0, "metric_points": 0, "duplicates": 0, "rejected": 0, "errors": 0,
             "last_error": None, "last_received": None}
    if status is not None:
        status["otlp"] = stats
    # Decoding holds the GIL (~50 µs a span): in worker processes it runs beside this process's HTTP and store work.
    decoder = Workers(workers, "otlp", default_workers)
    writer = _GroupWriter(store, stats)
    expected = f"Bearer {token}".encode() if token else None

    async def respond(send, code: int, body: bytes, content_type: bytes, extra=()) -> None:
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *extra]})
        await send({"type": "http.response.body", "body": body})

    async def error(send, code: int, message: str, is_json: bool, extra=()) -> None:
        stats["errors"] += 1
        stats["last_error"] = message
        if is_json:
            await respond(send, code, orjson.dumps({"code": code, "message": message}), b"application/json", extra)
        else:
            await respond(send, code, _status_pb(code, message), b"application/x-protobuf", extra)

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        is_json = content_type == b"application/json"
        path = scope["path"].rstrip("/")
        if path not in ("/v1/traces", "/v1/metrics", "/v1/logs"):
            return await error(send, 404, f"no such path {path}; OTLP/HTTP paths are /v1/traces and /v1/metrics", is_json)
        if scope["method"] != "POST":
            return await error(send, 405, "use POST", is_json, [(b"allow", b"POST")])
        if expected is not None and not hmac.compare_digest(headers.get(b"authorization", b""), expected):
            return await error(send, 401, "missing or wrong token: send the header Authorization: Bearer <token>",
                               is_json, [(b"www-authenticate", b"Bearer")])
        if content_type not in (b"application/json", b"application/x-protobuf"):
            return await error(send, 415, "Content-Type must be application/x-protobuf or application/json", is_json)
        chunks, size = [], 0
        while True:
            message = await receive()
            part = message.get("body", b"")
            size += len(part)
            if size > max_body_bytes:
                return await error(send, 413, f"body larger than {max_body_bytes} bytes", is_json)
            chunks.append(part)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        stats["requests"] += 1
        stats["last_received"] = time.time()
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        remote = scope.get("client") or ("?", 0)
        source = f"otlp:{remote[0]}"
        if encoding not in (b"gzip", b"identity", b""):
            return await error(send, 415, "Content-Encoding must be gzip or none", is_json)
        if path == "/v1/logs":
            return await _ok(send, "logs", 0, is_json)
        try:
            table, rows, rejected = await decoder.run(prepare_export, path, body, is_json, encoding == b"gzip", source,
                                                      max_body_bytes)
        except OTLPDecodeError as exc:
            return await error(send, 400, str(exc), is_json)
        except _TooLarge:
            return await error(send, 413, f"decompressed body larger than {max_body_bytes} bytes", is_json)
        if rows is not None:
            try:
                await writer.write(table, rows)
            except Exception as exc:  # noqa: BLE001 - the sender retries on 503; the reason is in status
                return await error(send, 503, f"store error: {exc}", is_json, [(b"retry-after", b"5")])
        stats["rejected"] += rejected
        await _ok(send, table, rejected, is_json)

    async def _ok(send, table: str, rejected: int, is_json: bool) -> None:
        if is_json:
            body = {}
            if rejected:
                key = "rejectedSpans" if table == "spans" else "rejectedDataPoints"
                body = {"partialSuccess": {key: str(rejected), "errorMessage": "spans or points without ids or time"}}
            return await respond(send, 200, orjson.dumps(body), b"application/json")
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceResponse,
        )
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceResponse,
        )
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        if table == "spans":
            response = ExportTraceServiceResponse()
            if rejected:
                response.partial_success.rejected_spans = rejected
        elif table == "app_metrics":
            response = ExportMetricsServiceResponse()
            if rejected:
                response.partial_success.rejected_data_points = rejected
        else:
            response = ExportLogsServiceResponse()
        if rejected:
            response.partial_success.error_message = "spans or points without ids or time"
        await respond(send, 200, response.SerializeToString(), b"application/x-protobuf")

    app.start, app.close = decoder.start, decoder.close  # start and end the decoding workers
    return app


def _uvicorn_server(app, host: str, port: int, embedded: bool):
    import uvicorn

    class EmbeddedServer(uvicorn.Server):
        def capture_signals(self):  # signals belong to the caller: `run` (it sets stop_event) or otlp_command
            return contextlib.nullcontext()

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    return (EmbeddedServer if embedded else uvicorn.Server)(config)


async def run_otlp_receiver(config: dict, store, status: dict, stop_event) -> None:
    """Serve OTLP/HTTP until stop_event (asyncio.Event or threading.Event) is set.

    config: the receiver's section, keys host (127.0.0.1), port (4318; 0 = any free port), token (None),
    max_body_bytes, workers (decoding processes; default CPUs − 1, 0 = none). status["otlp"] gets the counters and the bound port.
    """
    workers = config.get("workers", default_workers())
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"[otlp] workers = {workers!r}: a whole number ≥ 0 (0 = decode in this process)")
    app = create_otlp_app(store, token=config.get("token"), status=status,
                          max_body_bytes=int(config.get("max_body_bytes", DEFAULT_MAX_BODY)), workers=workers)
    app.start()
    try:
        server = _uvicorn_server(app, config.get("host", "127.0.0.1"), int(config.get("port", DEFAULT_PORT)), embedded=True)
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            status["otlp"]["port"] = server.servers[0].sockets[0].getsockname()[1]
        while not stop_event.is_set() and not task.done():
            await asyncio.sleep(0.1)
        server.should_exit = True
        await task
    finally:
        app.close()


async def run(service, section: dict) -> None:
    """service.COMPONENTS adapter for the [otlp] section of `aoai-monitor run` (the token may be a config Secret)."""
    from ..config import reveal

    await run_otlp_receiver({k: reveal(v) for k, v in section.items()}, service.store, {}, service.stopping)


@click.command("otlp")
@click.option("--store", "store_path", default="aoai-monitor.duckdb", show_default=True, envvar="AOAI_MONITOR_STORE",
              help="DuckDB store file (env AOAI_MONITOR_STORE).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for all).")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="OTLP/HTTP port.")
@click.option("--token", default=None, envvar="AOAI_MONITOR_TOKEN",
              help="Require Authorization: Bearer <token> (env AOAI_MONITOR_TOKEN).")
@click.option("--workers", default=None, type=click.IntRange(min=0),
              help="Processes that decode requests beside the one that stores them [default: CPUs − 1; 0 = none].")
def otlp_command(store_path: str, host: str, port: int, token: str | None, workers: int | None) -> None:
    """Receive OpenTelemetry traces and GenAI metrics over OTLP/HTTP into the store (tables spans, app_metrics).

    Point an application at it with OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:PORT (protobuf or JSON,
    gzip allowed). See docs/instrumentation.md.
    """
    from ..store import Store, StoreError

    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo("warning: listening beyond localhost without --token; anyone who reaches the port can write spans", err=True)
    try:
        store = Store(store_path)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"OTLP/HTTP receiver on http://{host}:{port} (/v1/traces, /v1/metrics) → {store_path}")
    with store:
        app = create_otlp_app(store, token=token, workers=default_workers() if workers is None else workers)
        try:
            asyncio.run(_serve_with_local_api(_uvicorn_server(app, host, port, embedded=True), store, store_path))
        finally:
            app.close()


async def _serve_with_local_api(server, store, store_path: str) -> None:
    """Serve the receiver and, as `aoai-monitor run` does (service_api), the local API through which `query`
    and `status` reach a store this process holds (DuckDB lets no other process open it meanwhile), until
    SIGINT or SIGTERM."""
    import signal

    from ..service_api import local_api

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C still ends the process
            loop.add_signal_handler(sig, setattr, server, "should_exit", True)
    status = {"service": {"pid": os.getpid(), "started_ms": int(time.time() * 1000), "store": store_path,
                          "inputs": ["otlp"]}, "partitions": {}}
    async with local_api(store, store_path, lambda: status):
        await server.serve()
