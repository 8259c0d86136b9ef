"""Event Hub input throughput and freshness against the AMQP stand-in, next to the core `ingest` rate.

    python bench/bench_eventhub.py [--records 100000] [--rate 5000] [--seconds 20] [--repeat 3]

1. baseline: the same records as an NDJSON file through `pipeline.ingest_files` (what `aoai-monitor ingest` does);
2. throughput: preloaded messages of 100 records (bench/gen_records.py's mix, as diagnostic settings send them)
   → committed store rows, one `run` service in this process and the stand-in in its own (as Event Hubs is
   remote; it still shares the machine's CPUs) (target ≥ 20 k records/s);
3. freshness: messages appended live at --rate records/s; each message's enqueued time → the moment its
   rows are visible to a query on the store (target p95 ≤ 2 s at 5 k records/s).
Numbers are machine-dependent; the ratio to the baseline measured in the same run is the comparable figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.standins import amqp_shim  # noqa: E402  (test-only stand-in and pyamqp padding shim)

amqp_shim.install()

from aoai_monitor.config import load  # noqa: E402
from aoai_monitor.pipeline import ingest_files  # noqa: E402
from aoai_monitor.service import Service  # noqa: E402
from aoai_monitor.store import Store  # noqa: E402
from tests.standins.azurite import Azurite  # noqa: E402
from tests.standins.eventhubs import EventHubStandin  # noqa: E402
from bench.gen_records import RESOURCES, records as generated  # noqa: E402
from tests.test_eventhub_input import _RECORD  # noqa: E402

import orjson  # noqa: E402


def config(tmp: Path, connection_string: str, azurite, store: Path) -> Path:
    path = tmp / f"{store.stem}.toml"
    container = azurite.create_container()
    path.write_text(f'[store]\npath = "{store}"\n[service]\nstatus_interval = "2s"\n[[inputs.eventhub]]\n'
                    f'connection_string = "{connection_string}"\n'
                    f'storage_account_connection_string = "{azurite.connection_string}"\n'
                    f'storage_account_container = "{container}"\nmax_wait_time = "0.2s"\n')
    return path


def messages(records: int) -> list[bytes]:
    """The bench mix of bench/gen_records.py (RequestResponse-heavy, Audit, APIM gateway logs, time advancing)
    in `{"records": [...]}` envelopes of 100, as diagnostic settings send them."""
    recs = list(generated(records))
    return [orjson.dumps({"records": recs[i:i + 100]}) for i in range(0, len(recs), 100)]


def baseline(tmp: Path, bodies: list[bytes]) -> float:
    src = tmp / "baseline.jsonl"
    with open(src, "wb") as fh:
        for body in bodies:
            for r in orjson.loads(body)["records"]:
                fh.write(orjson.dumps(r) + b"\n")
    with Store(tmp / "baseline.duckdb") as store:
        summary = ingest_files(store, [src])
    return summary.records / summary.seconds


def throughput(tmp: Path, azurite, bodies: list[bytes]) -> float:
    """The stand-in runs in its own process, preloaded, as Event Hubs would: its AMQP work is not ours."""
    preload = tmp / "messages.ndjson"
    preload.write_bytes(b"\n".join(bodies) + b"\n")
    hub = subprocess.Popen([sys.executable, "-m", "tests.standins.eventhubs", "--eventhub", "bench",
                            "--partitions", "4", "--runtime-metrics", "--preload-file", str(preload)],
                           cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        ready = hub.stdout.readline()
        if not ready.startswith("STANDIN READY"):
            raise SystemExit(f"the Event Hubs stand-in did not start (said {ready!r}); run it alone to see why: "
                             f"python -m tests.standins.eventhubs --preload-file {preload}")
        connection_string = ready.split("connection_string=", 1)[1].strip()
        service = Service(load(config(tmp, connection_string, azurite, tmp / "throughput.duckdb")))
        total = sum(len(orjson.loads(b)["records"]) for b in bodies)

        async def go() -> float:
            task = asyncio.create_task(service.run())
            first = None
            while True:
                n = sum(s.records for s in service.status.parts.values())
                if n and first is None:
                    first = (time.perf_counter(), n)
                if n >= total:
                    break
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
            end = time.perf_counter()
            service.request_stop()
            await task
            # From the first committed batch (start-up excluded: connecting, claiming partitions).
            return (total - first[1]) / (end - first[0])

        return asyncio.run(go())
    finally:
        hub.terminate()
        hub.wait(timeout=10)


def live_body(key: str, records: int) -> bytes:
    """A message of records stamped now (correlation ids `<key>-<n>` tell which message a row came from)."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e7):07d}Z"
    return orjson.dumps({"records": [{**_RECORD, "correlationId": f"{key}-{j}", "time": stamp,
                                      "resourceId": RESOURCES[j % len(RESOURCES)]} for j in range(records)]})


