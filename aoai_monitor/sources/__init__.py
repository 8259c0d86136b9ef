"""Inputs that pull from Azure into the store: eventhub (diagnostic settings → Event Hub), blob_archive
(diagnostic settings → storage account). Each input is an async task owned by `service.Service`.

Shared here: per-partition self-monitoring counters, and the store commit that retries instead of dropping
a batch (the caller blocks meanwhile, which is the backpressure: nothing more is pulled).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from ..normalize import Normalized
from ..store import CommitResult, Store

log = logging.getLogger("aoai_monitor.sources")

STATUS_PREFIX = "status:"


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


def write_batch(store: Store, prepared, extra: Normalized | None, state: dict) -> CommitResult:
    """One transaction: fast-path chunk (pipeline.prepare_lines), other documents and rejects, and the input
    position that covers them (so data and position never disagree)."""
    with store.transaction() as tx:
        if prepared is not None:
            tx.insert_fast(prepared.fast, prepared.source)
            for name, (table, lo, hi) in prepared.tables.items():
                tx.insert_arrow(name, table, lo, hi)
            tx.insert_rejects_arrow(prepared.rejects)
        if extra is not None:
            tx.insert("logs", extra.logs)
            tx.insert("metrics", extra.metrics)
            tx.insert_rejects(extra.rejects)
        tx.set_state(state)
    return tx.result


async def commit_until_stored(store: Store, stats: PartitionStats, stopping: asyncio.Event, what: str,
                              prepared=None, extra: Normalized | None = None, state: dict | None = None
                              ) -> CommitResult | None:
    """Commit in a worker thread; on failure wait and retry (never drop, never skip ahead).

    Returns None only when the service is stopping and the store still refuses: the caller then must not
    checkpoint, so the batch is read again after the restart.
    """
    delay = 0.5
    while True:
        try:
            result = await asyncio.to_thread(write_batch, store, prepared, extra, state or {})
            stats.error = None
            return result
        except Exception as exc:  # the store's problem, not the batch's: keep it and retry
            stats.error = f"store commit failing: {type(exc).__name__}: {str(exc)[:200]}"
            log.warning("%s: %s; holding the batch and retrying in %.1fs (check disk space and permissions of the "
                        "store file)", what, stats.error, delay)
            if stopping.is_set():
                return None
            try:
                await asyncio.wait_for(stopping.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, 5.0)
