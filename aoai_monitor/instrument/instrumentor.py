"""`opentelemetry-instrument` entry point: AzureOpenAIInstrumentor (entry point group opentelemetry_instrumentor)."""

from __future__ import annotations

from collections.abc import Collection

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from . import instrument, uninstrument


class AzureOpenAIInstrumentor(BaseInstrumentor):
    """Zero-code use: `opentelemetry-instrument python app.py` picks this up; the providers go to instrument()."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("openai >= 1.60",)

    def _instrument(self, **kwargs):
        instrument(tracer_provider=kwargs.get("tracer_provider"), meter_provider=kwargs.get("meter_provider"))

    def _uninstrument(self, **kwargs):
        uninstrument()
