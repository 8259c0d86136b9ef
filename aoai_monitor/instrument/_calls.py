"""One instrumented Azure OpenAI call: what the caller's thread notes, and what the finisher makes of it.

The wrappers (_patch.py) make a `Call` per request. A call asks the SDK for the raw response (the mechanism
`with_raw_response` uses), so the request-id headers are read without a second request, then parses it
exactly as the SDK would have; a stream carries its HTTP response already. On the caller's thread a call
only starts its span, keeps references to what it saw (headers, response, usage, error) and, when it ends,
queues itself; the finisher thread (_finisher.py) turns that into attributes, ends the span at the call's
end time and records the GenAI metrics (`finish`). Spans carry the GenAI convention names plus the Azure
facts that have none (aoai.*); the receiver derives the unified aoai.* store fields (deployment, model,
tokens, status) from the convention names, so they are not sent twice.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanKind, Status, StatusCode

from . import _finisher
from ._state import STATE, ClientInfo

RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"  # openai's own switch for with_raw_response
PROVIDER = "azure.ai.openai"
OPERATIONS = {  # kind → (gen_ai.operation.name, aoai.operation as the service logs name it)
    "chat": ("chat", "ChatCompletions_Create"),
    "responses": ("chat", "Responses_Create"),
    "embeddings": ("embeddings", "Embeddings_Create"),
}
_USAGE_CHUNK = {"stream_options": {"include_usage": True}}
_COMPLETIONS = itertools.count(1)  # the seed's completion_count: calls made by this process


def _given(value) -> bool:
    """openai uses NOT_GIVEN / Omit sentinels for absent arguments; both are falsy-typed classes."""
    return value is not None and type(value).__name__ not in ("NotGiven", "Omit")


class Call:
    __slots__ = (
        "attrs",
        "caller_raw",
        "chunks",
        "content",
        "deferred",
        "deployment",
        "end_ns",
        "end_perf_ns",
        "ended",
        "error",
        "first_ns",
        "hide_usage_chunk",
        "http",
        "info",
        "kind",
        "kwargs",
        "name",
        "parent",
        "raw",
        "response",
        "span",
        "start_ns",
        "start_time_ns",
        "stream",
        "token",
        "usage",
    )

    def __init__(self, kind: str, info: ClientInfo, kwargs: dict):
        self.kind = kind
        self.info = info
        self.start_ns = time.perf_counter_ns()
        self.start_time_ns = time.time_ns()
        model = kwargs.get("model")
        deployment = info.deployment or (model if isinstance(model, str) else None)
        self.deployment = deployment
        self.stream = kwargs.get("stream") is True  # kwargs: the wrapper's own dict (**kwargs), ours to change
        self.hide_usage_chunk = False
        if self.stream and kind == "chat" and STATE.options.stream_usage and info.stream_usage \
                and not _given(kwargs.get("stream_options")):
            extra_body = kwargs.get("extra_body")
            if not (isinstance(extra_body, dict) and "stream_options" in extra_body):
                # The caller did not ask for the usage chunk: ask for it and keep it from the caller (it has no
                # choices, which code written without it may not expect). Sent as extra_body, which reaches
                # the request body as is: as stream_options the SDK's parameter transform costs 30 µs more.
                kwargs["extra_body"] = {**extra_body, **_USAGE_CHUNK} if isinstance(extra_body, dict) else _USAGE_CHUNK
                self.hide_usage_chunk = True
        headers = kwargs.get("extra_headers")
        self.caller_raw = bool(headers) and RAW_RESPONSE_HEADER in headers
        # A stream carries its HTTP response (`Stream.response`); other calls need the raw response for it.
        if not self.caller_raw and not self.stream:
            kwargs["extra_headers"] = {**headers, RAW_RESPONSE_HEADER: "true"} if headers else {RAW_RESPONSE_HEADER: "true"}
        self.kwargs = kwargs
        self.attrs: dict = {}
        self.raw = self.http = self.response = self.usage = self.error = None
        self.first_ns = 0
        self.chunks = 0
        self.content: list[str] | None = [] if STATE.options.capture_content else None
        self.ended = False
        op = OPERATIONS[kind][0]
        self.name = name = f"{op} {deployment}" if deployment else op
        self.deferred = deferred = STATE.deferred_start
        if deferred is None:
            self.span = span = STATE.tracer.start_span(name, kind=SpanKind.CLIENT)
            self.token = otel_context.attach(trace.set_span_in_context(span))
        else:  # the span's context now, the SDK span when the call is finished (_span_start.py)
            self.parent = parent = otel_context.get_current()
            self.span = reserved = deferred.reserve(parent, name)
            self.token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(reserved), parent))
        if self.content is not None:
            # Now, not when the span ends: callers commonly append the reply to the same messages list.
            _capture_input(self.attrs, kind, kwargs)

    def detach(self) -> None:
        otel_context.detach(self.token)

    # --- outcomes (the caller's thread: keep references, decide nothing that can wait) -------------

    def result(self, raw: Any):
        """The SDK's return value for the caller; ends the call unless it is a stream."""
        self.detach()
        if self.caller_raw:
            self.http = raw.http_response
            if not self.stream and self.kwargs["extra_headers"][RAW_RESPONSE_HEADER] == "true":
                self.response = raw.parse()  # the SDK caches it: the caller's parse() gets the same object
            self.end()  # for a stream or a raw body the caller reads itself, headers are all we get
            return raw
        if self.stream:
            self.http = raw.response  # not the stream itself: it refers to this call
            return raw
        # Holding the raw response until the call is finished also frees it off the caller's path (~7 µs).
        self.raw = raw
        self.http = raw.http_response
        parsed = raw.parse()
        self.response = parsed
        self.end()
        return parsed

    def failed(self, exc: BaseException) -> None:
        self.detach()
        self.error = exc
        self.end()

    def chunk(self, chunk: Any) -> bool:
        """Record one streamed chat chunk; False when it is the usage chunk the caller did not ask for."""
        if chunk.model:
            self.response = chunk  # Azure's first chunk (prompt filter results) has no id nor model
        choices = chunk.choices
        for choice in choices:
            delta = choice.delta
            text = delta.content if delta is not None else None
            if text:
                if not self.first_ns:
                    self.first_ns = time.perf_counter_ns()
                self.chunks += 1
                if self.content is not None:
                    self.content.append(text)
            if choice.finish_reason:
                self.attrs.setdefault("gen_ai.response.finish_reasons", []).append(choice.finish_reason)
        usage = chunk.usage
        if usage is not None:
            self.usage = usage
            return not (self.hide_usage_chunk and not choices)
        return True

    def event(self, event: Any) -> None:
        """Record one Responses API stream event."""
        kind = event.type
        if kind == "response.output_text.delta":
            if not self.first_ns:
                self.first_ns = time.perf_counter_ns()
            self.chunks += 1
            if self.content is not None:
                self.content.append(event.delta)
        elif kind in ("response.completed", "response.incomplete", "response.failed", "response.created"):
            self.response = event.response

    def stream_failed(self, exc: BaseException) -> None:
        self.error = exc
        self.end()

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.end_perf_ns = time.perf_counter_ns()
        self.end_ns = time.time_ns()
        _finisher.submit(self)

    # --- finish (the finisher's thread) ------------------------------------------------------------

    def finish(self) -> None:
        """Everything the span and the metrics say about the ended call, then the span's end."""
        info, options = self.info, STATE.options
        op, aoai_op = OPERATIONS[self.kind]
        attrs = {
            "gen_ai.operation.name": op, "gen_ai.provider.name": PROVIDER, "aoai.operation": aoai_op,
            "server.address": info.host, "aoai.stream": self.stream,
        }
        if self.deployment:
            attrs["gen_ai.request.model"] = self.deployment
        if info.port:
            attrs["server.port"] = info.port
        if info.api_version:
            attrs["aoai.api_version"] = info.api_version
        kwargs = self.kwargs
        for arg, name in (("max_tokens", "gen_ai.request.max_tokens"), ("max_completion_tokens", "gen_ai.request.max_tokens"),
                          ("max_output_tokens", "gen_ai.request.max_tokens"), ("temperature", "gen_ai.request.temperature"),
                          ("top_p", "gen_ai.request.top_p")):
            value = kwargs.get(arg)
            if _given(value):
                attrs[name] = value
        attrs.update(self.attrs)  # captured input, streamed finish reasons
        self.attrs = attrs
        error = self.error
        http = self.http
        if http is not None:
            self._headers(http.headers)
            attrs["http.response.status_code"] = http.status_code
        if error is not None:
            self._failure(error)
        if self.response is not None:
            self._response(self.response)
        if "content_filter" in attrs.get("gen_ai.response.finish_reasons", ()):
            attrs["aoai.content_filter.filtered"] = True
        if self.usage is not None:
            self._usage(self.usage)
        seconds = (self.end_perf_ns - self.start_ns) / 1e9
        if self.stream:
            if self.first_ns:
                attrs["aoai.ttft_ms"] = (self.first_ns - self.start_ns) / 1e6
            if self.usage is None and self.chunks:
                # No usage from the service: count content chunks (about one token each on Azure OpenAI).
                # Not reported as gen_ai.usage.* nor in the token metric (the conventions forbid estimates there).
                attrs["aoai.tokens.output"] = self.chunks
                attrs["aoai.tokens.estimated"] = True
        if self.content:
            _capture_output(attrs, self.content)
        cost = None
        if self.usage is not None and STATE.pricer is not None:
            cost = _price(self.deployment, attrs)
            if cost is not None:
                attrs["aoai.cost"] = cost
        if options.elastic_apm_labels:
            # The seed's attribute names; Elastic APM shows numeric span attributes as numeric_labels.<name>.
            attrs["completion_count"] = next(_COMPLETIONS)
            for src, dst in (("aoai.tokens.total", "token_count"), ("gen_ai.usage.input_tokens", "prompt_tokens"),
                             ("gen_ai.usage.output_tokens", "completion_tokens")):
                if src in attrs:
                    attrs[dst] = attrs[src]
            if cost is not None:
                attrs["cost"] = cost
        span = self.span
        if self.deferred is not None:
            span = self.deferred.start(span, self.name, self.parent, self.start_time_ns)
            self.parent = None
        span.set_attributes(attrs)
        if error is not None:
            span.record_exception(error, timestamp=self.end_ns)
            span.set_status(Status(StatusCode.ERROR, str(error)[:500]))
        span.end(end_time=self.end_ns)
        self._metrics(seconds)
        self.raw = self.http = self.response = self.usage = self.error = None  # the finisher may outlive the caller's objects

    def _failure(self, exc: BaseException) -> None:
        attrs = self.attrs
        response = getattr(exc, "response", None)
        if response is not None and hasattr(response, "headers"):
            self._headers(response.headers)
        status = getattr(exc, "status_code", None)
        if status is not None:
            attrs["http.response.status_code"] = status
        body = getattr(exc, "body", None)
        if isinstance(body, dict) and body.get("code") == "content_filter":
            attrs["aoai.content_filter.filtered"] = True
        attrs["error.type"] = type(exc).__qualname__

    def _headers(self, headers) -> None:
        attrs = self.attrs
        apim = headers.get("apim-request-id")
        request_id = headers.get("x-request-id")
        region = headers.get("x-ms-region")
        if apim:
            attrs["aoai.apim_request_id"] = apim
        if request_id:
            attrs["aoai.request_id"] = request_id
        if apim or request_id:
            attrs["azure.service.request.id"] = apim or request_id
        if region:
            attrs["aoai.region"] = region

    def _response(self, resp: Any) -> None:
        attrs = self.attrs
        model = getattr(resp, "model", None)
        if model:
            attrs["gen_ai.response.model"] = model
        rid = getattr(resp, "id", None)
        if rid:
            attrs["gen_ai.response.id"] = rid
        if self.kind == "chat":
            if not self.stream:
                finish = [c.finish_reason for c in resp.choices if c.finish_reason]
                if finish:
                    attrs["gen_ai.response.finish_reasons"] = finish
                if self.content is not None:
                    self.content = [c.message.content or "" for c in resp.choices]
        elif self.kind == "responses":
            status = getattr(resp, "status", None)
            if status and status != "in_progress":
                attrs["gen_ai.response.finish_reasons"] = [status]
            incomplete = getattr(resp, "incomplete_details", None)
            if incomplete is not None and getattr(incomplete, "reason", None) == "content_filter":
                attrs["aoai.content_filter.filtered"] = True
            if self.content is not None and not self.stream:
                self.content = [resp.output_text]
            self.usage = self.usage or getattr(resp, "usage", None)
            return
        self.usage = self.usage or getattr(resp, "usage", None)

    def _usage(self, usage: Any) -> None:
        attrs = self.attrs
        if self.kind == "responses":
            inp, out = usage.input_tokens, usage.output_tokens
            cached = getattr(getattr(usage, "input_tokens_details", None), "cached_tokens", None)
            reasoning = getattr(getattr(usage, "output_tokens_details", None), "reasoning_tokens", None)
        else:
            inp, out = usage.prompt_tokens, getattr(usage, "completion_tokens", None)
            cached = getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", None)
            reasoning = getattr(getattr(usage, "completion_tokens_details", None), "reasoning_tokens", None)
        total = getattr(usage, "total_tokens", None)
        if inp is not None:
            attrs["gen_ai.usage.input_tokens"] = inp
        if out is not None:
            attrs["gen_ai.usage.output_tokens"] = out
        if total is not None:
            attrs["aoai.tokens.total"] = total
        if cached:
            attrs["gen_ai.usage.cache_read.input_tokens"] = cached
        if reasoning:
            attrs["gen_ai.usage.reasoning.output_tokens"] = reasoning

    def _metrics(self, seconds: float) -> None:
        attrs = self.attrs
        dims = {"gen_ai.operation.name": attrs["gen_ai.operation.name"], "gen_ai.provider.name": PROVIDER,
                "server.address": attrs["server.address"]}
        for name in ("gen_ai.request.model", "gen_ai.response.model", "server.port", "error.type"):
            value = attrs.get(name)
            if value is not None:
                dims[name] = value
        STATE.duration.record(seconds, dims)
        if self.first_ns:
            STATE.first_chunk.record((self.first_ns - self.start_ns) / 1e9, dims)
        if self.usage is not None:
            for token_type, name in (("input", "gen_ai.usage.input_tokens"), ("output", "gen_ai.usage.output_tokens")):
                value = attrs.get(name)
                if value is not None:
                    STATE.token_usage.record(value, {**dims, "gen_ai.token.type": token_type})


