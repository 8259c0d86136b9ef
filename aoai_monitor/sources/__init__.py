"""Inputs that pull from Azure into the store: eventhub (diagnostic settings → Event Hub), blob_archive
(diagnostic settings → storage account). Each input is an async task owned by `service.Service`.

Shared here: per-partition self-monitoring counters, and the store commit that retries instead of dropping
a batch (the caller blocks meanwhile, which is the backpressure: nothing more is pulled).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from ..normalize import Normalized
from ..pipeline import HeldDocuments
from ..store import CommitResult, Store
from ..store.duckdb_store import docs_to_arrow, rejects_to_arrow

log = logging.getLogger("aoai_monitor.sources")

STATUS_PREFIX = "status:"


class Workers:
    """Processes for CPU work that holds the GIL (parsing, normalizing, decoding), beside the process that
    receives and writes; 0 of them: the work runs in a thread here.

    spawn, not fork: the service already runs the SDKs' and DuckDB's threads. The processes end with the
    service, even after `kill -9` (an idle one would wait forever). A pool that breaks (a worker killed) is
    replaced, and the call that found it broken runs in a thread here instead.
    """

    def __init__(self, count: int, what: str, *warm_up):
        self.count, self.what, self.warm_up = count, what, warm_up  # warm_up: a function and its arguments
        self.pool: ProcessPoolExecutor | None = None

    def start(self) -> Future | None:
        """Start the processes now rather than at the first call (a spawned worker imports its modules: ~1 s);
        the future says when they ran `warm_up`."""
        if not self.count or self.pool is not None:
            return None
        self.pool = ProcessPoolExecutor(self.count, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_exit_with_parent, initargs=(os.getpid(),))
        return self.pool.submit(*self.warm_up) if self.warm_up else None

    async def run(self, fn, *args):
        if self.count:
            self.start()
            pool = self.pool
            try:
                return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
            except BrokenProcessPool:
                log.warning("%s: a worker process ended unexpectedly; starting new ones", self.what)
                if self.pool is pool:
                    self.pool = None
                    self.start()
        return await asyncio.to_thread(fn, *args)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None


def _exit_with_parent(parent: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


@dataclass
class PartitionStats:
    """What `aoai-monitor status` and the UI show for one input partition (or one archive container)."""

    records: int = 0
    dead_letters: int = 0
    last_enqueued_ms: int | None = None      # newest event in the partition (from the service)
    last_processed_ms: int | None = None     # enqueued time of the newest event we committed
    lag_events: int | None = None            # events enqueued but not yet committed
    last_sequence: int | None = None         # sequence number of the newest committed event
    checkpoint_ms: int | None = None         # wall time of the last checkpoint/offset write
    error: str | None = None                 # the current problem, cleared on the next success
    owned: bool = True
    _window: deque = field(default_factory=lambda: deque(maxlen=64), repr=False)

    def add(self, records: int, dead: int) -> None:
        self.records += records
        self.dead_letters += dead
        self._window.append((time.monotonic(), records))

    def rate(self, horizon: float = 30.0) -> float:
        now = time.monotonic()
        recent = [(t, n) for t, n in self._window if now - t <= horizon]
        if not recent:
            return 0.0
        span = max(now - recent[0][0], 1.0)
        return sum(n for _, n in recent) / span

    def snapshot(self) -> dict:
        now_ms = int(time.time() * 1000)
        return {"records": self.records, "records_per_s": round(self.rate(), 1), "dead_letters": self.dead_letters,
                "last_enqueued_ms": self.last_enqueued_ms, "last_processed_ms": self.last_processed_ms,
                "lag_events": self.lag_events,
                "checkpoint_age_s": round((now_ms - self.checkpoint_ms) / 1000, 1) if self.checkpoint_ms else None,
                "error": self.error, "owned": self.owned, "updated_ms": now_ms}


class InputStatus:
    """Per input, per partition stats; the service stores snapshots under state keys `status:<input>:<part>`."""

    def __init__(self) -> None:
        self.parts: dict[tuple[str, str], PartitionStats] = {}

    def get(self, input_name: str, part: str) -> PartitionStats:
        key = (input_name, part)
        if key not in self.parts:
            self.parts[key] = PartitionStats()
        return self.parts[key]

    def snapshot(self) -> dict[str, dict]:
        return {f"{STATUS_PREFIX}{name}:{part}": s.snapshot() for (name, part), s in self.parts.items()}


def write_group(store: Store, batches: list, state: dict) -> CommitResult:
    """One transaction: (prepared, extra) batches — fast-path chunks (pipeline.prepare_lines), other documents
    and rejects — and the input positions that cover them (so data and position never disagree).

    Each kind of row goes in as one statement for the whole group: a DuckDB insert into the wide logs
    table has a fixed cost of tens of milliseconds, more than a small batch's rows cost.
    """
    with store.transaction() as tx:
        held = HeldDocuments(tx)
        for prepared, extra in batches:
            if prepared is not None:
                held.hold_fast(prepared.fast)
                held.hold_documents(prepared)
            if extra is not None:
                for name, docs in (("logs", extra.logs), ("metrics", extra.metrics)):
                    if docs:
                        held.hold(name, docs_to_arrow(name, docs, tx.ingested_ms))
                if extra.rejects:
                    held.hold_rejects(rejects_to_arrow(extra.rejects, tx.ingested_ms))
        held.flush()
        tx.set_state(state)
    return tx.result


# DuckDB's row group. A transaction inserting at least this many rows writes them straight into the file;
# smaller ones go through the write-ahead log and are copied again at the next checkpoint, which costs
# about as much as the insert itself (bench/bench_eventhub.py).
GROUP_ROWS = 122_880


@dataclass
class PendingBatch:
    """A partition's prepared batch waiting for the group commit; `after` runs once it is stored."""

    prepared: object
    extra: Normalized | None
    state: dict
    rows: int
    stats: PartitionStats
    key: str  # a partition: its batches commit in order, and only the group's last one checkpoints
    after: Callable[[CommitResult | None, bool], Awaitable[None]]  # (result, checkpoint) once committed


