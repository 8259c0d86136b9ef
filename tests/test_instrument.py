"""aoai_monitor.instrument end to end: the real openai client against a local Azure OpenAI REST stand-in,
instrumented, exporting OTLP/protobuf with the real SDK exporters to a real aoai-monitor receiver; then
what the store holds, the cost, and the link to a gateway log written for the same request."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aoai_monitor.instrument import instrument, uninstrument
from aoai_monitor.query import traces
from aoai_monitor.store import Store
from tests.standins.azure_openai_api import AzureOpenAIStandin
from tests.test_otlp_receiver import TOKEN, _gateway_log, running_receiver

API_VERSION = "2024-10-21"
PRICES = {"gpt-4o-2024-08-06": (2.5e-6, 1.25e-6, 10e-6)}  # USD per input, cached input, output token


def pricer(*, deployment, model, input_tokens, output_tokens, cached_tokens, operation):
    """Stands where the pricing component's price_request goes: (input − cached) × in + cached × cache + out × out."""
    if model not in PRICES:
        return None
    p_in, p_cached, p_out = PRICES[model]
    return (input_tokens - cached_tokens) * p_in + cached_tokens * p_cached + output_tokens * p_out


class Pipeline:
    def __init__(self, store: Store, url: str, api: AzureOpenAIStandin):
        self.store, self.api = store, api
        headers = {"Authorization": f"Bearer {TOKEN}"}
        resource = Resource.create({"service.name": "shop", "service.version": "1.2"})
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(f"{url}/v1/traces", headers=headers)))
        self.reader = PeriodicExportingMetricReader(OTLPMetricExporter(f"{url}/v1/metrics", headers=headers),
                                                    export_interval_millis=3_600_000)
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[self.reader])

    def instrument(self, **options):
        instrument(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, pricer=pricer, **options)

    def client(self, api_version: str = API_VERSION, cls=openai.AzureOpenAI):
        return cls(azure_endpoint=self.api.endpoint, api_key="test-key", api_version=api_version, max_retries=0)

    def flush(self) -> None:
        assert self.tracer_provider.force_flush(10_000)
        assert self.meter_provider.force_flush(10_000)

    def spans(self) -> dict[str, dict]:
        """Stored spans by span name + operation + outcome order of arrival is not stable, so by response id."""
        return {s["span.id"]: traces.get_span(self.store, s["span.id"]) for s in traces.list_spans(self.store, limit=1000)}


@pytest.fixture()
def pipeline(tmp_path):
    with Store(tmp_path / "app.duckdb") as store, running_receiver(store) as (url, _), AzureOpenAIStandin() as api:
        p = Pipeline(store, url, api)
        p.instrument()
        try:
            yield p
        finally:
            uninstrument()
            p.tracer_provider.shutdown()
            p.meter_provider.shutdown()


