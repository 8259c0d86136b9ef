"""Event Hub input: diagnostic settings stream here; the azure-eventhub async consumer with the Blob checkpoint store.

Order per batch and partition: normalize → one store commit (documents, dead letters and the partition's
position in the `state` table together) → only then the Blob checkpoint. A crash in between re-reads the
batch, and deterministic ids make the replay insert nothing. Several `run` processes with the same
config share the partitions through the checkpoint store; a stable owner identity (kept in the store)
lets a restarted process take its partitions back at once, and short balancing settings let the others
take a dead process's partitions within seconds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from typing import Any

import orjson
from azure.eventhub.aio import CheckpointStore, EventHubConsumerClient

from ..config import reveal
from ..normalize import Normalized, normalize_payload
from ..pipeline import PreparedChunk, payload_records, prepare_records
from ..store import Store
from . import GroupCommitter, InputStatus, PendingBatch, Workers

log = logging.getLogger("aoai_monitor.sources.eventhub")


class StableOwnerCheckpointStore(CheckpointStore):
    """Writes ownership under a stable owner id instead of the processor's random per-run id.

    The SDK gives each EventProcessor a fresh uuid, so a restarted process would wait for its own old
    claims to expire. This adapter (the SDK's public CheckpointStore interface, no patching) stores claims
    as `owner_id` and maps them to the running processor's id when reading; before that processor's id is
    known, claims left by a previous life of this instance read as released, so they are claimed at once.
    """

    def __init__(self, inner: CheckpointStore, owner_id: str):
        self._inner = inner
        self.owner_id = owner_id
        self._processor_id: str | None = None

    async def list_ownership(self, fully_qualified_namespace, eventhub_name, consumer_group, **kwargs):
        items = await self._inner.list_ownership(fully_qualified_namespace, eventhub_name, consumer_group, **kwargs)
        for item in items:
            if item.get("owner_id") == self.owner_id:
                item["owner_id"] = self._processor_id or ""
        return items

    async def claim_ownership(self, ownership_list, **kwargs):
        for item in ownership_list:
            if item.get("owner_id"):
                self._processor_id = self._processor_id or item["owner_id"]
                if item["owner_id"] == self._processor_id:
                    item["owner_id"] = self.owner_id
        claimed = await self._inner.claim_ownership(ownership_list, **kwargs)
        for item in list(claimed) + list(ownership_list):
            if item.get("owner_id") == self.owner_id:
                item["owner_id"] = self._processor_id
        return claimed

    async def update_checkpoint(self, checkpoint, **kwargs):
        await self._inner.update_checkpoint(checkpoint, **kwargs)

    async def list_checkpoints(self, fully_qualified_namespace, eventhub_name, consumer_group, **kwargs):
        return await self._inner.list_checkpoints(fully_qualified_namespace, eventhub_name, consumer_group, **kwargs)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self._inner.close()


def _body_bytes(event) -> bytes:
    body = event.body
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    if isinstance(body, (dict, list, int, float, bool)) or body is None:
        return orjson.dumps(body, default=str)
    return b"".join(bytes(part) for part in body)


def _credential(settings: dict):
    from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential

    authority = settings["cloud"]["authority"]
    if settings.get("client_secret"):
        if not (settings.get("tenant_id") and settings.get("client_id")):
            raise ValueError(f"input {settings['name']}: client_secret needs tenant_id and client_id too")
        return ClientSecretCredential(settings["tenant_id"], settings["client_id"], reveal(settings["client_secret"]),
                                      authority=authority)
    return DefaultAzureCredential(authority=authority)


def build_checkpoint_store(settings: dict):
    """The SDK's Blob checkpoint store for this input (creating its container when missing)."""
    from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

    container = settings["storage_account_container"]
    if settings.get("storage_account_connection_string"):
        return BlobCheckpointStore.from_connection_string(reveal(settings["storage_account_connection_string"]), container)
    url = f"https://{settings['storage_account']}.blob.{settings['cloud']['storage']}"
    if settings.get("storage_account_key"):
        from azure.core.credentials import AzureNamedKeyCredential
        credential = AzureNamedKeyCredential(settings["storage_account"], reveal(settings["storage_account_key"]))
    else:
        credential = _credential(settings)
    return BlobCheckpointStore(url, container, credential=credential)


async def ensure_container(settings: dict) -> None:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob.aio import ContainerClient

    container = settings["storage_account_container"]
    if settings.get("storage_account_connection_string"):
        client = ContainerClient.from_connection_string(reveal(settings["storage_account_connection_string"]), container)
    else:
        url = f"https://{settings['storage_account']}.blob.{settings['cloud']['storage']}"
        if settings.get("storage_account_key"):
            from azure.core.credentials import AzureNamedKeyCredential
            cred = AzureNamedKeyCredential(settings["storage_account"], reveal(settings["storage_account_key"]))
        else:
            cred = _credential(settings)
        client = ContainerClient(url, container, credential=cred)
    async with client:
        try:
            await client.create_container()
        except ResourceExistsError:
            pass


class EventHubInput:
    """One `[[inputs.eventhub]]`: consume, commit, checkpoint; counters in `status`."""

    kind = "eventhub"

    def __init__(self, settings: dict, store: Store, status: InputStatus, stopping: asyncio.Event):
        self.settings = settings
        self.name = settings["name"]
        self.store = store
        self.status = status
        self.stopping = stopping
        self._inflight = 0
        self._runtime_info_at: dict[str, float] = {}  # partition → monotonic time its last runtime info came
        self._idle = asyncio.Event()
        self._idle.set()
        self.client: EventHubConsumerClient | None = None
        self.committer = GroupCommitter(store, stopping, self.name)
        # Parsing and normalizing hold the GIL: in worker processes they run beside the SDK and the store's writes.
        self.workers = Workers(settings["workers"], self.name, prepare_bodies, [], "", "")

    def _state_key(self, partition: str) -> str:
        return f"eventhub:{self.name}:{partition}"

    def owner_id(self) -> str:
        """This instance's stable owner identity: from the config, else created once and kept in the store."""
        if self.settings.get("owner_id"):
            return self.settings["owner_id"]
        key = f"eventhub:{self.name}:owner_id"
        owner = self.store.get_state(key)
        if not owner:
            owner = f"{socket.gethostname()}-{uuid.uuid4().hex[:12]}"
            self.store.commit(state={key: owner})
        return owner

    def _client(self, checkpoint_store: CheckpointStore) -> EventHubConsumerClient:
        s = self.settings
        kwargs: dict[str, Any] = dict(
            consumer_group=s["consumer_group"], eventhub_name=s["eventhub"], checkpoint_store=checkpoint_store,
            load_balancing_interval=s["load_balancing_interval"],
            partition_ownership_expiration_interval=s["ownership_expiration"],
            load_balancing_strategy="greedy")
        if s.get("connection_string"):
            return EventHubConsumerClient.from_connection_string(reveal(s["connection_string"]), **kwargs)
        return EventHubConsumerClient(s["fully_qualified_namespace"], credential=_credential(s), **kwargs)

    async def _starting_positions(self, client: EventHubConsumerClient) -> dict[str, Any]:
        """Per partition: after the last position committed in the store, else the configured start.

        Only used where the Blob checkpoint is missing (the SDK lets a checkpoint win), e.g. a new
        checkpoint container: the store still knows where it was.
        """
        stored = self.store.state_items(f"eventhub:{self.name}:")
        positions = {}
        for pid in await client.get_partition_ids():
            state = stored.get(self._state_key(pid))
            positions[pid] = state["offset"] if isinstance(state, dict) and state.get("offset") else self.settings["start_position"]
        return positions

    async def run(self) -> None:
        """Consume until `stopping` is set; then drain in-flight batches and release the partitions."""
        s = self.settings
        if s.get("storage_account_connection_string") or s.get("storage_account_key"):
            await ensure_container(s)
        checkpoint_store = StableOwnerCheckpointStore(build_checkpoint_store(s), self.owner_id())
        client = self.client = self._client(checkpoint_store)
        started = self.workers.start()
        if started is not None:
            await asyncio.wrap_future(started)
        try:
            await self._consume(client, checkpoint_store)
        finally:
            self.workers.close()

    async def _consume(self, client: EventHubConsumerClient, checkpoint_store) -> None:
        s = self.settings
        async with client, checkpoint_store:
            positions = await self._starting_positions(client)
            receiver = asyncio.create_task(client.receive_batch(
                on_event_batch=self._on_batch, max_batch_size=s["max_batch_size"], max_wait_time=s["max_wait_time"],
                prefetch=s["prefetch"], starting_position=positions, track_last_enqueued_event_properties=True,
                on_error=self._on_error, on_partition_initialize=self._on_init, on_partition_close=self._on_close))
            lag = asyncio.create_task(self._poll_lag(client))
            committer = asyncio.create_task(self.committer.run())
            stop = asyncio.create_task(self.stopping.wait())
            done, _ = await asyncio.wait({receiver, stop, committer}, return_when=asyncio.FIRST_COMPLETED)
            lag.cancel()
            if receiver in done or committer in done:
                stop.cancel()
                committer.cancel()
                receiver.cancel()
                for task in done:
                    task.result()  # surfaces why the consumer ended
                return
            await self._idle.wait()           # batches being prepared reach the committer …
            await self.committer.drain()      # … and are committed and checkpointed
            committer.cancel()
            await client.close()     # releases ownership so the other instances take over at once
            try:
                await asyncio.wait_for(receiver, 10)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                receiver.cancel()

    async def _poll_lag(self, client: EventHubConsumerClient) -> None:
        """Lag of owned partitions that receive no runtime info (idle, or a service that sends none), from the
        partition properties: newest enqueued minus newest committed.

        Each properties request opens its own AMQP connection (TLS, auth) and blocks the event loop for tens of
        milliseconds, so a partition whose deliveries carry runtime info is not asked.
        """
        processed = self.store.state_items(f"eventhub:{self.name}:")
        interval = max(self.settings["load_balancing_interval"], 5.0)
        while True:
            await asyncio.sleep(interval)
            for (name, pid), stats in list(self.status.parts.items()):
                if name != self.name or pid == "*" or not stats.owned:
                    continue
                if time.monotonic() - self._runtime_info_at.get(pid, -interval) < interval:
                    continue
                try:
                    props = await client.get_partition_properties(pid)
                except Exception as exc:  # informational only; the consumer reports real failures
                    log.debug("%s: partition %s properties: %s", self.name, pid, exc)
                    continue
                if stats.last_sequence is None:
                    state = processed.get(self._state_key(pid))
                    stats.last_sequence = state.get("sequence_number", -1) if isinstance(state, dict) else -1
                stats.lag_events = max(0, props["last_enqueued_sequence_number"] - stats.last_sequence)
                if props.get("last_enqueued_time_utc"):
                    stats.last_enqueued_ms = int(props["last_enqueued_time_utc"].timestamp() * 1000)

    async def _on_init(self, ctx) -> None:
        stats = self.status.get(self.name, ctx.partition_id)
        stats.owned = True
        log.info("%s: partition %s claimed", self.name, ctx.partition_id)

    async def _on_close(self, ctx, reason) -> None:
        self.status.get(self.name, ctx.partition_id).owned = False
        log.info("%s: partition %s released (%s)", self.name, ctx.partition_id, getattr(reason, "name", reason))

    async def _on_error(self, ctx, error) -> None:
        where = f"partition {ctx.partition_id}" if ctx else "load balancing"
        if ctx is not None:
            self.status.get(self.name, ctx.partition_id).error = f"{type(error).__name__}: {str(error)[:200]}"
        log.warning("%s: %s: %s: %s (the SDK retries; check the connection string, network and the checkpoint "
                    "storage account if this repeats)", self.name, where, type(error).__name__, str(error)[:300])

    async def _on_batch(self, ctx, events: list) -> None:
        stats = self.status.get(self.name, ctx.partition_id)
        props = ctx.last_enqueued_event_properties or {}
        if props.get("enqueued_time"):
            stats.last_enqueued_ms = int(props["enqueued_time"].timestamp() * 1000)
        if props.get("retrieval_time") and events:
            self._runtime_info_at[ctx.partition_id] = time.monotonic()
        if not events:
            return
        if self.stopping.is_set():
            return  # draining: not checkpointed, so read again after the restart
        self._inflight += 1
        self._idle.clear()
        try:
            await self._process(ctx, events, stats, props)
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()

    async def _process(self, ctx, events: list, stats, props: dict) -> None:
        """Prepare the batch and hand it to the group committer; the checkpoint follows its commit."""
        hub = self.settings["eventhub"]
        pid = ctx.partition_id
        last = events[-1]
        bodies, unreadable = event_bodies(events, f"eventhub:{hub}/{pid}")
        prepared, extra = await self.workers.run(prepare_bodies, bodies, hub, pid)
        extra.extend(unreadable)
        position = {"offset": last.offset, "sequence_number": last.sequence_number,
                    "enqueued_ms": int(last.enqueued_time.timestamp() * 1000)}
        records = prepared.records + extra.records
        # Only dead letters of this batch count for the partition (the group's result covers all partitions).
        dead = (prepared.rejects.num_rows if prepared.rejects is not None else 0) + len(extra.rejects)

        async def after(result, checkpoint: bool) -> None:
            if result is None:
                return  # stopping and the store refused: no checkpoint, the batch is read again after restart
            stats.add(records, dead)
            stats.last_processed_ms = position["enqueued_ms"]
            stats.last_sequence = last.sequence_number
            if props.get("sequence_number") is not None:
                stats.lag_events = max(0, props["sequence_number"] - last.sequence_number)
            if not checkpoint:
                return  # a later batch of this partition in the same commit checkpoints for both
            try:
                await ctx.update_checkpoint(last)
                stats.checkpoint_ms = int(time.time() * 1000)
            except Exception as exc:  # stored already; the next batch's checkpoint covers this one
                stats.error = f"checkpoint failed: {type(exc).__name__}: {str(exc)[:200]}"
                log.warning("%s partition %s: checkpoint failed (%s); data is stored, the next batch retries it",
                            self.name, pid, type(exc).__name__)

        await self.committer.submit(PendingBatch(prepared, extra, {self._state_key(pid): position}, records, stats,
                                                 key=pid, after=after))


def event_bodies(events: list, source: str) -> tuple[list[tuple[int, bytes]], Normalized]:
    """(offset, body bytes) of each message; a body that cannot be read is dead-lettered here."""
    bodies: list[tuple[int, bytes]] = []
    unreadable = Normalized()
    for event in events:
        try:
            bodies.append((int(event.offset), _body_bytes(event)))
        except Exception as exc:
            unreadable.records += 1
            unreadable.rejects.append((f"{source}:{event.offset}",
                                       f"unreadable event body: {type(exc).__name__}: {exc}", repr(event)[:10000]))
    return bodies, unreadable


def prepare_bodies(bodies: list[tuple[int, bytes]], hub: str, partition: str) -> tuple[PreparedChunk, Normalized]:
    """Message bodies → the store's fast-path chunk (clean `{"records": [...]}` envelopes, parsed once) plus,
    for anything else, the tolerant normalizer's output. Pure CPU: runs in the input's worker processes.
    Dead letters name partition and offset (`eventhub:<hub>/<partition>:<offset>`)."""
    source = f"eventhub:{hub}/{partition}"
    records: list[dict] = []
    offsets: list[int] = []
    extra = Normalized()
    for offset, body in bodies:
        parsed = payload_records(body)
        if parsed is None:  # not a clean envelope: the tolerant decoder repairs or dead-letters it
            extra.extend(normalize_payload(body, f"{source}:{offset}"))
            continue
        records += parsed
        offsets += [offset] * len(parsed)
    return prepare_records(records, source, offsets), extra
