"""The Azure stand-ins against the real SDKs (no mocks).

These tests pin down that the Event Hubs stand-in and Azurite behave enough
like the real services for the product's Event Hub input tests to mean
something: properties, live sends, offsets and sequence numbers, checkpoint
resume, load balancing with link stealing, and bulk throughput.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import time
from collections import defaultdict
from typing import Callable, Dict, List, Tuple

from azure.eventhub import EventData, EventHubProducerClient
from azure.eventhub.aio import EventHubConsumerClient, EventHubProducerClient as AsyncProducer
from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

from tests.standins import amqp_shim
from tests.standins.eventhubs import EventHubStandin

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Fast balancing so hand-overs happen within seconds (the SDK default is 30 s / 180 s).
FAST_BALANCING = {"load_balancing_interval": 1, "partition_ownership_expiration_interval": 3}


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


class Collector:
    """on_event callback that records events and (optionally) checkpoints each one."""

    def __init__(self, checkpoint: bool = False) -> None:
        self.events: List[Tuple[str, int, str, bytes]] = []
        self.raw: List[Tuple[str, EventData]] = []
        self.checkpoint = checkpoint
        self.owned: set = set()
        self.lost: List[str] = []

    async def on_event(self, ctx, event) -> None:
        if event is None:
            return
        if self.checkpoint:  # first, so a counted event is a checkpointed one
            await ctx.update_checkpoint(event)
        self.events.append((ctx.partition_id, event.sequence_number, event.offset, b"".join(event.body)))
        self.raw.append((ctx.partition_id, event))

    async def on_partition_initialize(self, ctx) -> None:
        self.owned.add(ctx.partition_id)

    async def on_partition_close(self, ctx, reason) -> None:
        self.owned.discard(ctx.partition_id)
        self.lost.append(ctx.partition_id)

    def callbacks(self) -> Dict[str, Callable]:
        return {"on_event": self.on_event, "on_partition_initialize": self.on_partition_initialize,
                "on_partition_close": self.on_partition_close}


def expected_tuples(hub: EventHubStandin) -> List[Tuple[str, int, str, bytes]]:
    return sorted((e.partition_id, e.sequence_number, e.offset, e.body)
                  for pid in hub.partition_ids for e in hub.events(pid))


def consumer(hub: EventHubStandin, **kwargs) -> EventHubConsumerClient:
    # Always a short balancing interval, also without a checkpoint store: the
    # receive() task only notices close() after its current balancing sleep
    # (30 s by default), so awaiting it would otherwise stall every test.
    kwargs = {**FAST_BALANCING, **kwargs}
    return EventHubConsumerClient.from_connection_string(hub.connection_string(), "$Default", **kwargs)


# --------------------------------------------------------------------------- properties


def test_eventhub_and_partition_properties(eventhub_standin: EventHubStandin) -> None:
    hub = eventhub_standin
    when = dt.datetime(2024, 4, 8, 12, 23, 3, tzinfo=dt.timezone.utc)
    for i in range(3):
        hub.append("1", f"event {i}".encode(), enqueued_time=when + dt.timedelta(seconds=i))

    with EventHubProducerClient.from_connection_string(hub.connection_string()) as client:
        props = client.get_eventhub_properties()
        assert props["eventhub_name"] == "aoai-logs"
        assert props["partition_ids"] == ["0", "1", "2", "3"]
        assert isinstance(props["created_at"], dt.datetime)

        empty = client.get_partition_properties("0")
        assert empty["is_empty"] is True
        assert empty["last_enqueued_sequence_number"] == -1
        assert empty["last_enqueued_offset"] == "-1"

        busy = client.get_partition_properties("1")
        last = hub.events("1")[-1]
        assert busy["is_empty"] is False
        assert busy["beginning_sequence_number"] == 0
        assert busy["last_enqueued_sequence_number"] == 2
        assert busy["last_enqueued_offset"] == last.offset
        assert isinstance(busy["last_enqueued_offset"], str)
        assert busy["last_enqueued_time_utc"] == when + dt.timedelta(seconds=2)


# --------------------------------------------------------------------------- send and receive


async def test_producer_batches_and_singles_reach_async_consumer(eventhub_standin, azurite,
                                                                 checkpoint_container) -> None:
    hub = eventhub_standin
    store = BlobCheckpointStore.from_connection_string(azurite.connection_string, checkpoint_container)
    collector = Collector(checkpoint=True)
    client = consumer(hub, checkpoint_store=store)
    task = asyncio.create_task(client.receive(**collector.callbacks()))  # default: "@latest", live only
    try:
        await wait_until(lambda: len(hub.active_receivers()) == 4, 15, "4 partition receivers")

        async with AsyncProducer.from_connection_string(hub.connection_string()) as producer:
            batch = await producer.create_batch(partition_key="tenant-a")
            for i in range(5):
                batch.add(EventData(f"keyed {i}"))
            await producer.send_batch(batch)

            batch = await producer.create_batch(partition_id="3")
            for i in range(4):
                event = EventData(f"pinned {i}")
                event.properties = {"n": i, "kind": "pinned"}
                batch.add(event)
            await producer.send_batch(batch)

            await producer.send_batch([EventData(f"listed {i}") for i in range(3)])  # SDK builds a batch
            await producer.send_event(EventData("single to partition 2"), partition_id="2")
            await producer.send_event(EventData("single keyed"), partition_key="tenant-a")
            await producer.send_event(EventData("single anywhere"))

        total = 5 + 4 + 3 + 3
        assert hub.event_count() == total
        await wait_until(lambda: len(collector.events) >= total, 15, f"{total} events")
        await asyncio.sleep(0.3)  # anything extra (a duplicate) would arrive now
    finally:
        await client.close()
        await task

    try:
        checkpoints = await store.list_checkpoints(hub.namespace, hub.eventhub_name, "$Default")
    finally:
        await store.close()

    assert sorted(collector.events) == expected_tuples(hub)

    # The partition key keeps a tenant on one partition, and the batch went to one partition.
    keyed = [e for pid in hub.partition_ids for e in hub.events(pid) if e.partition_key == "tenant-a"]
    assert len(keyed) == 6 and len({e.partition_id for e in keyed}) == 1
    pinned = [e.body for e in hub.events("3") if e.body.startswith(b"pinned")]
    assert pinned == [f"pinned {i}".encode() for i in range(4)]

    # What the SDK shows the product for a received event.
    by_body = {b"".join(ev.body): (pid, ev) for pid, ev in collector.raw}
    pid, ev = by_body[b"pinned 2"]
    assert pid == "3"
    assert ev.properties == {b"n": 2, b"kind": b"pinned"}
    assert isinstance(ev.offset, str) and isinstance(ev.sequence_number, int)
    assert ev.enqueued_time.tzinfo is not None
    _, keyed_event = by_body[b"keyed 0"]
    assert keyed_event.partition_key == b"tenant-a"

    # Offsets are byte positions, not sequence numbers.
    offsets = [e.offset for e in hub.events(keyed[0].partition_id)]
    assert offsets[1] != "1" and [int(o) for o in offsets] == sorted(int(o) for o in offsets)

    # Checkpoints were written to Azurite in the SDK's layout.
    assert {c["partition_id"]: c["sequence_number"] for c in checkpoints} == {
        p: len(hub.events(p)) - 1 for p in hub.partition_ids if hub.events(p)}


async def test_restart_resumes_after_checkpoint(eventhub_standin, azurite, checkpoint_container) -> None:
    hub = eventhub_standin
    for pid in hub.partition_ids:
        hub.append_many(pid, (f"old {pid}-{i}".encode() for i in range(10)))

    async def run_once(expected: int) -> Collector:
        store = BlobCheckpointStore.from_connection_string(azurite.connection_string, checkpoint_container)
        collector = Collector(checkpoint=True)
        client = consumer(hub, checkpoint_store=store)
        task = asyncio.create_task(client.receive(starting_position="-1", **collector.callbacks()))
        try:
            await wait_until(lambda: len(collector.events) >= expected, 15, f"{expected} events")
            await asyncio.sleep(0.5)  # give re-deliveries a chance to show up
        finally:
            await client.close()
            await task
            await store.close()
        return collector

    first = await run_once(40)
    assert len(first.events) == 40

    for pid in hub.partition_ids:
        hub.append_many(pid, (f"new {pid}-{i}".encode() for i in range(5)))

    second = await run_once(20)
    # Exactly the new events: the checkpoint wins over starting_position="-1".
    assert len(second.events) == 20, second.events
    assert {body for *_, body in second.events} == {f"new {p}-{i}".encode() for p in hub.partition_ids
                                                     for i in range(5)}
    assert {seq for _, seq, _, _ in second.events} == set(range(10, 15))


async def test_two_consumers_split_partitions_and_hand_over(eventhub_standin, azurite,
                                                            checkpoint_container) -> None:
    hub = eventhub_standin
    store_a = BlobCheckpointStore.from_connection_string(azurite.connection_string, checkpoint_container)
    store_b = BlobCheckpointStore.from_connection_string(azurite.connection_string, checkpoint_container)
    a, b = Collector(), Collector()
    client_a = consumer(hub, checkpoint_store=store_a)
    client_b = consumer(hub, checkpoint_store=store_b)
    task_a = asyncio.create_task(client_a.receive(starting_position="-1", **a.callbacks()))
    task_b = None
    try:
        await wait_until(lambda: len(a.owned) == 4, 15, "A to own all 4 partitions")
        task_b = asyncio.create_task(client_b.receive(starting_position="-1", **b.callbacks()))
        # B steals from A one partition per balancing round: the stand-in then
        # detaches A's epoch receiver with amqp:link:stolen.
        await wait_until(lambda: len(a.owned) == 2 and len(b.owned) == 2, 20, "a 2/2 split")
        assert a.owned.isdisjoint(b.owned)
        assert len(a.lost) >= 2
        await wait_until(lambda: len(hub.active_receivers()) == 4, 10, "one receiver per partition")
        receivers = hub.active_receivers()
        assert sorted(r["partition_id"] for r in receivers) == ["0", "1", "2", "3"]
        assert all(r["epoch"] is not None for r in receivers)

        # Live events reach whichever consumer owns each partition.
        for pid in hub.partition_ids:
            hub.append(pid, f"split {pid}".encode())
        await wait_until(lambda: len(a.events) + len(b.events) == 4, 10, "events after the split")

        started = time.monotonic()
        await client_a.close()
        await task_a
        await wait_until(lambda: len(b.owned) == 4, 10, "B to take all 4 partitions")
        handover = time.monotonic() - started
        assert handover < 8, handover

        for pid in hub.partition_ids:
            hub.append(pid, f"after {pid}".encode())
        await wait_until(lambda: sum(body.startswith(b"after") for *_, body in b.events) == 4, 10,
                         "B to read every partition")
    finally:
        await client_a.close()
        await client_b.close()
        for task in (task_a, task_b):
            if task is not None:
                await task
        await store_a.close()
        await store_b.close()


async def test_starting_positions() -> None:
    """Every selector filter the SDK sends, one partition each, through one client."""
    base = dt.datetime(2024, 4, 8, 12, 0, tzinfo=dt.timezone.utc)
    with EventHubStandin(eventhub="positions", partitions=6) as hub:
        for pid in hub.partition_ids:
            for i in range(10):
                hub.append(pid, f"e{i}".encode(), enqueued_time=base + dt.timedelta(minutes=i))
        offset_4 = hub.events("4")[4].offset
        positions = {
            "0": "-1",  # earliest
            # Explicit: with a dict, partitions left out start at "-1", not "@latest" (SDK behaviour).
            "1": "@latest",  # skips what is already there
            "2": 6,  # sequence number, exclusive
            "3": 6,  # ... inclusive, see below
            "4": offset_4,  # offset (a string), exclusive
            "5": base + dt.timedelta(minutes=7, seconds=30),  # enqueued time
        }
        collector = Collector()
        client = EventHubConsumerClient.from_connection_string(hub.connection_string(), "$Default",
                                                               **FAST_BALANCING)
        task = asyncio.create_task(client.receive(
            collector.on_event, starting_position=positions, starting_position_inclusive={"3": True}))
        try:
            await wait_until(lambda: len(hub.active_receivers()) == 6, 15, "6 receivers")
            await wait_until(lambda: len(collector.events) >= 10 + 3 + 4 + 5 + 2, 10, "the events")
            hub.append("1", b"live")  # @latest still gets new events
            await wait_until(lambda: any(pid == "1" for pid, *_ in collector.events), 10, "the live event")
            await asyncio.sleep(0.3)
        finally:
            await client.close()
            await task

    got: Dict[str, List[int]] = defaultdict(list)
    for pid, seq, _, _ in collector.events:
        got[pid].append(seq)
    assert dict(got) == {
        "0": list(range(10)),
        "1": [10],
        "2": [7, 8, 9],
        "3": [6, 7, 8, 9],
        "4": [5, 6, 7, 8, 9],
        "5": [8, 9],
    }


async def test_owner_level_receivers_share_and_steal(eventhub_standin) -> None:
    """Plain receivers share a partition; an owner-level (epoch) receiver takes it over."""
    hub = eventhub_standin
    hub.append("0", b"before")
    received: Dict[str, List[int]] = defaultdict(list)
    errors: Dict[str, List[Exception]] = defaultdict(list)
    clients = {name: consumer(hub) for name in ("plain1", "plain2", "owner")}

    def callbacks(name: str) -> Dict[str, Callable]:
        async def on_event(ctx, event) -> None:
            received[name].append(event.sequence_number)

        async def on_error(ctx, error) -> None:
            errors[name].append(error)

        return {"on_event": on_event, "on_error": on_error}

    tasks = [asyncio.create_task(clients[name].receive(partition_id="0", starting_position="-1", **callbacks(name)))
             for name in ("plain1", "plain2")]
    try:
        await wait_until(lambda: received["plain1"] == [0] and received["plain2"] == [0], 10, "both plain receivers")
        tasks.append(asyncio.create_task(clients["owner"].receive(
            partition_id="0", starting_position="-1", owner_level=5, **callbacks("owner"))))
        await wait_until(lambda: received["owner"] == [0], 10, "the owner-level receiver")
        await wait_until(lambda: [r["epoch"] for r in hub.active_receivers()] == [5], 10, "the take-over")
        hub.append("0", b"after")
        await wait_until(lambda: received["owner"] == [0, 1], 10, "the owner to get new events")
        # Each plain client notices its detach when its receive loop next runs.
        await wait_until(lambda: errors["plain1"] and errors["plain2"], 10, "both plain receivers to fail")
    finally:
        for client in clients.values():
            await client.close()
        for task in tasks:
            await task
    # The SDK reports the detach as ConnectionLostError carrying amqp:link:stolen.
    for name in ("plain1", "plain2"):
        assert received[name] == [0]
        assert errors[name] and "amqp:link:stolen" in str(errors[name][0])
    assert not errors["owner"]


# --------------------------------------------------------------------------- bulk


async def test_preloaded_100k_events_with_receive_batch(eventhub_standin, record_property) -> None:
    hub = eventhub_standin
    total = 100_000
    body = (b'{"time":"2024-04-08T12:23:03.0000000Z","resourceId":"/SUBSCRIPTIONS/0000/RESOURCEGROUPS/RG/'
            b'PROVIDERS/MICROSOFT.COGNITIVESERVICES/ACCOUNTS/AOAI","category":"RequestResponse",'
            b'"operationName":"ChatCompletions_Create","durationMs":812,"resultSignature":"200"}')
    started = time.perf_counter()
    for i in range(total):
        hub.append(i % hub.partition_count, body)
    preload_s = time.perf_counter() - started

    counts: Dict[str, int] = defaultdict(int)
    last_seq: Dict[str, int] = {}
    done = asyncio.Event()

    async def on_batch(ctx, batch) -> None:
        for event in batch:  # in order, no gaps, per partition
            assert event.sequence_number == last_seq.get(ctx.partition_id, -1) + 1
            last_seq[ctx.partition_id] = event.sequence_number
        counts[ctx.partition_id] += len(batch)
        if sum(counts.values()) >= total:
            done.set()

    client = consumer(hub)
    started = time.perf_counter()
    task = asyncio.create_task(client.receive_batch(on_batch, starting_position="-1", max_batch_size=300))
    try:
        # About 15 s on an idle 2-core machine; the margin is for a busy one.
        await asyncio.wait_for(done.wait(), 240)
        receive_s = time.perf_counter() - started
    finally:
        await client.close()
        await task

    assert sum(counts.values()) == total
    assert dict(counts) == {pid: total // 4 for pid in hub.partition_ids}
    rate = total / receive_s
    record_property("events_per_second", round(rate))
    print(f"\npreload {total} events: {preload_s:.2f}s; receive_batch: {receive_s:.2f}s = {rate:,.0f} events/s")


# --------------------------------------------------------------------------- subprocess mode


def test_subprocess_standin_and_sitecustomize_shim(tmp_path) -> None:
    """The stand-in runs as `python -m tests.standins.eventhubs` and a child
    process that only has the sitecustomize directory on PYTHONPATH can talk to it."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.standins.eventhubs", "--port", "0", "--eventhub", "other-hub",
         "--partitions", "2"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = server.stdout.readline()
        assert ready.startswith("STANDIN READY port="), ready + server.stderr.read()
        conn_str = ready.split("connection_string=", 1)[1].strip()
        assert "EntityPath=other-hub" in conn_str and "UseDevelopmentEmulator=true" in conn_str

        script = (
            "import sys\n"
            "from azure.eventhub import EventHubProducerClient, EventData\n"
            "assert 'tests' not in sys.modules\n"
            f"c = EventHubProducerClient.from_connection_string({conn_str!r})\n"
            "c.send_event(EventData(b'from child'), partition_id='1')\n"
            "print(c.get_partition_properties('1')['last_enqueued_sequence_number'])\n"
            "c.close()\n"
        )
        child = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), capture_output=True, text=True,
                               env=amqp_shim.subprocess_env(), timeout=60)
        assert child.returncode == 0, child.stderr
        assert child.stdout.strip() == "0"
    finally:
        server.terminate()
        assert server.wait(10) == 0