def _memory_provider(sampler=None) -> tuple[InMemorySpanExporter, TracerProvider]:
    """A tracer provider exporting each ended span at once to memory (the SDK's default sampler unless given)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(**({"sampler": sampler} if sampler else {}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, provider


def _only(spans: dict, **match) -> dict:
    found = [s for s in spans.values() if all(s.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, [(s["span.name"], s.get("gen_ai.response.id")) for s in spans.values()])
    return found[0]


def test_chat_span_cost_metrics_and_gateway_log_link(pipeline):
    """A chat call's span has the Azure facts, cost and request ids; the gateway log of the same request
    links both ways, and app vs service latency lines up."""
    reply = pipeline.client().chat.completions.create(model="gpt4o-prod", messages=[{"role": "user", "content": "hi"}],
                                                      max_tokens=50, temperature=0.2)
    assert reply.choices[0].message.content == "Hello from gpt4o-prod"
    call = pipeline.api.calls[-1]
    pipeline.flush()
    span = _only(pipeline.spans(), **{"gen_ai.response.id": call["response_id"]})
    assert span["gen_ai.provider.name"] == span["aoai.provider"] == "azure.ai.openai"
    assert (span["span.name"], span["span.kind"], span["service.name"]) == ("chat gpt4o-prod", "client", "shop")
    assert (span["gen_ai.request.model"], span["aoai.deployment"]) == ("gpt4o-prod", "gpt4o-prod")
    assert (span["gen_ai.response.model"], span["aoai.model"]) == ("gpt-4o-2024-08-06", "gpt-4o-2024-08-06")
    assert (span["server.address"], span["aoai.api_version"], span["aoai.operation"]) == ("127.0.0.1", API_VERSION, "ChatCompletions_Create")
    assert (span["gen_ai.request.max_tokens"], span["gen_ai.request.temperature"]) == (50, 0.2)
    assert (span["aoai.tokens.input"], span["aoai.tokens.output"], span["aoai.tokens.total"], span["aoai.tokens.cached"]) == (14, 8, 22, 4)
    assert span["aoai.cost"] == pytest.approx(10 * 2.5e-6 + 4 * 1.25e-6 + 8 * 10e-6)
    assert (span["aoai.apim_request_id"], span["aoai.request_id"], span["aoai.region"]) == (
        call["apim_request_id"], call["x_request_id"], "East US")
    assert span["azure.service.request.id"] == call["apim_request_id"]
    assert (span["aoai.status_code"], span["event.outcome"], span["aoai.stream"]) == (200, "success", False)
    labels = span["extra"]
    assert (labels["numeric_labels.token_count"], labels["numeric_labels.prompt_tokens"],
            labels["numeric_labels.completion_tokens"], labels["numeric_labels.cost"]) == (22, 14, 8, span["aoai.cost"])
    assert labels["numeric_labels.completion_count"] >= 1
    assert "gen_ai.input.messages" not in labels  # content capture is off by default

    # The gateway log of the same request: APIM's correlationId is the apim-request-id the client saw.
    start_ms = int(span["@timestamp"].timestamp() * 1000)
    log = _gateway_log(start_ms + 3, call["apim_request_id"], "gpt4o-prod", call["response_id"], 7)
    pipeline.store.commit(logs=[log])
    detail = traces.span_detail(pipeline.store, span["id"])
    assert (detail["log"]["id"], detail["link"], detail["service_ms"]) == (log["id"], "response_id", 7.0)
    assert detail["app_ms"] == span["aoai.duration_ms"] > 0
    assert [(s["id"], s["link"]) for s in traces.spans_for_log(pipeline.store, log["id"])] == [(span["id"], "response_id")]
    [row] = traces.app_vs_service_latency(pipeline.store, start_ms=start_ms - 1000, end_ms=start_ms + 60_000)
    assert (row["deployment"], row["linked"], row["service_p50_ms"]) == ("gpt4o-prod", 1, 7.0)

    # Without body logging only the request id links them.
    pipeline.store.commit(logs=[_gateway_log(start_ms + 4, call["apim_request_id"], "other-dep", None, 9)])
    pipeline.store.cursor().execute("DELETE FROM logs WHERE id = ?", [log["id"]])
    assert traces.span_detail(pipeline.store, span["span.id"])["link"] == "request_id"

    # GenAI metrics reached app_metrics.
    usage = pipeline.store.cursor().execute(
        'SELECT "gen_ai.token.type", sum("metric.sum") FROM app_metrics WHERE "metric.name" = \'gen_ai.client.token.usage\' '
        "GROUP BY 1 ORDER BY 1").fetchall()
    assert usage == [("input", 14.0), ("output", 8.0)]
    assert pipeline.store.cursor().execute(
        'SELECT "metric.count", "gen_ai.provider.name", "gen_ai.response.model" FROM app_metrics '
        "WHERE \"metric.name\" = 'gen_ai.client.operation.duration'").fetchall() == [(1, "azure.ai.openai", "gpt-4o-2024-08-06")]


def test_streaming_usage_injected_hidden_and_counted(pipeline):
    """Streamed chat: include_usage is asked for and its chunk kept from the caller; on an api-version
    without it, output tokens are counted and marked estimated (never reported as gen_ai.usage)."""
    client = pipeline.client()
    chunks = list(client.chat.completions.create(model="dep", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert all(c.choices for c in chunks[1:]) and not any(c.usage for c in chunks)
    injected = pipeline.api.calls[-1]
    assert injected["body"]["stream_options"] == {"include_usage": True}
    # A caller that asks for usage itself gets the usage chunk.
    asked = list(client.chat.completions.create(model="dep", messages=[{"role": "user", "content": "hi"}], stream=True,
                                                stream_options={"include_usage": True}))
    assert asked[-1].usage.completion_tokens == 3 and asked[-1].choices == []
    # The caller's own extra_body is kept beside the injected stream_options, and the usage chunk still hidden.
    extra = list(client.chat.completions.create(model="dep", messages=[{"role": "user", "content": "hi"}], stream=True,
                                                extra_body={"user_tag": "t1"}))
    assert not any(c.usage for c in extra)
    assert pipeline.api.calls[-1]["body"]["user_tag"] == "t1"
    assert pipeline.api.calls[-1]["body"]["stream_options"] == {"include_usage": True}
    old = pipeline.client(api_version="2024-06-01")
    text = "".join(c.choices[0].delta.content or "" for c in old.chat.completions.create(
        model="dep", messages=[{"role": "user", "content": "hi"}], stream=True) if c.choices)
    assert text == "Hello from Azure"
    counted = pipeline.api.calls[-1]
    assert "stream_options" not in counted["body"]
    pipeline.flush()
    spans = pipeline.spans()
    s = _only(spans, **{"gen_ai.response.id": injected["response_id"]})
    assert (s["aoai.stream"], s["aoai.tokens.input"], s["aoai.tokens.output"], s["gen_ai.usage.output_tokens"]) == (True, 14, 3, 3)
    assert 0 < s["aoai.ttft_ms"] <= s["aoai.duration_ms"]
    assert s["gen_ai.response.finish_reasons"] == ["stop"] and s["aoai.cost"] > 0
    c = _only(spans, **{"gen_ai.response.id": counted["response_id"]})
    assert (c["aoai.tokens.output"], c["aoai.tokens.estimated"], c["gen_ai.usage.output_tokens"], c["aoai.cost"]) == (3, True, None, None)
    ttft = pipeline.store.cursor().execute(
        "SELECT sum(\"metric.count\") FROM app_metrics WHERE \"metric.name\" = 'gen_ai.client.operation.time_to_first_chunk'").fetchone()
    assert ttft == (4,)


def test_by_default_a_call_is_priced_by_the_pricing_component(monkeypatch):
    """Without a pricer argument, spans get aoai.cost from aoai_monitor.pricing with the service's rules: the
    response's dated model, GlobalStandard assumed for a deployment the [pricing] config does not name."""
    from datetime import datetime, timezone

    from aoai_monitor import pricing
    from aoai_monitor.instrument import flush
    from aoai_monitor.pricing.engine import price_tokens
    from tests.standins.azure_openai_api import USAGE

    monkeypatch.delenv("AOAI_MONITOR_CONFIG", raising=False)
    monkeypatch.setattr(pricing, "_APP_PRICING", [])
    exporter, provider = _memory_provider()
    instrument(tracer_provider=provider)
    try:
        with AzureOpenAIStandin() as api:
            client = openai.AzureOpenAI(azure_endpoint=api.endpoint, api_key="k", api_version=API_VERSION, max_retries=0)
            client.chat.completions.create(model="dep", messages=[{"role": "user", "content": "hi"}])
            flush()
    finally:
        uninstrument()
    (span,) = exporter.get_finished_spans()
    month = datetime.now(timezone.utc).strftime("%Y-%m")
    expected, _ = price_tokens("gpt-4o", "2024-08-06", "GlobalStandard", None, month, pricing.Pricing().prices,
                               USAGE["prompt_tokens"], USAGE["completion_tokens"], USAGE["prompt_tokens_details"]["cached_tokens"])
    assert span.attributes["aoai.cost"] == pytest.approx(float(expected)) and expected > 0
    assert span.attributes["cost"] == span.attributes["aoai.cost"]  # the seed's name for Elastic APM