def freshness(tmp: Path, azurite, rate: int, seconds: float) -> list[float]:
    hub = EventHubStandin(eventhub="fresh", partitions=4, send_runtime_metrics=True).start()
    store_path = tmp / "fresh.duckdb"
    try:
        service = Service(load(config(tmp, hub.connection_string(), azurite, store_path)))
        sent: dict[str, float] = {}
        stop = threading.Event()

        def producer() -> None:
            interval = 100 / rate  # one 100-record message per interval, round robin over partitions
            i = 0
            nxt = time.time()
            while not stop.is_set() and i < rate * seconds / 100:
                key = f"fr-{i}"
                sent[key] = time.time()
                hub.append(i % 4, live_body(key, 100), enqueued_time=sent[key])
                i += 1
                nxt += interval
                time.sleep(max(0.0, nxt - time.time()))

        latencies: list[float] = []

        async def go() -> None:
            task = asyncio.create_task(service.run())
            while sum(s.owned for s in service.status.parts.values()) < 4:
                await asyncio.sleep(0.1)
            thread = threading.Thread(target=producer)
            thread.start()
            seen: set[str] = set()
            while thread.is_alive() or len(seen) < len(sent):
                await asyncio.sleep(0.05)
                if task.done():
                    task.result()  # the service ended early: say why
                now = time.time()
                rows = service.store.cursor().execute(
                    "SELECT DISTINCT split_part(\"azure.open_ai.correlation_id\", '-', 2) FROM logs "
                    "WHERE \"event.ingested\" >= now() - INTERVAL 10 SECOND").fetchall()
                for (part,) in rows:
                    key = f"fr-{part}"
                    if key in sent and key not in seen:
                        seen.add(key)
                        latencies.append(now - sent[key])
            stop.set()
            service.request_stop()
            await task

        asyncio.run(go())
        return sorted(latencies)
    finally:
        hub.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000, help="records in the baseline and throughput runs")
    ap.add_argument("--rate", type=int, default=5000, help="records/s sent in the freshness run")
    ap.add_argument("--seconds", type=float, default=20, help="length of the freshness run")
    ap.add_argument("--repeat", type=int, default=3,
                    help="baseline and throughput runs, interleaved; medians are reported (this machine is noisy)")
    args = ap.parse_args()
    bases, rates = [], []
    with tempfile.TemporaryDirectory() as d, Azurite() as azurite:
        bodies = messages(args.records)
        for i in range(args.repeat):
            tmp = Path(d) / f"run{i}"
            tmp.mkdir()
            print(f"[{i + 1}/{args.repeat}] baseline: ingest_files on {args.records:,} NDJSON records …", file=sys.stderr)
            bases.append(baseline(tmp, bodies))
            print(f"[{i + 1}/{args.repeat}] throughput: {args.records:,} records in 100-record messages over 4 "
                  "partitions …", file=sys.stderr)
            rates.append(throughput(tmp, azurite, bodies))
            shutil.rmtree(tmp)
        print(f"freshness: {args.rate:,} records/s for {args.seconds:.0f}s …", file=sys.stderr)
        lat = freshness(Path(d), azurite, args.rate, args.seconds)
    base, rate = statistics.median(bases), statistics.median(rates)
    p50 = lat[len(lat) // 2] if lat else float("nan")
    p95 = lat[int(len(lat) * 0.95)] if lat else float("nan")
    spread = lambda xs: f"(runs: {', '.join(f'{x:,.0f}' for x in xs)})"  # noqa: E731
    print(f"core ingest (baseline):      {base:,.0f} records/s median {spread(bases)}")
    print(f"eventhub → committed rows:   {rate:,.0f} records/s median = {rate / base:.2f} × baseline  "
          f"(target ≥ 20,000/s) {spread(rates)}")
    print(f"freshness at {args.rate:,}/s:       p50 {p50:.2f}s  p95 {p95:.2f}s over {len(lat)} messages  (target p95 ≤ 2 s)")
    print(f"cpus: {os.cpu_count()}  load avg: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
