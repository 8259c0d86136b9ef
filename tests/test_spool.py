"""Worker results handed to the writer through shared memory (aoai_monitor.spool) arrive whole, leave no files
behind, and fall back to the pipe where shared memory cannot take them."""

from __future__ import annotations

import gc
import multiprocessing
import os
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from aoai_monitor import pipeline, spool
from aoai_monitor.pipeline import PreparedChunk, ingest_files, prepare_block
from aoai_monitor.store import Store
from tests.core_helpers import FIXTURES, ROOT, stored_rows

sys.path.insert(0, str(ROOT))
from bench.gen_records import records  # noqa: E402

def test_tables_come_back_equal_mapped_and_aligned_and_the_file_is_gone(tmp_path: Path):
    tables = {
        "numbers": pa.table({"n": pa.array(range(50_001), pa.int64()), "x": pa.array([1.5] * 50_001)}),
        "text": pa.table({"s": ["é" * (i % 7) for i in range(999)], "missing": pa.nulls(999, pa.string())}),
        "empty": pa.table({"e": pa.array([], pa.timestamp("ms"))}),
    }
    path, layout = spool.write_tables(str(tmp_path), tables)
    allocated = pa.total_allocated_bytes()
    back = spool.read_tables(path, layout)
    assert pa.total_allocated_bytes() - allocated < 1000  # read in place, not copied
    assert list(tmp_path.iterdir()) == []  # unlinked once mapped: nothing to clean up after a crash
    gc.collect()  # the tables keep the mapping alive by themselves
    for name, table in tables.items():
        assert back[name].equals(table), name
    for column in back["numbers"].columns:
        for buffer in column.chunks[0].buffers():
            if buffer is not None:
                assert buffer.address % 8 == 0


def test_a_chunk_that_cannot_be_spooled_is_handed_over_as_it_is(tmp_path: Path):
    lines = "\n".join(orjson.dumps(r).decode() for r in records(50, seed=3)) + "\n{broken\n"
    chunk = prepare_block(lines.encode(), 1, "file:x")
    assert chunk.fast is not None and chunk.tables and chunk.rejects is not None
    assert chunk.to_spool(str(tmp_path / "gone")) is chunk  # a spool that cannot take the file (full, removed)

    spooled = chunk.to_spool(str(tmp_path))
    assert spooled.fast is None and not spooled.tables and spooled.spooled
    back = spooled.from_spool()
    assert back.fast.equals(chunk.fast) and back.rejects.equals(chunk.rejects) and back.records == chunk.records
    assert {name: (t.num_rows, lo, hi) for name, (t, lo, hi) in back.tables.items()} == \
        {name: (t.num_rows, lo, hi) for name, (t, lo, hi) in chunk.tables.items()}
    assert chunk.from_spool() is chunk


@pytest.mark.skipif(not spool.SHARED_MEMORY.is_dir(), reason="no /dev/shm on this system")
def test_spools_of_killed_processes_are_swept_and_live_ones_kept():
    gone = multiprocessing.get_context("fork").Process(target=lambda: None)
    gone.start()
    gone.join()
    abandoned = spool.SHARED_MEMORY / f"{spool.PREFIX}{gone.pid}-test"
    alive = spool.SHARED_MEMORY / f"{spool.PREFIX}{os.getpid()}-test"
    for directory in (abandoned, alive):
        directory.mkdir()
        (directory / "chunk.arrow").write_bytes(b"x" * 1000)
    try:
        created = spool.Spool.create()
        assert not abandoned.exists() and alive.exists()
        if created is not None:  # None where shared memory is small: the pipe is used
            assert Path(created.path).is_dir()
            created.close()
            assert not Path(created.path).exists()
    finally:
        for directory in (abandoned, alive):
            if directory.exists():
                (directory / "chunk.arrow").unlink()
                directory.rmdir()


