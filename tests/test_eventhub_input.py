"""Event Hub input against the AMQP stand-in and Azurite (real SDK, real Blob checkpoint store, real DuckDB)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson

from aoai_monitor.config import load
from aoai_monitor.service import Service
from aoai_monitor.store import Store, StoreError

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "samples" / "azure"
_RECORD = orjson.loads((SAMPLES / "storage-archive_insights-logs-requestresponse_PT1H.EXCERPT.jsonl").read_text().splitlines()[0])


def make_body(key: str, records: int = 10) -> bytes:
    """One diagnostic-settings message: {"records": [...]}, each record unique (so ids are)."""
    rs = []
    for j in range(records):
        r = dict(_RECORD)
        r["correlationId"] = f"{key}-{j}"
        rs.append(r)
    return orjson.dumps({"records": rs})


def write_config(path: Path, hub, azurite, container: str, store: Path, **extra) -> Path:
    lines = [f'[store]\npath = "{store}"', '[service]\nstatus_interval = "1s"', "[[inputs.eventhub]]",
             f'connection_string = "{hub.connection_string()}"',
             f'storage_account_connection_string = "{azurite.connection_string}"',
             f'storage_account_container = "{container}"']
    settings = {"load_balancing_interval": "1s", "ownership_expiration": "4s", "max_wait_time": "0.2s", **extra}
    lines += [f"{k} = {orjson.dumps(v).decode()}" for k, v in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def run_until(service: Service, done, timeout: float = 40.0) -> None:
    """Run the service until done(service) is true, then stop it the way SIGTERM does."""
    task = asyncio.create_task(service.run())
    deadline = time.monotonic() + timeout
    try:
        while not done(service):
            if task.done():
                task.result()
            assert time.monotonic() < deadline, f"timed out; status: {service.status.snapshot()}"
            await asyncio.sleep(0.1)
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 30)


def committed(service: Service) -> int:
    return sum(s.records for s in service.status.parts.values())


async def blob_checkpoints(azurite, container: str, hub) -> dict[str, int]:
    from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

    async with BlobCheckpointStore.from_connection_string(azurite.connection_string, container) as cs:
        items = await cs.list_checkpoints(hub.namespace, hub.eventhub_name, "$default")
    return {c["partition_id"]: c["sequence_number"] for c in items}


async def test_ingest_checkpoint_and_restart_resumes_after_last_checkpoint(tmp_path, eventhub_standin, azurite,
                                                                           checkpoint_container):
    hub = eventhub_standin
    for p in range(4):
        hub.append_many(p, [make_body(f"a{p}-{i}") for i in range(25)])
    store_path = tmp_path / "s.duckdb"
    cfg = load(write_config(tmp_path / "c.toml", hub, azurite, checkpoint_container, store_path))

    first = Service(cfg)
    await run_until(first, lambda s: committed(s) >= 1000)
    assert await blob_checkpoints(azurite, checkpoint_container, hub) == {str(p): 24 for p in range(4)}

    for p in range(4):
        hub.append_many(p, [make_body(f"b{p}-{i}") for i in range(5)])
    second = Service(load(write_config(tmp_path / "c.toml", hub, azurite, checkpoint_container, store_path)))
    await run_until(second, lambda s: committed(s) >= 200)
    await asyncio.sleep(0)
    # Resumed exactly after the checkpoint: the second run read only the 20 new messages.
    assert committed(second) == 200
    with Store(store_path) as store:
        assert store.count("logs") == 1200
        assert store.cursor().execute("SELECT count(DISTINCT id) FROM logs").fetchone()[0] == 1200
        assert store.get_state("eventhub:aoai-logs:3")["sequence_number"] == 29
        assert store.get_state("eventhub:aoai-logs:owner_id")
        sources = store.cursor().execute('SELECT DISTINCT "aoai.source" FROM logs WHERE "aoai.source" LIKE '
                                         "'eventhub:aoai-logs/2%' LIMIT 1").fetchall()
        assert sources
    assert await blob_checkpoints(azurite, checkpoint_container, hub) == {str(p): 29 for p in range(4)}


async def test_malformed_messages_are_dead_lettered_with_partition_and_offset(tmp_path, eventhub_standin, azurite,
                                                                           checkpoint_container):
    hub = eventhub_standin
    malformed = sorted((SAMPLES / "malformed").iterdir())
    hub.append(0, make_body("before"))
    bad = [hub.append(0, f.read_bytes()) for f in malformed]
    garbage = hub.append(0, b"\xff\xfe not json at all {{{")
    hub.append(0, make_body("after"))
    cfg = load(write_config(tmp_path / "c.toml", hub, azurite, checkpoint_container, tmp_path / "s.duckdb"))
    service = Service(cfg)
    await run_until(service, lambda s: s.status.get("aoai-logs", "0").last_sequence == garbage.sequence_number + 1)
    with Store(tmp_path / "s.duckdb") as store:
        cur = store.cursor()
        # The good messages around the bad ones are stored: one bad message never stops the partition.
        assert cur.execute("SELECT count(*) FROM logs WHERE \"aoai.source\" LIKE 'eventhub:aoai-logs/0%'").fetchone()[0] >= 20
        dead = dict(cur.execute("SELECT source, reason FROM dead_letters").fetchall())
    assert f"eventhub:aoai-logs/0:{garbage.offset}" in dead
    assert all(src.startswith("eventhub:aoai-logs/0:") and reason for src, reason in dead.items())
    assert len(bad) == 3
    assert service.status.get("aoai-logs", "0").dead_letters == len(dead)


class UnwritableStore(Store):
    """The real store, whose write transactions fail while `broken` is set (as with a full or read-only disk)."""

    broken = True
    attempts = 0

    def transaction(self):
        if self.broken:
            UnwritableStore.attempts += 1
            raise StoreError("disk full (simulated)")
        return super().transaction()


async def test_store_unwritable_holds_checkpoints_and_loses_nothing(tmp_path, eventhub_standin, azurite,
                                                                   checkpoint_container, monkeypatch):
    hub = eventhub_standin
    for p in range(4):
        hub.append_many(p, [make_body(f"u{p}-{i}") for i in range(10)])
    monkeypatch.setattr("aoai_monitor.service.Store", UnwritableStore)
    cfg = load(write_config(tmp_path / "c.toml", hub, azurite, checkpoint_container, tmp_path / "s.duckdb",
                            owner_id="test-owner"))
    service = Service(cfg)
    task = asyncio.create_task(service.run())
    try:
        deadline = time.monotonic() + 30
        while UnwritableStore.attempts < 8:
            assert time.monotonic() < deadline and not task.done()
            await asyncio.sleep(0.1)
        assert await blob_checkpoints(azurite, checkpoint_container, hub) == {}
        assert any(s.error and "store commit failing" in s.error for s in service.status.parts.values())
        UnwritableStore.broken = False
        while committed(service) < 400:
            assert time.monotonic() < deadline + 30
            await asyncio.sleep(0.1)
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 30)
    assert await blob_checkpoints(azurite, checkpoint_container, hub) == {str(p): 9 for p in range(4)}
    with Store(tmp_path / "s.duckdb") as store:
        assert store.count("logs") == 400


async def test_a_killed_worker_process_loses_no_batch(tmp_path, eventhub_standin, azurite, checkpoint_container):
    """Batches are prepared in worker processes; one dying mid-run is replaced and every record is stored once."""
    import os
    import signal

    hub = eventhub_standin
    for p in range(4):
        hub.append_many(p, [make_body(f"w{p}-{i}") for i in range(10)])
    store_path = tmp_path / "s.duckdb"
    service = Service(load(write_config(tmp_path / "c.toml", hub, azurite, checkpoint_container, store_path,
                                        workers=1)))
    killed = []

    def kill_worker_then_wait(s: Service) -> bool:
        pool = s.inputs[0].workers.pool if s.inputs else None
        if not killed and pool is not None and pool._processes and committed(s) >= 100:
            for pid in list(pool._processes):
                os.kill(pid, signal.SIGKILL)
            killed.append(pool)
            for p in range(4):
                hub.append_many(p, [make_body(f"x{p}-{i}") for i in range(10)])
        return bool(killed) and committed(s) >= 800

    await run_until(service, kill_worker_then_wait, timeout=60)
    assert killed and service.inputs[0].workers.pool is not killed[0]  # the broken pool was replaced
    with Store(store_path) as store:
        assert store.count("logs") == 800
        assert store.cursor().execute("SELECT count(DISTINCT id) FROM logs").fetchone()[0] == 800


async def test_runtime_info_gives_lag_without_asking_for_partition_properties(tmp_path, azurite,
                                                                               checkpoint_container):
    """Where deliveries carry runtime info (Event Hubs does when asked), lag and last enqueued time come from
    them: no per-partition properties request, each of which costs a new AMQP connection."""
    from tests.standins import amqp_shim
    from tests.standins.eventhubs import EventHubStandin

    amqp_shim.install()
    with EventHubStandin(eventhub="aoai-logs", partitions=2, send_runtime_metrics=True) as hub:
        for p in range(2):
            hub.append_many(p, [make_body(f"r{p}-{i}") for i in range(20)])
        service = Service(load(write_config(tmp_path / "c.toml", hub, azurite, checkpoint_container,
                                            tmp_path / "s.duckdb")))
        started = time.monotonic()

        def caught_up(s: Service) -> bool:
            parts = [v for k, v in s.status.parts.items() if k[1] != "*"]
            return (committed(s) >= 400 and len(parts) == 2 and all(v.lag_events == 0 for v in parts)
                    and time.monotonic() - started > 7)  # past the first lag-poll interval (5 s)

        await run_until(service, caught_up)
        assert {k[1]: v.last_enqueued_ms for k, v in service.status.parts.items() if k[1] != "*"} == \
            {str(p): hub.events(p)[-1].enqueued_time_ms for p in range(2)}
        assert hub.management_reads.get("com.microsoft:partition", 0) == 0, hub.management_reads
