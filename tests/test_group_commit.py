"""The Event Hub input's group commit: partitions' batches share a transaction, every batch is accounted for,
checkpoints follow the commit (last batch per partition), and a full queue blocks the producer."""

from __future__ import annotations

import asyncio
import sys

import orjson

from aoai_monitor.pipeline import prepare_records
from aoai_monitor.sources import GroupCommitter, PartitionStats, PendingBatch
from aoai_monitor.store import Store
from tests.core_helpers import ROOT

sys.path.insert(0, str(ROOT))
from bench.gen_records import records  # noqa: E402


def _batch(records_, key: str, calls: list, seq: int) -> PendingBatch:
    prepared = prepare_records(records_, f"eventhub:hub/{key}")

    async def after(result, checkpoint: bool) -> None:
        calls.append((key, seq, checkpoint, result is not None))

    return PendingBatch(prepared, None, {f"pos:{key}": seq}, prepared.records, PartitionStats(), key=key, after=after)


async def test_batches_of_several_partitions_commit_together_and_checkpoint_once_per_partition(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    recs = [orjson.loads(orjson.dumps(r)) for r in records(300, seed=7)]
    calls: list = []
    committer = GroupCommitter(store, asyncio.Event(), "test", linger=0.5)
    runner = asyncio.create_task(committer.run())
    for seq, (key, part) in enumerate([("0", recs[:100]), ("1", recs[100:200]), ("0", recs[200:])]):
        await committer.submit(_batch(part, key, calls, seq))
    await asyncio.wait_for(committer.drain(), 30)
    runner.cancel()
    assert store.count("logs") == 300
    # every batch is accounted for; only the last of partition 0 and the one of partition 1 checkpoint
    assert sorted(calls) == [("0", 0, False, True), ("0", 2, True, True), ("1", 1, True, True)]
    assert store.get_state("pos:0") == 2 and store.get_state("pos:1") == 1
    # one transaction: all three batches carry the same event.ingested stamp
    assert store.cursor().execute('SELECT count(DISTINCT "event.ingested") FROM logs').fetchone()[0] == 1


async def test_a_full_queue_blocks_the_producer_until_a_commit_makes_room(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    recs = [orjson.loads(orjson.dumps(r)) for r in records(300, seed=8)]
    calls: list = []
    committer = GroupCommitter(store, asyncio.Event(), "test", linger=0.3, group_rows=1000, max_rows=150)
    await committer.submit(_batch(recs[:100], "0", calls, 0))
    await committer.submit(_batch(recs[100:200], "0", calls, 1))  # 100 queued < 150: accepted
    third = asyncio.create_task(committer.submit(_batch(recs[200:], "0", calls, 2)))
    await asyncio.sleep(0.2)
    assert not third.done()  # 200 queued ≥ 150: the partition's callback waits (the SDK stops pulling)
    runner = asyncio.create_task(committer.run())
    await asyncio.wait_for(third, 30)
    assert calls  # room was made by a commit, not by dropping anything
    await asyncio.wait_for(committer.drain(), 30)
    runner.cancel()
    assert store.count("logs") == 300