def test_a_stream_stays_the_sdks_stream_and_its_span_ends_however_the_caller_stops():
    """The caller gets the SDK's own Stream (isinstance, `response`); the span ends, with the response's
    status and request-id headers, when the stream is read to the end, iterated by hand, left by `break`,
    closed by its context manager, or dropped unread; a caller's own with_raw_response stream too."""
    import gc

    from aoai_monitor.instrument import flush

    exporter, provider = _memory_provider()
    instrument(tracer_provider=provider, pricer=None)
    messages = [{"role": "user", "content": "hi"}]
    try:
        with AzureOpenAIStandin() as api:
            client = openai.AzureOpenAI(azure_endpoint=api.endpoint, api_key="k", api_version=API_VERSION, max_retries=0)

            def create(**kwargs):
                return client.chat.completions.create(model="dep", messages=messages, stream=True, **kwargs)

            def ended() -> list:
                flush()
                spans = exporter.get_finished_spans()
                exporter.clear()
                return spans

            stream = create()
            assert isinstance(stream, openai.Stream) and stream.response.headers["apim-request-id"]
            read = list(stream)
            assert "".join(c.choices[0].delta.content or "" for c in read if c.choices) == "Hello from Azure"
            assert not any(c.usage for c in read)
            (whole,) = ended()
            assert whole.attributes["http.response.status_code"] == 200 and whole.attributes["aoai.stream"] is True
            assert whole.attributes["aoai.apim_request_id"] == api.calls[-1]["apim_request_id"]
            assert whole.attributes["gen_ai.usage.output_tokens"] == 3  # the hidden usage chunk was read

            by_hand = create()
            chunks = []
            with pytest.raises(StopIteration):
                while True:
                    chunks.append(next(by_hand))
            assert not any(c.usage for c in chunks) and ended()[0].attributes["gen_ai.usage.output_tokens"] == 3

            for chunk in create():
                if chunk.choices and chunk.choices[0].delta.content:
                    break
            del chunk
            gc.collect()
            (left,) = ended()
            assert left.attributes["aoai.ttft_ms"] > 0 and "gen_ai.usage.output_tokens" not in left.attributes

            with create() as closed:
                next(closed)
            assert len(ended()) == 1

            create()  # dropped unread
            gc.collect()
            (dropped,) = ended()
            assert dropped.attributes["http.response.status_code"] == 200 and "aoai.ttft_ms" not in dropped.attributes

            raw = client.chat.completions.with_raw_response.create(model="dep", messages=messages, stream=True)
            assert raw.headers["x-request-id"] and [c for c in raw.parse() if c.choices]
            (own_raw,) = ended()
            assert own_raw.attributes["aoai.request_id"] == raw.headers["x-request-id"]
    finally:
        uninstrument()