class GroupCommitter:
    """One writer for all partitions of an input: batches that arrive together commit together.

    Under a backlog a group grows up to GROUP_ROWS (a 38 k-row commit cost ~2.5× less per record than a
    10 k-row one). A group never exceeds GROUP_ROWS, so unless its batches add up to exactly a row group it
    still goes through the WAL;
    when traffic is light a batch waits at most `linger` seconds for company, so freshness stays within
    the consumer's own wait plus `linger`. The queue is bounded (`max_rows` waiting), which is the
    backpressure: a partition's callback blocks in submit() and the SDK stops pulling. Checkpoints follow
    the commit that covers them (`after`, the last batch of each partition in the group).
    """

    def __init__(self, store: Store, stopping: asyncio.Event, what: str, linger: float = 0.2,
                 group_rows: int = GROUP_ROWS, max_rows: int = 2 * GROUP_ROWS):
        self.store, self.stopping, self.what = store, stopping, what
        self.linger, self.group_rows, self.max_rows = linger, group_rows, max_rows
        self._queue: deque[PendingBatch] = deque()
        self._queued_rows = 0
        self._changed = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    async def submit(self, batch: PendingBatch) -> None:
        """Queue a batch; waits while the queue is full (the store is slower than the input)."""
        while self._queued_rows >= self.max_rows and not self.stopping.is_set():
            self._changed.clear()
            await self._changed.wait()
        self._queue.append(batch)
        self._queued_rows += batch.rows
        self._idle.clear()
        self._changed.set()

    async def drain(self) -> None:
        """Wait until everything queued so far is committed and checkpointed (or given up at stop)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Commit groups until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._idle.set()
                self._changed.clear()
                await self._changed.wait()
            deadline = loop.time() + self.linger
            while (self._queued_rows < self.group_rows and not self.stopping.is_set()
                   and (remaining := deadline - loop.time()) > 0):
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            group: list[PendingBatch] = []
            rows = 0
            while self._queue and (not group or rows + self._queue[0].rows <= self.group_rows):
                batch = self._queue.popleft()
                group.append(batch)
                rows += batch.rows
            await self._commit(group)
            self._queued_rows -= rows
            self._changed.set()

    async def _commit(self, group: list[PendingBatch]) -> None:
        state: dict = {}
        for batch in group:
            state.update(batch.state)
        result = await commit_until_stored(self.store, [b.stats for b in group], self.stopping, self.what,
                                           [(b.prepared, b.extra) for b in group], state)
        last = {batch.key: batch for batch in group}
        for batch in group:
            if last[batch.key] is not batch:
                await batch.after(result, False)
        await asyncio.gather(*(batch.after(result, True) for batch in last.values()))


async def commit_until_stored(store: Store, stats: list[PartitionStats], stopping: asyncio.Event, what: str,
                              batches: list, state: dict) -> CommitResult | None:
    """Commit in a worker thread; on failure wait and retry (never drop, never skip ahead).

    Returns None only when the service is stopping and the store still refuses: the caller then must not
    checkpoint, so the batch is read again after the restart.
    """
    delay = 0.5
    while True:
        try:
            result = await asyncio.to_thread(write_group, store, batches, state)
            for s in stats:
                s.error = None
            return result
        except Exception as exc:  # the store's problem, not the batch's: keep it and retry
            error = f"store commit failing: {type(exc).__name__}: {str(exc)[:200]}"
            for s in stats:
                s.error = error
            log.warning("%s: %s; holding the batch and retrying in %.1fs (check disk space and permissions of the "
                        "store file)", what, error, delay)
            if stopping.is_set():
                return None
            try:
                await asyncio.wait_for(stopping.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, 5.0)
