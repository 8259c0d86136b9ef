"""The SQL fast path and the Python normalizer must store identical rows for the records both can take."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import duckdb
import orjson
import pytest

from aoai_monitor.normalize import Normalized, decode_line, normalize_decoded
from aoai_monitor.normalize.fastpath import extract
from aoai_monitor.pipeline import ingest_lines
from aoai_monitor.store import Store
from tests.core_helpers import ROOT, sample

sys.path.insert(0, str(ROOT))
from bench.gen_records import records  # noqa: E402

RID = "/SUBSCRIPTIONS/12CABCB4-86E8-404F-A3D2-1DC9982F45CA/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.COGNITIVESERVICES/ACCOUNTS/A"


def _edge_cases() -> list[str]:
    base = {"category": "RequestResponse", "resourceId": RID, "time": "2025-01-01T00:00:00.1234567Z",
            "operationName": "ChatCompletions_Create", "correlationId": "c1", "resultSignature": "429",
            "durationMs": 10, "properties": {"apiName": "Azure OpenAI API version 2024-10-21", "requestTime": 1, "responseTime": 2}}
    cases = [
        base,
        {**base, "correlationId": "c2", "durationMs": -1021,
         "properties": {"requestTime": 638515262815394150, "responseTime": 638515262825606520}},  # #9987
        {**base, "correlationId": "c3", "durationMs": None,
         "properties": {"requestTime": 638515262815394150, "responseTime": 638515262825606520}},
        {**base, "correlationId": "c4", "durationMs": 12.5, "resultSignature": "abc",
         "properties": orjson.dumps({"objectId": "", "streamType": "Streaming", "modelDeploymentName": ""}).decode()},
        {**base, "correlationId": "c5", "durationMs": 1.0, "properties": {}, "EnqueueTime": "2025-01-01T00:00:00.1"},
        {**base, "correlationId": "c6", "properties": {"apiName": "no api version here", "streamType": ""}},
        {**base, "category": "Audit", "AssetIdentity": "x", "properties": {"objectId": "o"}},
        # not fast-path shaped: must still be identical because they take the Python path in both runs
        {**base, "correlationId": "c7", "durationMs": "1234"},
        {**base, "correlationId": "c8", "newKey": 1},
        {**base, "correlationId": "c9", "time": "2025-01-01T00:00:00Z"},
    ]
    return [orjson.dumps(c).decode() for c in cases]


def _lines() -> list[str]:
    lines = [orjson.dumps(r).decode() for r in records(3000, seed=3)]
    for rel in ("elastic/test-open-ai-request-response.log", "elastic/test-open-ai-audit.log",
                "azure/storage-archive_insights-logs-requestresponse_PT1H.EXCERPT.jsonl"):
        try:
            lines += [ln.strip() for ln in sample(rel).decode().splitlines() if ln.strip()]
        except pytest.skip.Exception:
            pass
    return lines + _edge_cases()


def _rows(store: Store) -> list[tuple]:
    cur = store.cursor()
    cols = [r[0] for r in cur.execute("DESCRIBE logs").fetchall() if r[0] not in ("event.ingested",)]
    select = ", ".join('"' + c + '"' for c in cols)
    return cols, cur.execute(f"SELECT {select} FROM logs ORDER BY id").fetchall()


def test_fast_path_and_python_path_store_identical_rows(tmp_path: Path):
    lines = _lines()
    fast_store = Store(tmp_path / "fast.duckdb")
    result, records_seen = ingest_lines(fast_store, lines, "src")
    table, leftovers = extract(lines)
    assert table is not None and table.num_rows > 0.8 * len(lines)  # the bulk takes the fast path
    assert len(leftovers) >= 3  # …and the odd ones do not

    slow_store = Store(tmp_path / "slow.duckdb")
    batch = Normalized()
    for line in lines:
        normalize_decoded(decode_line(line.encode()), "src", batch)
    slow_store.commit(batch.logs, batch.metrics, batch.rejects)

    cols, fast_rows = _rows(fast_store)
    _, slow_rows = _rows(slow_store)
    assert records_seen == len(lines)
    assert len(fast_rows) == len(slow_rows) == result.stored["logs"]
    for fast, slow in zip(fast_rows, slow_rows):
        diffs = {c: (f, s) for c, f, s in zip(cols, fast, slow) if f != s}
        assert not diffs, diffs


def test_fast_path_is_idempotent(tmp_path: Path):
    lines = _lines()
    store = Store(tmp_path / "s.duckdb")
    first, _ = ingest_lines(store, lines, "src")
    second, _ = ingest_lines(store, lines, "src")
    assert second.stored.get("logs", 0) == 0
    assert second.duplicates["logs"] == first.stored["logs"]
    # the same records arriving as Event Hub envelopes are the same documents
    from aoai_monitor.pipeline import commit_prepared, payload_records, prepare_records

    envelope = orjson.dumps({"records": [orjson.loads(ln) for ln in lines[:500]]})
    prepared = prepare_records(payload_records(envelope), "eventhub")
    third = commit_prepared(store, prepared)
    assert prepared.records == 500 and third.stored.get("logs", 0) == 0


def test_duplicates_inside_one_chunk_are_stored_once(tmp_path: Path):
    lines = _lines()[:100]
    store = Store(tmp_path / "s.duckdb")
    result, _ = ingest_lines(store, lines + lines, "src")
    assert result.stored["logs"] == len(set(lines))


def test_duplicates_across_chunks_of_one_insert_and_in_python_documents_are_stored_once(tmp_path: Path):
    """An Event Hub group commit inserts several chunks in one statement, and a redelivered message repeats
    a chunk whole (same row numbers); gateway records take the Python path and are deduplicated there."""
    from aoai_monitor.pipeline import prepare_lines

    lines = _lines()[:300]
    prepared = prepare_lines(lines + lines, "src")
    assert prepared.fast.num_rows and prepared.tables["logs"][0].num_rows  # both paths are exercised
    store = Store(tmp_path / "s.duckdb")
    with store.transaction() as tx:
        tx.insert_fast_many([(prepared.fast, "src"), (prepared.fast, "src")])
        table, lo, hi = prepared.tables["logs"]
        tx.insert_arrow("logs", table, lo, hi)
    distinct = len(set(lines))
    assert store.count("logs") == distinct
    assert sum(tx.result.stored.values()) == distinct
    offered = 2 * prepared.fast.num_rows + prepared.tables["logs"][0].num_rows
    assert tx.result.duplicates["logs"] == offered - distinct


def test_parsed_records_store_the_same_rows_as_their_lines(tmp_path: Path):
    """Event Hub envelopes skip the per-line parse (prepare_records); the stored documents must not differ,
    down to event.original."""
    from aoai_monitor.pipeline import commit_prepared, payload_records, prepare_records

    lines = _lines()
    from_lines = Store(tmp_path / "lines.duckdb")
    ingest_lines(from_lines, lines, "src")
    from_records = Store(tmp_path / "records.duckdb")
    parsed = [orjson.loads(ln) for ln in lines]
    commit_prepared(from_records, prepare_records(payload_records(orjson.dumps({"records": parsed})), "src"))
    cols, a = _rows(from_lines)
    _, b = _rows(from_records)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        diffs = {c: (f, s) for c, f, s in zip(cols, x, y) if f != s and c != "event.original"}
        assert not diffs, diffs
        assert orjson.loads(x[cols.index("event.original")]) == orjson.loads(y[cols.index("event.original")])


def _metric(i: int) -> dict:
    return {"time": f"2025-07-14T12:{i // 60 % 60:02d}:{i % 60:02d}.0000000Z", "metricName": "AzureOpenAIRequests",
            "timeGrain": "PT1M", "total": i, "count": i, "minimum": 1, "maximum": 1, "average": 1, "resourceId": RID}


def test_bulk_ingest_commits_whole_row_groups_and_loses_nothing_at_the_splits(tmp_path: Path, monkeypatch):
    """Every transaction of a file ingest but the last adds exactly one row group of rows to a table (a partial
    one would be rewritten by a later checkpoint), whatever the chunking, the mix of paths, duplicates, or how
    many files feed it; the rows stored are the ones a single transaction stores."""
    from aoai_monitor import pipeline
    from aoai_monitor.pipeline import ingest_files

    lines = [orjson.dumps(r).decode() for r in records(1300, seed=5)]
    mixed = lines[:700] + [orjson.dumps(_metric(i)).decode() for i in range(300)] + ["{not json", "[1, 2"] + lines[700:]
    (tmp_path / "a.ndjson").write_text("\n".join(mixed) + "\n")
    (tmp_path / "b.json").write_text(orjson.dumps({"records": [orjson.loads(x) for x in lines[:150]]},
                                                  option=orjson.OPT_INDENT_2).decode())  # a duplicate, not NDJSON
    extra = [orjson.dumps(r).decode() for r in records(450, seed=6)]
    (tmp_path / "c.ndjson").write_text("\n".join(lines[1000:1100] + extra) + "\n")  # 100 duplicates of a.ndjson
    files = [tmp_path / n for n in ("a.ndjson", "b.json", "c.ndjson")]

    reference = Store(tmp_path / "reference.duckdb")
    ingest_files(reference, files, workers=1)  # one transaction: the files hold far less than a row group

    monkeypatch.setattr(pipeline, "ROW_GROUP_ROWS", 256)
    monkeypatch.setattr(pipeline, "MAX_TX_RECORDS", 1024)
    monkeypatch.setattr(pipeline, "CHUNK_BYTES", 100_000)  # chunks of ~110 records, from two worker processes
    monkeypatch.setattr(pipeline, "REOPEN_RECORDS", 600)  # the store is closed and opened again along the way
    store = Store(tmp_path / "aligned.duckdb")
    first_connection = store.con
    added: list[dict] = []
    seen = {"logs": 0, "metrics": 0}

    def on_batch(summary) -> None:
        stored = dict(summary.result.stored)
        added.append({t: stored.get(t, 0) - seen[t] for t in seen})
        seen.update({t: stored.get(t, 0) for t in seen})

    summary = ingest_files(store, files, on_batch=on_batch, workers=2)
    assert len(added) > 5
    for tx in added[:-1]:
        assert max(tx.values()) == 256, added
    assert all(max(tx.values()) <= 256 for tx in added)
    assert summary.records == 1300 + 300 + 2 + 150 + 550
    assert summary.duplicates == 250 and summary.result.dead_lettered == 2
    for table in ("logs", "metrics", "dead_letters"):
        ids = "SELECT id FROM {} ORDER BY id".format(table)
        assert store.cursor().execute(ids).fetchall() == reference.cursor().execute(ids).fetchall(), table
    assert store.count("logs") == 1300 + 450 and store.count("metrics") == 300
    # Reopened, and locked down again: user SQL still cannot reach files.
    assert store.con is not first_connection
    with pytest.raises(duckdb.Error):
        store.cursor().execute("SET enable_external_access=true")