def test_errors_429_and_content_filter(pipeline):
    """Throttling and content-filter errors reach the caller unchanged and are recorded as failures."""
    client = pipeline.client()
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="dep", messages=[{"role": "user", "content": "trigger-429"}])
    throttled = pipeline.api.calls[-1]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="dep", messages=[{"role": "user", "content": "trigger-content-filter"}])
    assert info.value.code == "content_filter"
    filtered = pipeline.api.calls[-1]
    pipeline.flush()
    spans = pipeline.spans()
    t = _only(spans, **{"aoai.apim_request_id": throttled["apim_request_id"]})
    assert (t["aoai.status_code"], t["error.type"], t["event.outcome"], t["span.status.code"]) == (429, "RateLimitError", "failure", "error")
    assert t["span.events"][0]["name"] == "exception"
    f = _only(spans, **{"aoai.apim_request_id": filtered["apim_request_id"]})
    assert (f["aoai.status_code"], f["error.type"], f["aoai.content_filter.filtered"]) == (400, "BadRequestError", True)
    errors = pipeline.store.cursor().execute(
        "SELECT \"error.type\", sum(\"metric.count\") FROM app_metrics WHERE \"metric.name\" = 'gen_ai.client.operation.duration' "
        "GROUP BY 1 ORDER BY 1").fetchall()
    assert errors == [("BadRequestError", 1), ("RateLimitError", 1)]


