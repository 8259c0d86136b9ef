"""An in-memory AMQP 1.0 stand-in for Azure Event Hubs, for tests only.

Microsoft's Event Hubs emulator ships only as a Docker image, so tests run the
unmodified ``azure-eventhub`` SDK against this small server built on
python-qpid-proton instead.  It speaks the parts of the service the SDK uses
(see docs in shared/reference/azure.md, section 14.5):

* SASL ANONYMOUS on plain TCP (the SDK does this with
  ``UseDevelopmentEmulator=true`` in the connection string);
* ``$cbs`` put-token (always accepted) and ``$management`` READ of the
  event hub and of partitions;
* partition receive links with selector filters on offset, sequence number
  or enqueued time, honouring link credit (the SDK's prefetch);
* owner-level ("epoch") receivers: a newer receiver with an equal or higher
  owner level detaches the older one with ``amqp:link:stolen``, which is what
  lets the SDK's load balancer hand partitions over between processes;
* producer links to the event hub (round robin, or a hash of the partition
  key) or to one partition, for single events and for batches.

Events live in memory.  ``append()`` adds events without any AMQP so a test
can preload 100k events in well under a second.

The SDK's pyamqp decoder also needs :mod:`tests.standins.amqp_shim` in the
client process (proton trims trailing null fields of BEGIN and pyamqp then
fails with "list index out of range").

Use in-process::

    hub = EventHubStandin(eventhub="aoai-logs", partitions=4).start()
    conn_str = hub.connection_string()
    ...
    hub.stop()

or as a subprocess::

    python -m tests.standins.eventhubs --port 0 --eventhub aoai-logs --partitions 4 [--preload-file F]
    # prints: STANDIN READY port=<port> connection_string=<...>; stops on SIGTERM/SIGINT
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import logging
import re
import signal
import sys
import threading
import time
import uuid
import zlib
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from proton import Condition, Delivery, Described, Endpoint, Handler, Link, symbol
from proton.reactor import ApplicationEvent, Container, EventInjector

from azure.eventhub._pyamqp._decode import decode_payload

from . import _amqp_codec as codec
from . import amqp_shim

log = logging.getLogger(__name__)


class _QuietPeerResets(logging.Filter):
    """Drop proton's ERROR record for a peer that closed its socket first.

    pyamqp closes the socket right after sending CLOSE, so proton's reply
    fails with ECONNRESET/EPIPE on every client shutdown.  That is normal,
    and an ERROR line in captured logs would only mislead tests.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        is_socket_error = message.startswith(("Couldn't send:", "Couldn't recv:"))
        is_peer_gone = "ConnectionResetError" in message or "BrokenPipeError" in message
        return not (is_socket_error and is_peer_gone)


logging.getLogger("proton").addFilter(_QuietPeerResets())

# Annotation and property names used by the service and the SDK.
SEQUENCE_NUMBER = "x-opt-sequence-number"
OFFSET = "x-opt-offset"
ENQUEUED_TIME = "x-opt-enqueued-time"
PARTITION_KEY = "x-opt-partition-key"
EPOCH = "com.microsoft:epoch"
RUNTIME_METRIC = "com.microsoft:enable-receiver-runtime-metric"
LINK_STOLEN = "amqp:link:stolen"
NOT_FOUND = "amqp:not-found"

# Encoded once: they go into every stored event.
_SEQUENCE_NUMBER_KEY = codec.encode_symbol(SEQUENCE_NUMBER)
_OFFSET_KEY = codec.encode_symbol(OFFSET)
_ENQUEUED_TIME_KEY = codec.encode_symbol(ENQUEUED_TIME)

# What the standard tier reports on producer links; the SDK sizes batches by it.
MAX_MESSAGE_SIZE = 1024 * 1024

SAS_KEY_NAME = "RootManageSharedAccessKey"
SAS_KEY_VALUE = "SAS_KEY_VALUE"

_SELECTOR_RE = re.compile(
    r"amqp\.annotation\.(x-opt-offset|x-opt-sequence-number|x-opt-enqueued-time)\s*(>=|>|=)\s*'?([^']*)'?"
)

EnqueuedTime = Union[None, _dt.datetime, int, float]


