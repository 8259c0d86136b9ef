"""A call's span: its identity is made on the caller's thread, the SDK span on the finisher's.

Why: the SDK's start_span runs cold in a real call path (the app's own code runs between two calls) and
costs 40–60 µs there — most of the overhead budget (bench/bench_instrument.py). The caller only needs the
span's context while the request runs (so child spans and traceparent headers point at it): trace id,
span id, the sampler's decision. `reserve` makes that with the provider's own id generator and sampler;
`start` later has the SDK make the real span with exactly those ids, at the call's start time, by
answering the tracer's id requests itself (the IdGenerator interface). The tracer is this package's own
(scope aoai_monitor.instrument); nothing else starts spans with it.

A tracer that is not the OpenTelemetry SDK's (no id_generator / sampler) gets no DeferredStart: its spans
start on the caller's thread as usual.
"""

from __future__ import annotations

import random
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

_RANDOM_TRACE_ID = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)  # W3C level 2 flag (SDK ≥ 1.39)
_FLAGS = {sampled: {random_flag: TraceFlags((TraceFlags.SAMPLED if sampled else 0) | random_flag)
                    for random_flag in {0, _RANDOM_TRACE_ID}} for sampled in (False, True)}
# Samplers whose decision is "the parent's sampled flag, else sample", by their (public) description: the
# SDK's default and AlwaysOn. `reserve` decides for them without running them (14 µs of the caller's path).
_PARENT_ELSE_SAMPLE = {
    "ParentBased{root:AlwaysOnSampler,remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,"
    "localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}": True,
    "AlwaysOnSampler": False,  # samples even under an unsampled parent
}


class DeferredStart:
    def __init__(self, tracer: Any):
        self.tracer = tracer
        self.ids = tracer.id_generator
        self.sampler = tracer.sampler
        self.follows_parent = _PARENT_ELSE_SAMPLE.get(self.sampler.get_description())
        # The SDK's default generator is random.getrandbits; called directly it saves two calls per span.
        self.random_ids = type(self.ids) is RandomIdGenerator
        self.root_random = _RANDOM_TRACE_ID if getattr(self.ids, "is_trace_id_random", bool)() else 0
        self._preset: SpanContext | None = None
        tracer.id_generator = self

    @classmethod
    def for_tracer(cls, tracer: Any) -> DeferredStart | None:
        if getattr(tracer, "id_generator", None) is None or getattr(tracer, "sampler", None) is None:
            return None
        return cls(tracer)

    def reserve(self, parent: Any, name: str) -> SpanContext:
        """The span context the SDK would give a CLIENT span started now under `parent` (a Context)."""
        parent_span = trace.get_current_span(parent).get_span_context()
        ids = self.ids
        if parent_span.is_valid:
            trace_id, flags = parent_span.trace_id, parent_span.trace_flags
            random_flag = flags & _RANDOM_TRACE_ID
        else:
            trace_id = (random.getrandbits(128) or 1) if self.random_ids else ids.generate_trace_id()
            flags, random_flag = TraceFlags.DEFAULT, self.root_random
        follows_parent = self.follows_parent
        if follows_parent is None:
            sampling = self.sampler.should_sample(parent, trace_id, name, SpanKind.CLIENT)
            sampled, trace_state = sampling.decision.is_sampled(), sampling.trace_state
        else:
            sampled = flags & TraceFlags.SAMPLED if follows_parent and parent_span.is_valid else True
            trace_state = parent_span.trace_state if parent_span.is_valid else None
        span_id = (random.getrandbits(64) or 1) if self.random_ids else ids.generate_span_id()
        return SpanContext(trace_id, span_id, False, _FLAGS[bool(sampled)][random_flag], trace_state)

    def start(self, reserved: SpanContext, name: str, parent: Any, start_time: int):
        """The SDK span for a reserved context (on the finisher's thread, which holds the finisher's lock)."""
        self._preset = reserved
        try:
            return self.tracer.start_span(name, parent, SpanKind.CLIENT, start_time=start_time)
        finally:
            self._preset = None

    # The IdGenerator interface, asked by tracer.start_span inside start().

    def generate_span_id(self) -> int:
        return self._preset.span_id if self._preset is not None else self.ids.generate_span_id()

    def generate_trace_id(self) -> int:
        return self._preset.trace_id if self._preset is not None else self.ids.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        return getattr(self.ids, "is_trace_id_random", bool)()
