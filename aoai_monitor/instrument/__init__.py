"""OpenTelemetry instrumentation for Azure OpenAI clients (AzureOpenAI, AsyncAzureOpenAI).

    from aoai_monitor.instrument import instrument
    instrument()                      # uses the global tracer and meter providers

or zero-code: `opentelemetry-instrument python app.py` (entry point `aoai_azure_openai`), or
`setup(endpoint="http://localhost:4318", token=..., service_name="my-app")` to configure OTLP export to
aoai-monitor and instrument in one call. Chat completions, Responses and embeddings; sync, async and
streaming. Spans end and metric points are recorded on a background thread within 50 ms of a call's
end; `flush()` (or the providers' force_flush/shutdown) does it at once. See docs/instrumentation.md
for the attributes, metrics and what differs from opentelemetry-instrumentation-openai-v2.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ._finisher import flush, flush_at_exit, flush_first
from ._state import DURATION_BUCKETS, STATE, TOKEN_BUCKETS, Options

__all__ = ["Options", "flush", "instrument", "setup", "uninstrument"]
_SCOPE = "aoai_monitor.instrument"
_UNSET = object()


def instrument(*, tracer_provider=None, meter_provider=None, capture_content: bool | None = None,
               redact: Callable[[list[dict], str], list[dict] | None] | None = None, stream_usage: bool = True,
               pricer: Callable[..., float | None] | None | object = _UNSET, elastic_apm_labels: bool = True) -> None:
    """Instrument the openai classes. Calling it again replaces the options.

    capture_content: record prompts and completions (gen_ai.input/output.messages); default off, or the
        env OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true. redact(messages, "input"|"output")
        returns what to record (None records nothing); it runs before anything reaches the span.
    stream_usage: ask Azure for the usage chunk on streamed chat calls that did not set stream_options
        (the chunk is kept from the caller); without it, output tokens are counted from chunks.
    pricer: pricer(deployment=, model=, input_tokens=, output_tokens=, cached_tokens=, operation=) → USD
        or None; default the pricing component when installed, None for no cost.
    elastic_apm_labels: also set the seed's completion_count, token_count, prompt_tokens,
        completion_tokens and cost attributes (numeric_labels.* in Elastic APM).
    """
    from opentelemetry import metrics, trace

    from ._patch import patch
    from ._span_start import DeferredStart

    flush()  # calls that ended under the previous providers and options finish with them
    if capture_content is None:
        capture_content = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").lower() in ("true", "1")
    from .. import __version__

    tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
    meter = metrics.get_meter(_SCOPE, __version__, meter_provider=meter_provider)
    STATE.duration = meter.create_histogram(
        "gen_ai.client.operation.duration", "s", "GenAI operation duration.",
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
    STATE.token_usage = meter.create_histogram(
        "gen_ai.client.token.usage", "{token}", "Number of input and output tokens used.",
        explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
    STATE.first_chunk = meter.create_histogram(
        "gen_ai.client.operation.time_to_first_chunk", "s", "Time to the first streamed content chunk.",
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
    STATE.pricer = _pricing_component() if pricer is _UNSET else pricer
    STATE.options = Options(capture_content=capture_content, redact=redact, stream_usage=stream_usage,
                            elastic_apm_labels=elastic_apm_labels)
    STATE.tracer = tracer
    STATE.deferred_start = DeferredStart.for_tracer(tracer)
    # Spans and metric points are completed on a background thread (_finisher.py); flushing or shutting
    # down the providers finishes the waiting calls first, so nothing that ended is missing from an export.
    flush_first(tracer_provider or trace.get_tracer_provider())
    flush_first(meter_provider or metrics.get_meter_provider())
    flush_at_exit()
    patch()


def uninstrument() -> None:
    """Put the openai classes back as they were, after finishing the spans of calls that ended."""
    from ._patch import unpatch

    unpatch()
    flush()


def setup(endpoint: str = "http://localhost:4318", token: str | None = None, service_name: str | None = None,
          **options) -> None:
    """Export traces and GenAI metrics over OTLP/HTTP to aoai-monitor (or any OTLP endpoint) and instrument.

    Sets the global tracer and meter providers; options go to instrument().
    """
    from opentelemetry import metrics, trace
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    headers = {"Authorization": f"Bearer {token}"} if token else None
    resource = Resource.create({"service.name": service_name} if service_name else {})
    base = endpoint.rstrip("/")
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces", headers=headers)))
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{base}/v1/metrics", headers=headers))
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, **options)


def _pricing_component():
    """The one place the instrumentation reaches the pricing component (aoai_monitor/pricing/): its
    price_request(deployment=, model=, input_tokens=, output_tokens=, cached_tokens=, operation=) → USD or None."""
    from ..pricing import price_request

    return price_request