@pytest.mark.parametrize("shared_memory", [True, False], ids=["spool", "pipe"])
def test_worker_ingest_stores_what_one_process_stores(tmp_path: Path, monkeypatch, shared_memory: bool):
    lines = [orjson.dumps(r).decode() for r in records(2500, seed=11)]  # with gateway logs: off the fast path
    metric = {"metricName": "AzureOpenAIRequests", "timeGrain": "PT1M", "count": 3,
              "resourceId": "/SUBSCRIPTIONS/S/RESOURCEGROUPS/G/PROVIDERS/P/T/N"}
    lines[100:100] = [orjson.dumps({**metric, "time": f"2025-07-14T12:{i:02d}:00.0000000Z", "total": i}).decode()
                      for i in range(40)] + ["{not json", "[1, 2"]
    path = tmp_path / "big.ndjson"
    path.write_text("\n".join(lines) + "\n")

    reference = Store(tmp_path / "reference.duckdb")
    ingest_files(reference, [path], workers=0)

    monkeypatch.setattr(pipeline, "CHUNK_BYTES", 100_000)  # ~25 chunks across two worker processes
    if shared_memory:
        probe = spool.Spool.create()
        if probe is None:
            pytest.skip(f"{spool.SHARED_MEMORY} has less than {spool.MIN_FREE_BYTES >> 20} MB free")
        probe.close()
    else:
        monkeypatch.setattr(spool, "MIN_FREE_BYTES", 1 << 62)
    seen_spools: set[str] = set()
    mine = f"{spool.PREFIX}{os.getpid()}-"
    store = Store(tmp_path / "workers.duckdb")
    summary = ingest_files(store, [path], workers=2, on_batch=lambda _: seen_spools.update(
        p.name for p in spool.SHARED_MEMORY.glob(mine + "*")))

    assert bool(seen_spools) == shared_memory
    assert not list(spool.SHARED_MEMORY.glob(mine + "*"))  # removed when the ingest ends
    assert summary.records == len(lines) and summary.result.dead_lettered == 2
    assert stored_rows(store) == stored_rows(reference)
    assert store.count("metrics") == 40 and store.count("logs") == 2500


def test_a_failed_ingest_removes_its_spool(tmp_path: Path, monkeypatch):
    path = tmp_path / "big.ndjson"
    path.write_text("\n".join(orjson.dumps(r).decode() for r in records(1500, seed=2)) + "\n")
    monkeypatch.setattr(pipeline, "CHUNK_BYTES", 100_000)

    def fail(summary) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        ingest_files(Store(tmp_path / "s.duckdb"), [path], workers=2, on_batch=fail)
    assert not list(spool.SHARED_MEMORY.glob(f"{spool.PREFIX}{os.getpid()}-*"))


def test_a_block_is_prepared_without_cycle_collections_and_the_collector_resumes():
    """prepare_block turns the cycle collector off for a block (parsed JSON holds no cycles) and back on."""
    data = b"".join(orjson.dumps(r) + b"\n" for r in records(3000, seed=5))
    collections = []
    gc.callbacks.append(lambda phase, info: collections.append(phase))
    try:
        chunk = prepare_block(data, 1, "gc")
    finally:
        gc.callbacks.pop()
    assert chunk.records == 3000 and collections == [] and gc.isenabled()