def _price(deployment: str | None, attrs: dict) -> float | None:
    """The single call into the pricing component (STATE.pricer); a pricing failure never fails the call."""
    try:
        return STATE.pricer(deployment=deployment, model=attrs.get("gen_ai.response.model"),
                            input_tokens=attrs.get("gen_ai.usage.input_tokens") or 0,
                            output_tokens=attrs.get("gen_ai.usage.output_tokens") or 0,
                            cached_tokens=attrs.get("gen_ai.usage.cache_read.input_tokens") or 0,
                            operation=attrs["aoai.operation"])
    except Exception:  # noqa: BLE001 - pricing is best effort; the span says "unpriced" by having no cost
        return None


def _capture_input(attrs: dict, kind: str, kwargs: dict) -> None:
    if kind == "chat":
        source = kwargs.get("messages")
    elif kind == "responses":
        source = kwargs.get("input")
        source = [{"role": "user", "content": source}] if isinstance(source, str) else source
        instructions = kwargs.get("instructions")
        if _given(instructions):
            source = [{"role": "system", "content": instructions}, *(source or [])]
    else:
        return
    if not _given(source):
        return
    messages = [_message(m) for m in source]
    messages = _redacted(messages, "input")
    if messages is not None:
        attrs["gen_ai.input.messages"] = orjson.dumps(messages, default=str).decode()


