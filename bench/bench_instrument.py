"""Instrumentation overhead per call and OTLP receiver throughput.

    python bench/bench_instrument.py [--calls 4000] [--batches 40]

1. Overhead: the real AzureOpenAI client on an in-process httpx transport (no network noise), chat
   completions plain and streamed, instrumented and plain calls alternating one by one (real SDK
   TracerProvider + BatchSpanProcessor, MeterProvider). Overhead = median of the pairs' differences in
   CPU time of the calling thread: what the caller waits for. Target ≤ 50 µs. The span's attributes,
   end and metrics are completed off the caller's path (instrument/_finisher.py), as the span export is
   on the SDK's thread; that finishing CPU per call is timed too, and the sum is the whole cost.
2. Receiver: protobuf export requests of 512 GenAI-like spans POSTed by 4 threads of another process (as
   instrumented apps export from theirs) to run_otlp_receiver on a temporary store; spans stored per second.
   Target ≥ 10,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import openai
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from aoai_monitor.instrument import _finisher, flush, instrument, uninstrument
from aoai_monitor.sources.otlp import run_otlp_receiver
from aoai_monitor.store import Store

HEADERS = {"content-type": "application/json", "apim-request-id": "0d6c1c47-7c1e-4c39-9d0c-3f0b3c7e6a11",
           "x-request-id": "1f7c0c1a-2b2c-4d4e-8f8f-0a0b0c0d0e0f", "x-ms-region": "East US"}
COMPLETION = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1735689600, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello"}}],
    "usage": {"prompt_tokens": 14, "completion_tokens": 8, "total_tokens": 22}}).encode()
CHUNK = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1735689600, "model": "gpt-4o-2024-08-06"}
SSE = b"".join(b"data: " + json.dumps({**CHUNK, "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}]}).encode()
               + b"\n\n" for t in ("Hello", " there", "!")) + b"data: " + json.dumps(
    {**CHUNK, "choices": [], "usage": {"prompt_tokens": 14, "completion_tokens": 3, "total_tokens": 17}}).encode() + b"\n\ndata: [DONE]\n\n"


class Discard(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


def _handler(request: httpx.Request) -> httpx.Response:
    if b'"stream":true' in request.content:
        return httpx.Response(200, headers={**HEADERS, "content-type": "text/event-stream"}, content=SSE)
    return httpx.Response(200, headers=HEADERS, content=COMPLETION)


def bench_overhead(calls: int) -> dict:
    """Instrumented and plain calls alternate one by one (the class attribute is swapped between them), so
    the machine's drift hits both alike; the overhead is the median of the pairs' differences."""
    from openai.resources.chat.completions import Completions

    client = openai.AzureOpenAI(azure_endpoint="https://bench.openai.azure.com", api_key="k", api_version="2024-10-21",
                                http_client=httpx.Client(transport=httpx.MockTransport(_handler)), max_retries=0)
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=100_000))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    messages = [{"role": "user", "content": "hi"}]

    def plain():
        client.chat.completions.create(model="dep", messages=messages)

    def streamed():
        for _ in client.chat.completions.create(model="dep", messages=messages, stream=True):
            pass

    plain_create = Completions.__dict__["create"]
    instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, pricer=None)
    instrumented_create = Completions.__dict__["create"]
    # The bench finishes the queued calls itself (timed) instead of the finisher thread, so the calling
    # thread's cost and the finishing cost are measured apart and neither disturbs the other.
    interval, _finisher.INTERVAL = _finisher.INTERVAL, 3600
    results = {}
    try:
        for name, fn in (("chat", plain), ("chat_stream", streamed)):
            cpu, wall = {False: [], True: []}, {False: [], True: []}
            finish_ns = 0
            for i in range(calls + 200):
                for on in ((False, True) if i % 2 else (True, False)):
                    setattr(Completions, "create", instrumented_create if on else plain_create)
                    w, t = time.perf_counter_ns(), time.thread_time_ns()
                    fn()
                    cpu[on].append(time.thread_time_ns() - t)
                    wall[on].append(time.perf_counter_ns() - w)
                if i % 100 == 99:
                    t = time.thread_time_ns()
                    flush()
                    finish_ns += (time.thread_time_ns() - t) if i >= 200 else 0
            for series in (*cpu.values(), *wall.values()):
                del series[:200]  # warm-up
            overhead = statistics.median(i - b for b, i in zip(cpu[False], cpu[True])) / 1000
            finish = finish_ns / calls / 1000
            results[name] = {"baseline_us": round(statistics.median(cpu[False]) / 1000, 1),
                             "instrumented_us": round(statistics.median(cpu[True]) / 1000, 1),
                             "overhead_us": round(overhead, 1),
                             "wall_overhead_us": round(statistics.median(i - b for b, i in zip(wall[False], wall[True])) / 1000, 1),
                             "finish_us": round(finish, 1), "total_cpu_us": round(overhead + finish, 1), "calls_each": calls}
    finally:
        setattr(Completions, "create", instrumented_create)
        _finisher.INTERVAL = interval
        uninstrument()
        tracer_provider.shutdown()
    return results


def _span_request(batch: int, size: int) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in (("service.name", "bench"), ("service.version", "1.0"), ("host.name", "h1")):
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = k, v
    ss = rs.scope_spans.add()
    ss.scope.name = "aoai_monitor.instrument"
    t0 = 1_767_225_600_000_000_000 + batch * size * 1_000_000
    strings = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "azure.ai.openai", "aoai.operation": "ChatCompletions_Create",
               "server.address": "acme.openai.azure.com", "gen_ai.request.model": "gpt4o-prod", "aoai.deployment": "gpt4o-prod",
               "aoai.api_version": "2024-10-21", "gen_ai.response.model": "gpt-4o-2024-08-06", "aoai.model": "gpt-4o-2024-08-06",
               "aoai.region": "East US"}
    ints = {"gen_ai.usage.input_tokens": 14, "aoai.tokens.input": 14, "gen_ai.usage.output_tokens": 8, "aoai.tokens.output": 8,
            "aoai.tokens.total": 22, "http.response.status_code": 200, "aoai.status_code": 200, "completion_count": 1,
            "token_count": 22, "prompt_tokens": 14, "completion_tokens": 8}
    for n in range(size):
        sp = ss.spans.add(trace_id=(batch * size + n + 1).to_bytes(16, "big"), span_id=(batch * size + n + 1).to_bytes(8, "big"),
                          name="chat gpt4o-prod", kind=3, start_time_unix_nano=t0 + n * 1_000_000,
                          end_time_unix_nano=t0 + n * 1_000_000 + 350_000_000)
        for k, v in strings.items():
            a = sp.attributes.add()
            a.key, a.value.string_value = k, v
        for k, v in ints.items():
            a = sp.attributes.add()
            a.key, a.value.int_value = k, v
        for k, v in (("aoai.cost", 0.000115), ("cost", 0.000115)):
            a = sp.attributes.add()
            a.key, a.value.double_value = k, v
        for k, v in (("gen_ai.response.id", f"chatcmpl-{batch}-{n}"), ("aoai.apim_request_id", f"apim-{batch}-{n}"),
                     ("aoai.request_id", f"req-{batch}-{n}")):
            a = sp.attributes.add()
            a.key, a.value.string_value = k, v
        a = sp.attributes.add()
        a.key = "aoai.stream"
        a.value.bool_value = False
    return req.SerializeToString()


def _send_all(url: str, batches: int, size: int, senders: int) -> tuple[float, list[int]]:
    """In the sender process: build the requests, then POST them from `senders` threads; (seconds, statuses)."""
    bodies = [_span_request(b, size) for b in range(batches + 1)]

    def send(body: bytes) -> int:
        req = urllib.request.Request(url, body, {"Content-Type": "application/x-protobuf"}, method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status

    codes = [send(bodies.pop())]  # warm-up (connections, the receiver's workers), not timed
    t = time.perf_counter()
    with ThreadPoolExecutor(senders) as pool:
        codes += pool.map(send, bodies)
    return time.perf_counter() - t, codes


def bench_receiver(batches: int, size: int = 512, senders: int = 4, workers: int | None = None) -> dict:
    """The exporters run in their own process, as instrumented apps do: their HTTP work is not the receiver's."""
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as store:
        status: dict = {}
        stop = threading.Event()
        thread = threading.Thread(target=lambda: asyncio.run(run_otlp_receiver(
            {"port": 0} if workers is None else {"port": 0, "workers": workers}, store, status, stop)), daemon=True)
        thread.start()
        while "port" not in status.get("otlp", {}):
            time.sleep(0.02)
        url = f"http://127.0.0.1:{status['otlp']['port']}/v1/traces"
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            seconds, codes = pool.submit(_send_all, url, batches, size, senders).result()
        stored = store.count("spans")
        stop.set()
        thread.join(10)
    assert set(codes) == {200} and stored == (batches + 1) * size, (set(codes), stored)
    stored -= size  # the warm-up request's
    return {"spans": stored, "seconds": round(seconds, 2), "spans_per_s": round(stored / seconds),
            "batch_size": size, "senders": senders, "workers": workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=4000, help="timed calls per variant (half baseline, half instrumented)")
    parser.add_argument("--batches", type=int, default=40, help="export requests of 512 spans for the receiver")
    args = parser.parse_args()
    overhead = bench_overhead(args.calls)
    for name, r in overhead.items():
        print(f"{name:12s} baseline {r['baseline_us']:8.1f} µs  instrumented {r['instrumented_us']:8.1f} µs  "
              f"overhead {r['overhead_us']:6.1f} µs/call CPU, {r['wall_overhead_us']:.1f} wall "
              f"(median of {r['calls_each']} pairs; target ≤ 50); finishing off the path {r['finish_us']:.1f} µs, "
              f"whole CPU cost {r['total_cpu_us']:.1f} µs/call")
    inline = bench_receiver(args.batches, workers=0)
    receiver = bench_receiver(args.batches)
    print(f"receiver     {receiver['spans']:,} spans in {receiver['seconds']} s = {receiver['spans_per_s']:,} spans/s "
          f"({receiver['senders']} senders, {receiver['batch_size']} spans/request; target ≥ 10,000); "
          f"decoding in this process instead: {inline['spans_per_s']:,} spans/s "
          f"(= {receiver['spans_per_s'] / inline['spans_per_s']:.2f}×)")
    print(json.dumps({"overhead": overhead, "receiver": receiver, "receiver_decoding_inline": inline}))


if __name__ == "__main__":
    main()