class StoredEvent:
    """One event as stored in a partition, with the attributes tests compare.

    ``offset`` is a string, as the service and the SDK report it; offsets are
    byte positions in the partition (not equal to the sequence number), so
    code that confuses the two fails against the stand-in too.
    """

    __slots__ = ("partition_id", "sequence_number", "offset_value", "enqueued_time_ms",
                 "body", "properties", "partition_key", "wire", "header_len")

    def __init__(self, partition_id: str, sequence_number: int, offset_value: int, enqueued_time_ms: int,
                 body: Optional[bytes], properties: Optional[Dict[Any, Any]], partition_key: Optional[str],
                 wire: bytes, header_len: int) -> None:
        self.partition_id = partition_id
        self.sequence_number = sequence_number
        self.offset_value = offset_value
        self.enqueued_time_ms = enqueued_time_ms
        self.body = body
        self.properties = properties
        self.partition_key = partition_key
        self.wire = wire  # the complete encoded message as delivered
        self.header_len = header_len  # delivery annotations go right after the header

    @property
    def offset(self) -> str:
        return str(self.offset_value)

    @property
    def enqueued_time(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self.enqueued_time_ms / 1000, tz=_dt.timezone.utc)

    def __repr__(self) -> str:
        return (f"StoredEvent(partition={self.partition_id}, seq={self.sequence_number}, "
                f"offset={self.offset}, body={self.body[:40] if self.body else self.body!r})")


class _Partition:
    def __init__(self, partition_id: str) -> None:
        self.id = partition_id
        self.events: List[StoredEvent] = []
        self.next_offset = 0


def _to_ms(value: EnqueuedTime) -> int:
    if value is None:
        return int(time.time() * 1000)
    if isinstance(value, _dt.datetime):
        return codec.datetime_to_ms(value)
    return int(round(float(value) * 1000))  # POSIX seconds, like time.time()


def _node_path(address: Optional[str]) -> List[str]:
    """Path segments of a link address, with any scheme://host prefix removed.

    The SDK uses full URLs for partition links (``amqps://host/hub/...``) and
    bare names for ``$cbs`` / ``$management``.
    """
    if not address:
        return []
    if "://" in address:
        rest = address.split("://", 1)[1]
        address = rest.split("/", 1)[1] if "/" in rest else ""
    return [segment for segment in address.strip("/").split("/") if segment]


class _Receiver:
    """Book-keeping for one partition receive link (a sender on our side)."""

    def __init__(self, link: Link, partition: _Partition, consumer_group: str, epoch: Optional[int],
                 next_seq: int, runtime_metric: bool, connection_id: int) -> None:
        self.link = link
        self.partition = partition
        self.consumer_group = consumer_group
        self.epoch = epoch
        self.next_seq = next_seq
        self.runtime_metric = runtime_metric
        self.connection_id = connection_id
        self.name = link.name
        self.active = True