def test_block_ranges_cover_the_file_in_whole_lines_with_their_numbers(tmp_path: Path, monkeypatch):
    """The writer only cuts a plain file into blocks (the workers read them): every byte is in one block, each block
    ends a line (but the last, when the file does not), and a line longer than a block is one block of its own."""
    import io

    monkeypatch.setattr(pipeline, "CHUNK_BYTES", 64)
    lines = [b"a" * 10, b"", b"b" * 150, b"c" * 63, b"d" * 64, b"e", b"f" * 200, b"g" * 5, b"h" * 40, b"i" * 40,
             b"j" * 40]
    for ending in (b"\n", b""):
        data = b"\n".join(lines) + ending
        offered: list[int] = []
        blocks = list(pipeline._blocks(io.BufferedReader(io.BytesIO(data)), offered.append, keep_bytes=True))
        ranges = [(offset, length, first_line) for offset, length, first_line, _ in blocks]
        assert [block for *_, block in blocks] == [data[o:o + n] for o, n, _ in ranges]
        assert sum(offered) == len(data)
        assert [o for o, _, _ in ranges] == [0] + [o + n for o, n, _ in ranges[:-1]]
        assert sum(n for _, n, _ in ranges) == len(data)
        for offset, length, first_line in ranges:
            block = data[offset:offset + length]
            assert block.endswith(b"\n") or offset + length == len(data)
            assert first_line == data[:offset].count(b"\n") + 1
        long = next(i for i, (o, n, _) in enumerate(ranges) if b"f" * 200 in data[o:o + n])
        assert all(n <= 64 for _, n, _ in ranges[long + 1:])  # the blocks after a long line are back to size


def test_workers_reading_their_blocks_store_what_the_writer_reading_them_stores(tmp_path: Path, monkeypatch):
    """Plain files: the workers read their blocks (pipeline.prepare_ranges); gzip: the writer reads them and pipes
    them over. Both store the same rows, and dead letters name the same lines, as one process does."""
    import gzip

    monkeypatch.setattr(pipeline, "CHUNK_BYTES", 20_000)
    lines = [orjson.dumps(r).decode() for r in records(600, seed=21)]
    lines[5] = "{broken"
    lines[377] = "[1, 2"
    text = ("\n".join(lines[:300]) + "\n\n" + "\n".join(lines[300:])).encode()  # an empty line, no final newline
    (tmp_path / "plain.ndjson").write_bytes(text)
    (tmp_path / "packed.ndjson.gz").write_bytes(gzip.compress(text))
    stored = {}
    for name, file, workers in (("alone", "plain.ndjson", 0), ("plain", "plain.ndjson", 2),
                                ("gzip", "packed.ndjson.gz", 2)):
        with Store(tmp_path / f"{name}.duckdb") as store:
            summary = ingest_files(store, [tmp_path / file], workers=workers)
            cur = store.cursor()
            stored[name] = (summary.records, cur.execute("SELECT id FROM logs ORDER BY id").fetchall(),
                            cur.execute("SELECT regexp_extract(source, ':(\\d+)$', 1) FROM dead_letters "
                                        "ORDER BY 1").fetchall())
    assert stored["alone"][0] == 600 and len(stored["alone"][1]) == 598
    assert stored["alone"][2] == [("379",), ("6",)]  # line 301 is the empty one
    assert stored["plain"] == stored["alone"] and stored["gzip"] == stored["alone"]


_WRITER_PID = os.getpid()


def _slow_in_workers(ranges, spool_dir):
    """prepare_ranges, slowed down in the worker processes only, so the writer finds the next block not ready."""
    if os.getpid() != _WRITER_PID:
        import time
        time.sleep(0.3)
    return _prepare_ranges(ranges, spool_dir)


_prepare_ranges = pipeline.prepare_ranges