def test_async_responses_and_embeddings(pipeline):
    """Async clients, the Responses API (plain and streamed) and embeddings are traced too."""
    async def calls():
        client = pipeline.client(cls=openai.AsyncAzureOpenAI)
        stream = await client.chat.completions.create(model="dep", messages=[{"role": "user", "content": "hi"}], stream=True)
        async with stream:
            texts = [c.choices[0].delta.content async for c in stream if c.choices]
        response = await client.responses.create(model="dep", input="hi")
        events = [e.type async for e in await client.responses.create(model="dep", input="hi", stream=True)]
        emb = await client.embeddings.create(model="emb", input=["a", "b"])
        return texts, response.output_text, events, emb.usage.prompt_tokens

    texts, output, events, emb_tokens = asyncio.run(calls())
    assert ("".join(t or "" for t in texts), output, events[-1], emb_tokens) == ("Hello from Azure", "Hello from Azure", "response.completed", 10)
    sync = pipeline.client().responses.create(model="dep", input="hi")
    assert sync.output_text == "Hello from Azure"
    pipeline.flush()
    rows = pipeline.store.cursor().execute(
        'SELECT "aoai.operation", "aoai.stream", "aoai.tokens.input", "aoai.tokens.output", "aoai.ttft_ms" IS NOT NULL, '
        '"gen_ai.operation.name" FROM spans ORDER BY 1, 2, 3').fetchall()
    assert rows == [("ChatCompletions_Create", True, 14, 3, True, "chat"), ("Embeddings_Create", False, 10, None, False, "embeddings"),
                    ("Responses_Create", False, 9, 3, False, "chat"), ("Responses_Create", False, 9, 3, False, "chat"),
                    ("Responses_Create", True, 9, 3, True, "chat")]


def test_content_capture_with_redaction(pipeline):
    """When capture is on, the redaction hook sees messages first; a failing hook records nothing."""
    def redact(messages, direction):
        for m in messages:
            for part in m["parts"]:
                part["content"] = part["content"].replace("4111-1111", "[card]")
        return messages

    pipeline.instrument(capture_content=True, redact=redact)
    client = pipeline.client()
    client.chat.completions.create(model="dep", messages=[{"role": "user", "content": "card 4111-1111"}])
    first = pipeline.api.calls[-1]
    pipeline.instrument(capture_content=True, redact=lambda messages, direction: 1 / 0)
    client.chat.completions.create(model="dep", messages=[{"role": "user", "content": "card 4111-1111"}])
    second = pipeline.api.calls[-1]
    pipeline.flush()
    spans = pipeline.spans()
    captured = _only(spans, **{"gen_ai.response.id": first["response_id"]})["extra"]
    assert captured["gen_ai.input.messages"] == '[{"role":"user","parts":[{"type":"text","content":"card [card]"}]}]'
    assert '"finish_reason":"stop"' in captured["gen_ai.output.messages"]
    dropped = _only(spans, **{"gen_ai.response.id": second["response_id"]})["extra"]
    assert "gen_ai.input.messages" not in dropped and "gen_ai.output.messages" not in dropped


def test_openai_v2_keeps_plain_openai_and_azure_gets_one_span():
    """With opentelemetry-instrumentation-openai-v2 installed first, an Azure call gets only our span
    (provider azure.ai.openai), while a plain OpenAI client still goes through openai-v2."""
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    exporter, provider = _memory_provider()
    v2 = OpenAIInstrumentor()
    v2.instrument(tracer_provider=provider)
    instrument(tracer_provider=provider, pricer=None)
    try:
        with AzureOpenAIStandin() as api:
            azure = openai.AzureOpenAI(azure_endpoint=api.endpoint, api_key="k", api_version=API_VERSION, max_retries=0)
            azure.chat.completions.create(model="dep", messages=[{"role": "user", "content": "hi"}])
            provider.force_flush()
            azure_spans = exporter.get_finished_spans()
            plain = openai.OpenAI(base_url=f"{api.endpoint}/openai/deployments/dep", api_key="k", max_retries=0)
            plain.chat.completions.create(model="dep", messages=[{"role": "user", "content": "hi"}])
    finally:
        uninstrument()
        v2.uninstrument()
    assert [(s.instrumentation_scope.name, s.attributes["gen_ai.provider.name"]) for s in azure_spans] == [
        ("aoai_monitor.instrument", "azure.ai.openai")]
    plain_span = exporter.get_finished_spans()[-1]
    assert plain_span.instrumentation_scope.name != "aoai_monitor.instrument"
    assert "azure.ai.openai" not in plain_span.attributes.values()