def _capture_output(attrs: dict, content: list[str]) -> None:
    if attrs["gen_ai.operation.name"] == "embeddings":
        return
    text = content if not attrs.get("aoai.stream") else ["".join(content)]
    finish = attrs.get("gen_ai.response.finish_reasons") or []
    messages = [{"role": "assistant", "parts": [{"type": "text", "content": t}],
                 **({"finish_reason": finish[i]} if i < len(finish) else {})} for i, t in enumerate(text)]
    messages = _redacted(messages, "output")
    if messages is not None:
        attrs["gen_ai.output.messages"] = orjson.dumps(messages, default=str).decode()


def _message(m: Any) -> dict:
    """A chat message (dict or SDK object) in the conventions' shape {role, parts: [{type, content}]}."""
    if not isinstance(m, dict):
        m = m.model_dump() if hasattr(m, "model_dump") else {"role": "user", "content": str(m)}
    content = m.get("content")
    if isinstance(content, list):
        parts = [{"type": "text", "content": p.get("text", "")} if isinstance(p, dict) and "text" in p
                 else {"type": str(p.get("type", "other")) if isinstance(p, dict) else "other"} for p in content]
    elif content is None:
        parts = []
    else:
        parts = [{"type": "text", "content": str(content)}]
    return {"role": m.get("role", "user"), "parts": parts}


def _redacted(messages: list[dict], direction: str) -> list[dict] | None:
    hook: Callable | None = STATE.options.redact
    if hook is None:
        return messages
    try:
        return hook(messages, direction)
    except Exception:  # noqa: BLE001 - a failing redaction hook must drop the content, never leak it
        return None