def test_the_writer_prepares_blocks_itself_while_the_next_is_not_ready(tmp_path: Path, monkeypatch):
    """A slow worker does not leave the writer waiting: it takes queued blocks back from the pool, prepares them
    (without a spool file) and commits everything in order, as one process would."""
    lines = [orjson.dumps(r).decode() for r in records(1500, seed=8)]
    lines[900] = "{broken"
    path = tmp_path / "big.ndjson"
    path.write_text("\n".join(lines) + "\n")
    reference = Store(tmp_path / "reference.duckdb")
    ingest_files(reference, [path], workers=0)

    monkeypatch.setattr(pipeline, "CHUNK_BYTES", 60_000)  # ~25 blocks
    monkeypatch.setattr(pipeline, "prepare_ranges", _slow_in_workers)
    here: list[int] = []
    real_prepare_block = pipeline.prepare_block

    def counting(data, first_line, source, spool_dir):
        if os.getpid() == _WRITER_PID:
            here.append(first_line)
        return real_prepare_block(data, first_line, source, spool_dir)

    monkeypatch.setattr(pipeline, "prepare_block", counting)  # what prepare_ranges calls, in this process
    store = Store(tmp_path / "helped.duckdb")
    summary = ingest_files(store, [path], workers=1)
    assert len(here) >= 5, here  # most blocks: the worker sleeps 0.3 s on each
    assert summary.records == 1500 and summary.result.dead_lettered == 1
    assert stored_rows(store) == stored_rows(reference)
    assert store.cursor().execute("SELECT source FROM dead_letters").fetchall() == [(f"file:{path}:901",)]


_MARKS: list[Path] = []  # where _marking_in_workers leaves its marks (set before the pool forks)


def _marking_in_workers(ranges, spool_dir):
    """prepare_ranges that leaves a mark, named after its files, for each task a worker process prepares."""
    if os.getpid() != _WRITER_PID:
        (_MARKS[0] / "+".join(Path(path).name for path, *_ in ranges)).touch()
    return _prepare_ranges(ranges, spool_dir)


def test_a_directory_of_files_smaller_than_a_block_goes_through_the_workers(tmp_path: Path, monkeypatch):
    """Storage archives are many PT1H.json files, each smaller than a block. They go to the worker processes,
    several files to a task (not file by file through this one alone, at half the speed; and several to a task
    without workers too), and the store gets what one process stores: every dead letter names its own file and
    line, and a file in another form (a JSON array) and a gzip file keep their places."""
    import gzip
    import shutil

    monkeypatch.setattr(pipeline, "CHUNK_BYTES", 40_000)
    inputs = tmp_path / "archive"
    inputs.mkdir()
    files = []
    for i in range(12):
        lines = [orjson.dumps(r).decode() for r in records(14, seed=100 + i)]  # ~12 KB: a third of a block
        if i == 3:
            lines[6] = "{broken"
        path = inputs / f"h={i:02d}.json"
        path.write_text("\n".join(lines) + "\n")
        files.append(path)
    shutil.copy(FIXTURES / "bare_array.json", inputs / "array.json")
    files.insert(6, inputs / "array.json")
    packed = inputs / "h=12.json.gz"
    packed.write_bytes(gzip.compress("\n".join(orjson.dumps(r).decode() for r in records(30, seed=99)).encode()))
    files.insert(9, packed)

    alone: list[int] = []  # files per task of the reference, prepared by this process alone

    def counting(ranges, spool_dir):
        alone.append(len(ranges))
        return _prepare_ranges(ranges, spool_dir)

    monkeypatch.setattr(pipeline, "prepare_ranges", counting)
    reference = Store(tmp_path / "reference.duckdb")
    assert ingest_files(reference, files, workers=0).records == 12 * 14 + 2 + 30
    assert max(alone) >= 2  # several small files to a task without workers too
    monkeypatch.setattr(pipeline, "prepare_ranges", _marking_in_workers)
    monkeypatch.setattr(sys.modules[__name__], "_MARKS", [tmp_path])
    store = Store(tmp_path / "workers.duckdb")
    summary = ingest_files(store, files, workers=2)

    tasks = [mark.name.split("+") for mark in tmp_path.glob("h=*")]  # the workers' (the writer helps too)
    assert tasks and max(map(len, tasks)) >= 2, tasks
    assert summary.files == 14 and summary.records == 12 * 14 + 2 + 30 and summary.result.dead_lettered == 1
    assert stored_rows(store) == stored_rows(reference)
    assert store.cursor().execute("SELECT source FROM dead_letters").fetchall() == [(f"file:{files[3]}:7",)]