class EventHubStandin:
    """In-memory Event Hubs namespace holding one event hub.

    Thread model: the proton container runs in its own thread and owns every
    AMQP object.  Other threads only touch the event store (under ``_lock``)
    and then poke the container through an ``EventInjector`` so that waiting
    receivers are served.
    """

    def __init__(self, eventhub: str = "aoai-logs", partitions: int = 4, host: str = "127.0.0.1",
                 port: int = 0, send_runtime_metrics: bool = False) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.eventhub_name = eventhub
        # Add last-enqueued-event delivery annotations to every delivery.
        self.send_runtime_metrics = send_runtime_metrics
        self.host = host
        self._requested_port = port
        self.port: Optional[int] = None
        self.created_at_ms = int(time.time() * 1000)
        self._partitions = [_Partition(str(i)) for i in range(partitions)]
        self._lock = threading.Lock()
        self._round_robin = itertools.cycle(range(partitions))
        self._wake_pending = False
        self._container: Optional[Container] = None
        self._injector: Optional[EventInjector] = None
        self._thread: Optional[threading.Thread] = None
        self._broker: Optional[_Broker] = None
        # Exceptions raised inside the container thread; tests can assert it stays empty.
        self.errors: List[BaseException] = []
        # $management READs answered, by entity type (e.g. "com.microsoft:partition").
        self.management_reads: Dict[str, int] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "EventHubStandin":
        if self._thread is not None:
            raise RuntimeError("already started")
        # In-process clients need the pyamqp padding shim (see amqp_shim).
        amqp_shim.install()
        self._broker = _Broker(self)
        container = Container(self._broker)
        container.container_id = f"eventhubs-standin-{uuid.uuid4().hex[:8]}"
        # Port 0 lets the OS pick a free port; proton has no accessor for the
        # bound port, so read it from the acceptor's listening socket.
        acceptor = container.acceptor(self.host, self._requested_port)
        self.port = acceptor._selectable._delegate.getsockname()[1]
        self._broker.acceptor = acceptor
        self._injector = EventInjector()
        container.selectable(self._injector)
        self._container = container
        self._thread = threading.Thread(target=self._run, name=f"eventhubs-standin-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            assert self._container is not None
            self._container.run()
        except BaseException as exc:  # keep it visible: a dead reactor looks like a hang otherwise
            log.exception("event hubs stand-in reactor died")
            self.errors.append(exc)
        finally:
            if self._broker is not None:
                self._broker.close_sockets()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        if self._thread.is_alive() and self._injector is not None:
            self._injector.trigger(ApplicationEvent("standin_stop"))
            self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("event hubs stand-in did not stop")
        self._thread = None

    def __enter__(self) -> "EventHubStandin":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses

    @property
    def namespace(self) -> str:
        """What the SDK calls fully_qualified_namespace (and uses in checkpoint blob names)."""
        return f"{self.host}:{self.port}"

    def connection_string(self, eventhub: Optional[str] = None) -> str:
        return (f"Endpoint=sb://{self.host}:{self.port};SharedAccessKeyName={SAS_KEY_NAME};"
                f"SharedAccessKey={SAS_KEY_VALUE};UseDevelopmentEmulator=true;"
                f"EntityPath={eventhub or self.eventhub_name}")

    # ------------------------------------------------------------------ event store

    @property
    def partition_count(self) -> int:
        return len(self._partitions)

    @property
    def partition_ids(self) -> List[str]:
        return [p.id for p in self._partitions]

    def _partition(self, partition_id: Union[str, int]) -> _Partition:
        try:
            index = int(partition_id)
            if index < 0:
                raise IndexError
            return self._partitions[index]
        except (ValueError, IndexError):
            raise KeyError(f"no partition {partition_id!r} in event hub {self.eventhub_name!r}") from None

    def append(self, partition_id: Union[str, int], body: bytes, enqueued_time: EnqueuedTime = None,
               properties: Optional[Dict[str, Any]] = None, partition_key: Optional[str] = None) -> StoredEvent:
        """Store one event directly (no AMQP); receivers are woken up.

        ``enqueued_time``: aware or naive-UTC datetime, or POSIX seconds;
        default now.  ``properties`` become the event's application properties.
        """
        with self._lock:
            event = self._append_locked(self._partition(partition_id), body, enqueued_time, properties,
                                        partition_key)
        self._wake()
        return event

    def append_many(self, partition_id: Union[str, int], bodies: Iterable[bytes],
                    enqueued_time: EnqueuedTime = None, properties: Optional[Dict[str, Any]] = None) -> int:
        """Store many events in one go (one lock, one wake-up); returns how many."""
        partition = self._partition(partition_id)
        count = 0
        with self._lock:
            for body in bodies:
                self._append_locked(partition, body, enqueued_time, properties, None)
                count += 1
        self._wake()
        return count

    def _append_locked(self, partition: _Partition, body: bytes, enqueued_time: EnqueuedTime,
                       properties: Optional[Dict[str, Any]], partition_key: Optional[str]) -> StoredEvent:
        # Hand-packed encoding: this is the hot path when preloading large partitions.
        body = bytes(body)
        tail = codec.data_section(body)
        if properties:
            tail = codec.section(codec.APPLICATION_PROPERTIES, codec.encode_map(properties.items())) + tail
        return self._store_locked(partition, b"", b"", 0, tail, _to_ms(enqueued_time), body,
                                  dict(properties) if properties else None, partition_key,
                                  annotate_key=partition_key is not None)

    def _store_locked(self, partition: _Partition, header: bytes, annotation_entries: bytes, annotation_count: int,
                      tail: bytes, enqueued_ms: int, body: Optional[bytes], properties: Optional[Dict[Any, Any]],
                      partition_key: Optional[str], annotate_key: bool) -> StoredEvent:
        sequence_number = len(partition.events)
        offset = partition.next_offset
        entries = (annotation_entries
                   + _SEQUENCE_NUMBER_KEY + codec.encode_long(sequence_number)
                   + _OFFSET_KEY + codec.encode_string(str(offset))
                   + _ENQUEUED_TIME_KEY + codec.encode_timestamp(enqueued_ms))
        count = annotation_count + 6
        if annotate_key:
            entries += codec.encode_symbol(PARTITION_KEY) + codec.encode_string(partition_key)
            count += 2
        wire = header + codec.section(codec.MESSAGE_ANNOTATIONS, codec.map_from_raw(entries, count)) + tail
        event = StoredEvent(partition.id, sequence_number, offset, enqueued_ms, body, properties, partition_key,
                            wire, len(header))
        partition.events.append(event)
        # Like the service, offsets are positions in the partition's log, so they grow with event size.
        partition.next_offset = offset + len(wire)
        return event

    def events(self, partition_id: Union[str, int]) -> List[StoredEvent]:
        """Snapshot of one partition's events, oldest first."""
        partition = self._partition(partition_id)
        with self._lock:
            return list(partition.events)

    def event_count(self, partition_id: Union[str, int, None] = None) -> int:
        with self._lock:
            if partition_id is None:
                return sum(len(p.events) for p in self._partitions)
            return len(self._partition(partition_id).events)

    def partition_properties(self, partition_id: Union[str, int]) -> Dict[str, Any]:
        """What ``$management`` reports for a partition (also handy in assertions)."""
        partition = self._partition(partition_id)
        with self._lock:
            last = partition.events[-1] if partition.events else None
        return {
            "name": self.eventhub_name,
            "partition": partition.id,
            "begin_sequence_number": 0,
            "last_enqueued_sequence_number": last.sequence_number if last else -1,
            "last_enqueued_offset": last.offset if last else "-1",
            "last_enqueued_time_utc": last.enqueued_time_ms if last else 0,
            "is_partition_empty": last is None,
        }

    def _slice(self, partition: _Partition, start: int, count: int) -> List[StoredEvent]:
        with self._lock:
            return partition.events[start:start + count]

    def _last_event(self, partition: _Partition) -> Optional[StoredEvent]:
        with self._lock:
            return partition.events[-1] if partition.events else None

    def _start_position(self, partition: _Partition, selector: Optional[str]) -> int:
        """Sequence number of the first event a new receiver gets, from its selector filter."""
        with self._lock:
            events = partition.events
            end = len(events)
            if not selector:
                return end  # no filter: the service starts at the end of the stream
            match = _SELECTOR_RE.search(selector)
            if not match:
                raise ValueError(f"unsupported selector filter: {selector!r}")
            field, operator, raw = match.groups()
            inclusive = operator in (">=", "=")
            if raw == "@latest":
                return end
            value = int(raw)
            if field == SEQUENCE_NUMBER:
                start = value if inclusive else value + 1
                return min(max(start, 0), end)
            if field == OFFSET:
                key = lambda e: e.offset_value  # noqa: E731 - offsets are increasing: bisect
                lo, hi = 0, end
                while lo < hi:
                    mid = (lo + hi) // 2
                    if key(events[mid]) < value or (not inclusive and key(events[mid]) == value):
                        lo = mid + 1
                    else:
                        hi = mid
                return lo
            # Enqueued time: tests may append out-of-order times, so scan.
            for index, event in enumerate(events):
                if event.enqueued_time_ms > value or (inclusive and event.enqueued_time_ms == value):
                    return index
            return end

    def _wake(self) -> None:
        # Nobody to serve: skip the pipe write.  Safe against a receiver that is
        # attaching right now, because it pumps right after it registers.
        if self._broker is None or not self._broker.has_receivers():
            return
        # Coalesce: one pipe write per burst of appends is enough for the reactor.
        with self._lock:
            if self._wake_pending or self._injector is None:
                return
            self._wake_pending = True
        self._injector.trigger(ApplicationEvent("standin_wake"))

    # ------------------------------------------------------------------ fault injection and inspection

    def disconnect_all(self) -> None:
        """Close every client connection with ``amqp:connection:forced``, as the
        service does during upgrades; the SDK is expected to reconnect."""
        if self._injector is not None:
            self._injector.trigger(ApplicationEvent("standin_disconnect"))

    def active_receivers(self) -> List[Dict[str, Any]]:
        """Attached partition receivers: consumer_group, partition_id, epoch, name,
        next_sequence_number.  Read from another thread: a best-effort snapshot."""
        return self._broker.snapshot_receivers() if self._broker is not None else []

    # ------------------------------------------------------------------ producer path

    def _accept_transfer(self, raw: bytes, fixed_partition: Optional[_Partition]) -> List[StoredEvent]:
        """Store the events of one producer delivery (a single event or a batch)."""
        outer = codec.split_sections(raw)
        inner = _batch_members(outer)
        outer_key = _partition_key_of(outer)
        members = [codec.split_sections(m) for m in inner] if inner is not None else [outer]
        if fixed_partition is not None:
            partition = fixed_partition
        else:
            key = outer_key or next((k for k in map(_partition_key_of, members) if k), None)
            with self._lock:
                index = (zlib.crc32(key.encode("utf-8")) if key else next(self._round_robin)) % len(self._partitions)
            partition = self._partitions[index]
        now = _to_ms(None)
        stored = []
        with self._lock:
            for sections in members:
                stored.append(self._store_sections_locked(partition, sections, outer_key, now))
        return stored

    def _store_sections_locked(self, partition: _Partition, sections: List[Tuple[int, bytes]],
                               default_key: Optional[str], enqueued_ms: int) -> StoredEvent:
        header = b""
        entries, count = b"", 0
        tail_parts = []
        for descriptor, raw in sections:
            if descriptor == codec.HEADER:
                header = raw
            elif descriptor == codec.DELIVERY_ANNOTATIONS:
                continue  # hop-by-hop: not stored
            elif descriptor == codec.MESSAGE_ANNOTATIONS:
                entries, count = codec.map_section_entries(raw)
            else:
                tail_parts.append(raw)
        tail = b"".join(tail_parts)
        # Decode once with the SDK's own decoder for the test-facing attributes.
        message = decode_payload(memoryview(header + tail))
        body = b"".join(message.data) if message.data else None
        properties = None
        if message.application_properties:
            properties = {(k.decode("utf-8") if isinstance(k, bytes) else k): v
                          for k, v in message.application_properties.items()}
        own_key = _partition_key_of(sections)
        # A key given only at batch level is stamped on each member, as the service does.
        key = own_key if own_key is not None else default_key
        return self._store_locked(partition, header, entries, count, tail, enqueued_ms, body, properties, key,
                                  annotate_key=own_key is None and key is not None)


def _batch_members(sections: List[Tuple[int, bytes]]) -> Optional[List[bytes]]:
    """Inner messages if this delivery is an SDK batch, else None.

    Batches are sent with message format 0x80013700, but proton does not
    expose a delivery's message format, so tell them apart by shape: every
    data section of a batch is itself a complete AMQP message with a body.
    """
    data = [raw for descriptor, raw in sections if descriptor == codec.DATA]
    if not data or any(d in (codec.AMQP_VALUE, codec.AMQP_SEQUENCE) for d, _ in sections):
        return None
    members = []
    for raw in data:
        try:
            payload = codec.data_section_value(raw)
            inner = codec.split_sections(payload)
        except (codec.AmqpFormatError, IndexError):
            return None
        if not any(d in codec.BODY_SECTIONS for d, _ in inner):
            return None
        members.append(payload)
    return members


def _partition_key_of(sections: List[Tuple[int, bytes]]) -> Optional[str]:
    for descriptor, raw in sections:
        if descriptor == codec.MESSAGE_ANNOTATIONS:
            annotations = decode_payload(memoryview(raw)).message_annotations or {}
            value = annotations.get(PARTITION_KEY.encode(), annotations.get(PARTITION_KEY))
            if isinstance(value, bytes):
                return value.decode("utf-8")
            return value
    return None


def _selector_of(link: Link) -> Optional[str]:
    """The selector expression of a receive link's source filter, if any."""
    data = link.remote_source.filter
    if data is None:
        return None
    data.rewind()
    if not data.next():
        return None
    filters = data.get_object()
    if not isinstance(filters, dict):
        return None
    for value in filters.values():
        if isinstance(value, Described):
            value = value.value
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if isinstance(value, str) and "amqp.annotation." in value:
            return value
    return None


def _epoch_refusal(existing: Sequence[_Receiver], epoch: Optional[int], name: str) -> Optional[str]:
    """Why a new receiver may not attach next to ``existing`` ones, or None.

    Service rules: an epoch receiver with a lower epoch than an attached one
    is refused; a non-epoch receiver is refused while an epoch receiver is
    attached.  (Equal or higher epochs steal instead: see _Broker._steal.)
    """
    epochs = [r.epoch for r in existing if r.epoch is not None]
    if not epochs:
        return None
    highest = max(epochs)
    if epoch is None:
        return (f"Receiver '{name}' without epoch cannot be created because a receiver with epoch "
                f"'{highest}' already exists. (stand-in)")
    if epoch < highest:
        return (f"Receiver '{name}' with epoch '{epoch}' cannot be created because a receiver with a "
                f"higher epoch '{highest}' already exists. (stand-in)")
    return None


def _runtime_info(last: StoredEvent) -> bytes:
    """Delivery annotations sent when the receiver asked for runtime metrics
    (the SDK's ``track_last_enqueued_event_properties=True``)."""
    return codec.section(codec.DELIVERY_ANNOTATIONS, codec.encode_map([
        (codec.Symbol("last_enqueued_sequence_number"), last.sequence_number),
        (codec.Symbol("last_enqueued_offset"), last.offset),
        (codec.Symbol("last_enqueued_time_utc"), codec.Timestamp(last.enqueued_time_ms)),
        (codec.Symbol("runtime_info_retrieval_time_utc"), codec.Timestamp(int(time.time() * 1000))),
    ]))


def _eventhub_body(standin: EventHubStandin) -> bytes:
    entries, count = codec.encode_map_entries([
        ("name", standin.eventhub_name),
        ("type", "com.microsoft:eventhub"),
        ("created_at", codec.Timestamp(standin.created_at_ms)),
        ("partition_count", standin.partition_count),
    ])
    entries += codec.encode_string("partition_ids") + codec.encode_string_array(standin.partition_ids)
    return codec.map_from_raw(entries, count + 2)


class _Broker(Handler):
    """Proton event handler: all AMQP endpoint handling, on the container thread."""

    def __init__(self, standin: EventHubStandin) -> None:
        super().__init__()
        self.standin = standin
        self.acceptor = None
        self._receivers: Dict[Tuple[str, str], List[_Receiver]] = {}
        self._connections: Dict[int, Any] = {}  # id -> proton Connection
        self._transports: List[Any] = []
        self._ids = itertools.count(1)
        self._tags = itertools.count(1)
        self._stopping = False

    # Every handler runs inside the reactor; an exception there would stop the
    # whole stand-in, so record it instead and keep serving.
    def on_unhandled(self, method: str, *args: Any) -> None:
        pass

    def _guard(self, fn, event) -> None:
        try:
            fn(event)
        except Exception as exc:  # pragma: no cover - reported through standin.errors
            log.exception("stand-in handler %s failed", fn.__name__)
            self.standin.errors.append(exc)

    # ------------------------------------------------------------------ connections

    def on_connection_bound(self, event) -> None:
        sasl = event.transport.sasl()
        sasl.allowed_mechs("ANONYMOUS")
        self._transports.append(event.transport)

    def on_connection_remote_open(self, event) -> None:
        conn = event.connection
        conn._standin_id = next(self._ids)
        self._connections[conn._standin_id] = conn
        # pyamqp reads OPEN by position up to field 9 (properties): send them all.
        conn.offered_capabilities = [symbol("com.microsoft:standin")]
        conn.desired_capabilities = [symbol("com.microsoft:standin")]
        conn.properties = {symbol("product"): "aoai-monitor eventhubs stand-in"}
        conn.open()

    def on_connection_remote_close(self, event) -> None:
        self._forget_connection(event.connection)
        event.connection.close()

    def on_transport_closed(self, event) -> None:
        # A client that vanished without CLOSE (killed process) leaves its links behind.
        if event.connection is not None:
            self._forget_connection(event.connection)
        if event.transport in self._transports:
            self._transports.remove(event.transport)

    def _forget_connection(self, conn) -> None:
        conn_id = getattr(conn, "_standin_id", None)
        if conn_id is None:
            return
        self._connections.pop(conn_id, None)
        for key, receivers in list(self._receivers.items()):
            for receiver in receivers:
                if receiver.connection_id == conn_id:
                    receiver.active = False
            self._receivers[key] = [r for r in receivers if r.active]

    def on_session_remote_open(self, event) -> None:
        event.session.open()

    def on_session_remote_close(self, event) -> None:
        event.session.close()

    # ------------------------------------------------------------------ links

    def on_link_remote_open(self, event) -> None:
        self._guard(self._link_remote_open, event)

    def _link_remote_open(self, event) -> None:
        link = event.link
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        # pyamqp reads ATTACH by position up to field 13 (properties): send them.
        link.properties = {symbol("com.microsoft:tracking-id"): uuid.uuid4().hex}
        if link.is_sender:
            self._open_outgoing(link)
        else:
            self._open_incoming(link)

    def _refuse(self, link: Link, condition: str, description: str) -> None:
        link.open()
        link.condition = Condition(condition, description)
        link.close()

    def _open_incoming(self, link: Link) -> None:
        """A link the client sends on: $cbs/$management requests or producer events."""
        path = _node_path(link.remote_target.address)
        standin = self.standin
        link._standin_partition = None
        if path in (["$cbs"], ["$management"]):
            link._standin_role = path[0]
        elif path and path[0].lower() == standin.eventhub_name.lower() and (
                len(path) == 1 or (len(path) == 3 and path[1].lower() == "partitions")):
            link._standin_role = "producer"
            if len(path) == 3:
                try:
                    link._standin_partition = standin._partition(path[2])
                except KeyError as exc:
                    return self._refuse(link, NOT_FOUND, str(exc))
            link.max_message_size = MAX_MESSAGE_SIZE
        else:
            return self._refuse(link, NOT_FOUND, f"The messaging entity '{link.remote_target.address}' "
                                                 "could not be found.")
        link.open()
        link.flow(1000)

    def _open_outgoing(self, link: Link) -> None:
        """A link the client receives on: management replies or partition events."""
        path = _node_path(link.remote_source.address)
        if path in (["$cbs"], ["$management"]):
            link._standin_role = "reply:" + path[0]
            link.open()
            return
        standin = self.standin
        if not (len(path) == 5 and path[0].lower() == standin.eventhub_name.lower()
                and path[1].lower() == "consumergroups" and path[3].lower() == "partitions"):
            return self._refuse(link, NOT_FOUND, f"The messaging entity '{link.remote_source.address}' "
                                                 "could not be found.")
        try:
            partition = standin._partition(path[4])
        except KeyError as exc:
            return self._refuse(link, NOT_FOUND, str(exc))
        consumer_group = path[2].lower()  # the service compares consumer groups case-insensitively
        try:
            start = standin._start_position(partition, _selector_of(link))
        except ValueError as exc:
            return self._refuse(link, "amqp:invalid-field", str(exc))
        remote_props = link.remote_properties or {}
        epoch = remote_props.get(symbol(EPOCH))
        epoch = int(epoch) if epoch is not None else None
        # The service adds last-enqueued runtime info when the receiver desires
        # RUNTIME_METRIC; proton 0.40 exposes no link capabilities, so it is a
        # stand-in switch instead (track_last_enqueued_event_properties tests).
        runtime_metric = self.standin.send_runtime_metrics
        # Our transfers are pre-settled: the SDK's streaming receiver never
        # settles, so unsettled deliveries would pile up for the link's life.
        link.snd_settle_mode = Link.SND_SETTLED

        key = (consumer_group, partition.id)
        existing = [r for r in self._receivers.get(key, []) if r.active]
        refusal = _epoch_refusal(existing, epoch, link.name)
        if refusal:
            return self._refuse(link, LINK_STOLEN, refusal)
        if epoch is not None:  # non-epoch receivers share a partition; epoch receivers take it over
            for old in existing:
                if old.epoch is None or epoch >= old.epoch:
                    self._steal(old, link.name, epoch)
        receiver = _Receiver(link, partition, consumer_group, epoch, start, runtime_metric,
                             getattr(link.connection, "_standin_id", 0))
        link._standin_role = "partition"
        link._standin_receiver = receiver
        self._receivers[key] = [r for r in self._receivers.get(key, []) if r.active] + [receiver]
        link.open()
        self._pump(receiver)

    def _steal(self, old: _Receiver, new_name: str, new_epoch: int) -> None:
        old.active = False
        # Wording after the service's message; the SDK only looks at the condition.
        old.link.condition = Condition(
            LINK_STOLEN,
            f"New receiver '{new_name}' with higher epoch of '{new_epoch}' is created hence current receiver "
            f"'{old.name}' with epoch '{old.epoch}' is getting disconnected. If you are recreating the receiver, "
            "make sure a higher epoch is used. (stand-in)")
        old.link.close()

    def on_link_remote_close(self, event) -> None:
        link = event.link
        receiver = getattr(link, "_standin_receiver", None)
        if receiver is not None:
            receiver.active = False
            key = (receiver.consumer_group, receiver.partition.id)
            self._receivers[key] = [r for r in self._receivers.get(key, []) if r is not receiver]
        if link.state & Endpoint.LOCAL_ACTIVE:
            link.close()

    def on_link_flow(self, event) -> None:
        receiver = getattr(event.link, "_standin_receiver", None)
        if receiver is not None and receiver.active:
            self._guard(lambda _e: self._pump(receiver), event)

    # ------------------------------------------------------------------ deliveries

    def _pump(self, receiver: _Receiver) -> None:
        """Send as many stored events as the link's credit allows."""
        link = receiver.link
        credit = link.credit
        if credit <= 0 or not receiver.active:
            return
        events = self.standin._slice(receiver.partition, receiver.next_seq, credit)
        if not events:
            return
        last = self.standin._last_event(receiver.partition) if receiver.runtime_metric else None
        for event in events:
            wire = event.wire
            if last is not None:
                wire = wire[:event.header_len] + _runtime_info(last) + wire[event.header_len:]
            delivery = link.delivery(str(next(self._tags)))
            link.send(wire)
            link.advance()
            delivery.settle()
        receiver.next_seq += len(events)

    def _pump_all(self) -> None:
        for receivers in list(self._receivers.values()):
            for receiver in receivers:
                if receiver.active:
                    self._pump(receiver)

    def on_delivery(self, event) -> None:
        self._guard(self._delivery, event)

    def _delivery(self, event) -> None:
        link = event.link
        delivery = event.delivery
        if link.is_sender:
            return  # our own pre-settled transfers: nothing to track
        if not delivery.readable or delivery.partial:
            return  # wait for the whole message (large batches span frames)
        raw = link.recv(delivery.pending)
        link.advance()
        role = getattr(link, "_standin_role", None)
        try:
            if role == "producer":
                stored = self.standin._accept_transfer(raw, link._standin_partition)
                self._pump_partition(stored[0].partition_id if stored else None)
            elif role in ("$cbs", "$management"):
                self._answer(link, role, raw)
            delivery.update(Delivery.ACCEPTED)
        except Exception as exc:
            log.warning("stand-in rejected a delivery on %s: %r", role, exc)
            delivery.local.condition = Condition("amqp:decode-error", str(exc))
            delivery.update(Delivery.REJECTED)
        delivery.settle()
        link.flow(1)

    def _pump_partition(self, partition_id: Optional[str]) -> None:
        if partition_id is None:
            return
        for (_, pid), receivers in list(self._receivers.items()):
            if pid == partition_id:
                for receiver in receivers:
                    if receiver.active:
                        self._pump(receiver)

    def _answer(self, request_link: Link, node: str, raw: bytes) -> None:
        request = decode_payload(memoryview(raw))
        app = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
               for k, v in (request.application_properties or {}).items()}
        message_id = request.properties.message_id if request.properties else None
        if node == "$cbs":
            # Tokens are not checked: the stand-in has no keys to check them against.
            status, description, body = 202, "Accepted", None
        else:
            status, description, body = self._management(app)
        reply = codec.section(codec.PROPERTIES, codec.encode_list([None] * 5 + [message_id]))
        reply += codec.section(codec.APPLICATION_PROPERTIES, codec.encode_map(
            [("status-code", status), ("status-description", description)]))
        reply += codec.section(codec.AMQP_VALUE, body if body is not None else b"\x40")
        reply_link = self._reply_link(request_link, node)
        if reply_link is None:
            raise RuntimeError(f"no {node} reply link attached")
        delivery = reply_link.delivery(str(next(self._tags)))
        reply_link.send(reply)
        reply_link.advance()
        delivery.settle()

    def _management(self, app: Dict[str, Any]) -> Tuple[int, str, Optional[bytes]]:
        standin = self.standin
        if app.get("operation") != "READ":
            return 400, f"unsupported operation {app.get('operation')!r}", None
        if str(app.get("name", "")).lower() != standin.eventhub_name.lower():
            return 404, f"The messaging entity '{app.get('name')}' could not be found.", None
        kind = app.get("type")
        standin.management_reads[kind] = standin.management_reads.get(kind, 0) + 1
        if kind == "com.microsoft:eventhub":
            return 200, "OK", _eventhub_body(standin)
        if kind == "com.microsoft:partition":
            try:
                props = standin.partition_properties(str(app.get("partition")))
            except KeyError as exc:
                return 404, str(exc), None
            props["last_enqueued_time_utc"] = codec.Timestamp(props["last_enqueued_time_utc"])
            props["type"] = "com.microsoft:partition"
            return 200, "OK", codec.encode_map(props.items())
        return 400, f"unsupported type {kind!r}", None

    def _reply_link(self, request_link: Link, node: str) -> Optional[Link]:
        """The client's receive link on the same node: same session preferred."""
        wanted = "reply:" + node
        candidates = []
        link = request_link.connection.link_head(Endpoint.LOCAL_ACTIVE)
        while link is not None:
            if link.is_sender and getattr(link, "_standin_role", None) == wanted:
                candidates.append(link)
            link = link.next(Endpoint.LOCAL_ACTIVE)
        for candidate in candidates:
            if candidate.session == request_link.session:
                return candidate
        return candidates[-1] if candidates else None

    # ------------------------------------------------------------------ application events

    def on_standin_wake(self, event) -> None:
        with self.standin._lock:
            self.standin._wake_pending = False
        self._guard(lambda _e: self._pump_all(), event)

    def on_standin_stop(self, event) -> None:
        self._stopping = True
        if self.acceptor is not None:
            self.acceptor.close()
        for conn in list(self._connections.values()):
            if conn.state & Endpoint.LOCAL_ACTIVE:
                conn.close()
        if self.standin._injector is not None:
            self.standin._injector.close()
        self.standin._container.stop()

    def on_standin_disconnect(self, event) -> None:
        for conn in list(self._connections.values()):
            if conn.state & Endpoint.LOCAL_ACTIVE:
                conn.condition = Condition("amqp:connection:forced", "The stand-in closed the connection.")
                conn.close()
            self._forget_connection(conn)

    def close_sockets(self) -> None:
        # Container.stop() leaves accepted sockets to the garbage collector;
        # close them now so clients see the server go away at once.
        for transport in self._transports:
            selectable = getattr(transport, "_selectable", None)
            if selectable is not None:
                try:
                    selectable.close()
                except Exception:  # noqa: BLE001 - best effort at shutdown
                    pass
        self._transports.clear()

    def has_receivers(self) -> bool:
        return any(list(self._receivers.values()))  # list(): the reactor may add keys meanwhile

    def snapshot_receivers(self) -> List[Dict[str, Any]]:
        # Called from test threads while the reactor may add keys: copy first.
        return [{"consumer_group": r.consumer_group, "partition_id": r.partition.id, "epoch": r.epoch,
                 "name": r.name, "next_sequence_number": r.next_seq}
                for receivers in list(self._receivers.values()) for r in receivers if r.active]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Event Hubs AMQP stand-in (tests only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--eventhub", default="aoai-logs")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--preload-file", metavar="PATH",
                        help="store each non-empty line of PATH as one event, round robin over partitions, "
                             "before reporting ready (lets a benchmark keep the server out of its own process)")
    parser.add_argument("--runtime-metrics", action="store_true",
                        help="send last-enqueued-event runtime info with every delivery, as Event Hubs does when "
                             "the receiver asks (track_last_enqueued_event_properties)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    standin = EventHubStandin(eventhub=args.eventhub, partitions=args.partitions, host=args.host,
                              port=args.port, send_runtime_metrics=args.runtime_metrics).start()
    if args.preload_file:
        with open(args.preload_file, "rb") as fh:
            bodies = [line.rstrip(b"\r\n") for line in fh if line.strip()]
        for pid in range(standin.partition_count):
            standin.append_many(pid, bodies[pid::standin.partition_count])
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    # One parseable line tells the parent that the port is listening.
    print(f"STANDIN READY port={standin.port} connection_string={standin.connection_string()}", flush=True)
    while not done.wait(0.5):
        if standin._thread is None or not standin._thread.is_alive():
            print("STANDIN DIED", file=sys.stderr, flush=True)
            return 1
    standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