@pytest.mark.parametrize("sampler_name", ["default", "ratio-0", "always-on", "unsampled-caller"])
def test_call_span_is_the_current_span_during_the_request(sampler_name):
    """The span's identity is made when the call starts (the SDK span when it ends, off the caller's
    thread): an HTTP-level span started during the request is its child, the traceparent sent names it,
    the call's span is the app span's child, and the sampler's decision is the one the SDK then makes."""
    from opentelemetry import propagate, trace
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

    sampler = {"ratio-0": ParentBased(TraceIdRatioBased(0.0)), "always-on": ALWAYS_ON}.get(sampler_name)
    # An upstream service that did not sample this trace (its traceparent's flags 00).
    upstream = propagate.extract({"traceparent": f"00-{7:032x}-{9:016x}-00"} if sampler_name == "unsampled-caller" else {})
    exporter, provider = _memory_provider(sampler)
    app = provider.get_tracer("app")
    seen: list[tuple] = []

    def http_span(request):  # what an HTTP client instrumentation does inside the call
        carrier: dict = {}
        propagate.inject(carrier)
        current = trace.get_current_span().get_span_context()
        with app.start_as_current_span("POST") as http:
            seen.append((current, http.get_span_context().span_id, carrier))

    instrument(tracer_provider=provider, pricer=None)
    try:
        with AzureOpenAIStandin() as api:
            client = openai.AzureOpenAI(azure_endpoint=api.endpoint, api_key="k", api_version=API_VERSION, max_retries=0,
                                        http_client=openai.DefaultHttpxClient(event_hooks={"request": [http_span]}))
            with app.start_as_current_span("GET /checkout", context=upstream) as request_span:
                client.chat.completions.create(model="dep", messages=[{"role": "user", "content": "hi"}])
            root_call = client.chat.completions.create(model="dep", messages=[{"role": "user", "content": "hi"}])
            assert root_call.id
            provider.force_flush()
    finally:
        uninstrument()
    spans = {s.context.span_id: s for s in exporter.get_finished_spans()}
    calls = [s for s in spans.values() if s.instrumentation_scope.name == "aoai_monitor.instrument"]
    (under_app, under_app_http, under_app_carrier), (root, root_http, root_carrier) = seen
    if sampler_name == "ratio-0":
        assert spans == {} and not under_app.trace_flags.sampled and not root.trace_flags.sampled
        assert int(under_app_carrier["traceparent"][-2:], 16) & 1 == 0  # not sampled
        return
    if sampler_name == "unsampled-caller":  # the default sampler follows the caller; a call with no parent is sampled
        assert not under_app.trace_flags.sampled and under_app.trace_id == 7
        assert [s.context.span_id for s in calls] == [root.span_id] and len(spans) == 2
        assert spans[root_http].parent.span_id == root.span_id and root.trace_flags.sampled
        return
    assert len(calls) == 2 and len(spans) == 5
    call_span = next(s for s in calls if s.context.span_id == under_app.span_id)
    assert call_span.parent.span_id == request_span.get_span_context().span_id
    assert call_span.context.trace_id == request_span.get_span_context().trace_id == under_app.trace_id
    assert spans[under_app_http].parent.span_id == call_span.context.span_id
    assert under_app_carrier["traceparent"] == (
        f"00-{call_span.context.trace_id:032x}-{call_span.context.span_id:016x}-{call_span.context.trace_flags:02x}")
    assert call_span.start_time <= spans[under_app_http].start_time <= spans[under_app_http].end_time <= call_span.end_time
    root_span = next(s for s in calls if s.context.span_id == root.span_id)
    assert root_span.parent is None and root_span.context.trace_id == root.trace_id != call_span.context.trace_id
    assert spans[root_http].parent.span_id == root_span.context.span_id
    assert root_span.context.trace_flags.sampled and root.trace_flags.sampled


EXIT_SCRIPT = """
import sys, openai
from aoai_monitor.instrument import _finisher, instrument  # imported before the provider: its exit hook runs after the provider's
_finisher.INTERVAL = 3600  # the finisher thread never gets to these calls: only the exit can
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

class Names(SpanExporter):
    def export(self, spans):
        for s in spans:
            print("exported", s.name, s.attributes.get("gen_ai.usage.output_tokens"), flush=True)
        return SpanExportResult.SUCCESS

provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(Names()))
instrument(tracer_provider=provider, pricer=None)
client = openai.AzureOpenAI(azure_endpoint=sys.argv[1], api_key="k", api_version="2024-10-21", max_retries=0)
for _ in range(3):
    client.chat.completions.create(model="dep", messages=[{"role": "user", "content": "hi"}])
print("calls done", flush=True)
"""


def test_spans_of_ended_calls_are_exported_at_interpreter_exit(tmp_path):
    """Spans are finished on a background thread: a process that exits right after its calls, without
    flushing, still exports every one (the provider's exit shutdown finishes the queued calls first)."""
    import subprocess
    import sys

    with AzureOpenAIStandin() as api:
        out = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, api.endpoint], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines == ["calls done"] + ["exported chat dep 8"] * 3


def test_spans_end_within_the_finisher_interval_without_a_flush():
    from aoai_monitor.instrument import _finisher

    exporter, provider = _memory_provider()
    instrument(tracer_provider=provider, pricer=None)
    try:
        with AzureOpenAIStandin() as api:
            client = openai.AzureOpenAI(azure_endpoint=api.endpoint, api_key="k", api_version=API_VERSION, max_retries=0)
            client.chat.completions.create(model="dep", messages=[{"role": "user", "content": "hi"}])
            deadline = time.monotonic() + 20 * _finisher.INTERVAL
            while not exporter.get_finished_spans() and time.monotonic() < deadline:
                time.sleep(_finisher.INTERVAL / 5)
            assert [s.name for s in exporter.get_finished_spans()] == ["chat dep"]
    finally:
        uninstrument()


def test_a_forked_worker_finishes_its_own_calls_and_not_its_parents():
    """Pre-fork servers (gunicorn --preload) instrument in the parent: a forked child gets its own finisher
    thread for its calls, and calls the parent had queued are not exported a second time by the child."""
    import multiprocessing

    from aoai_monitor.instrument import _finisher

    exporter, provider = _memory_provider()
    instrument(tracer_provider=provider, pricer=None)
    try:
        with AzureOpenAIStandin() as api:
            client = openai.AzureOpenAI(azure_endpoint=api.endpoint, api_key="k", api_version=API_VERSION, max_retries=0)
            client.chat.completions.create(model="parent-1", messages=[{"role": "user", "content": "hi"}])
            provider.force_flush()  # the parent's finisher thread is running now

            def child(results) -> None:
                exporter.clear()
                client.chat.completions.create(model="child", messages=[{"role": "user", "content": "hi"}])
                deadline = time.monotonic() + 5
                while not exporter.get_finished_spans() and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(0.2)
                results.put([s.name for s in exporter.get_finished_spans()])

            results = multiprocessing.get_context("fork").Queue()
            process = multiprocessing.get_context("fork").Process(target=child, args=(results,))
            with _finisher._lock:  # the parent's finisher can finish nothing: parent-2 is queued at the fork
                client.chat.completions.create(model="parent-2", messages=[{"role": "user", "content": "hi"}])
                process.start()
            names = results.get(timeout=30)
            process.join(30)
            provider.force_flush()
    finally:
        uninstrument()
    assert names == ["chat child"]
    assert [s.name for s in exporter.get_finished_spans()] == ["chat parent-1", "chat parent-2"]
