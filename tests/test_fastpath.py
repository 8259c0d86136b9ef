"""The fast path (Arrow columns, normalize/fastpath.py) and the Python normalizer must store identical rows for
the records both can take."""

from __future__ import annotations

import io
import sys
from datetime import datetime
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aoai_monitor.normalize import Normalized, decode_line, normalize_decoded
from aoai_monitor.normalize.fastpath import FAST_CONSTANTS, extract
from aoai_monitor.pipeline import ingest_lines
from aoai_monitor.store import Store
from aoai_monitor.store.duckdb_store import docs_to_arrow
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
        {**base, "correlationId": "c10", "resultSignature": " 42\x0b", "properties": {"streamType": "STREAMING"}},
        {**base, "correlationId": "c11", "resultSignature": "--5"},  # no status, and no dead letter either
        {**base, "correlationId": "c12", "resultSignature": "\u0663"},  # a digit, but not an ASCII one
        {**base, "correlationId": "c13", "durationMs": 9_000_000_000_000},  # the largest admitted
        {**base, "correlationId": "c14", "durationMs": None,
         "properties": {"requestTime": 1, "responseTime": (1 << 53) - 1}},  # the farthest admitted ticks
        # not fast-path shaped: must still be identical because they take the Python path in both runs
        # (the next three stopped a whole ingest once: DuckDB failed the statement)
        {**base, "correlationId": "c15", "time": "2025-13-01T00:00:00.0000000Z"},
        {**base, "correlationId": "c16", "durationMs": 10 ** 13},
        {**base, "correlationId": "c17", "durationMs": None,
         "properties": {"requestTime": -9 * 10 ** 18, "responseTime": 9 * 10 ** 18}},
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


_RIDS = [RID, RID.lower(), "/subscriptions/12cabcb4-86e8-404f-a3d2-1dc9982f45ca/resourceGroups/Gr\u00fcn-\u0130/providers/"
        "Microsoft.CognitiveServices/accounts/x", "/subscriptions/x/resourcegroups/g/providers/p/t"]
_TEXT = st.text(alphabet=" \t\n\x0b-0123456789azAZ\u00b2\u0663\u0130", max_size=22)
_TICKS = st.one_of(st.integers(638515262815394150, 638515262825606520), st.none(), st.just(0),
                   st.integers(638515262815394150, 638515262825606520), st.integers(-2 ** 63, 2 ** 63 - 1),
                   st.sampled_from([2.0, 2.5, 6.38515262815394e17]))
_SHAPED = st.fixed_dictionaries({
    "category": st.sampled_from(["RequestResponse", "Audit"]),
    "resourceId": st.one_of(st.sampled_from(_RIDS[:2]), st.sampled_from(_RIDS)),
    "time": st.one_of(
        st.just("2025-01-01T00:00:00.1234567Z"),
        st.datetimes(datetime(1000, 1, 1), datetime(9999, 12, 31)).map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"),
        st.sampled_from(["2025-13-01T00:00:00.000Z", "2025-02-30T00:00:00.000Z", "0000-01-01T00:00:00.000Z",
                         "2025-01-01T00:00:00Z", "2025-01-01T00:00:00.1234567Z"])),
}, optional={
    "operationName": st.one_of(_TEXT, st.sampled_from(["ChatCompletions_Create", ""])),
    "correlationId": _TEXT,
    "resultSignature": st.one_of(_TEXT, st.integers(-10 ** 20, 10 ** 20).map(str), st.sampled_from(["200", "429"])),
    "durationMs": st.one_of(st.none(), st.integers(-10 ** 5, 10 ** 6), st.integers(-10 ** 5, 10 ** 6).map(float),
                            st.sampled_from([-1, 0, 9e12, 9e12 + 1, 1.5]), st.integers(-10 ** 14, 10 ** 14),
                            st.floats(allow_nan=False, allow_infinity=False)),
    "Tenant": _TEXT, "location": _TEXT, "event": _TEXT,
    "properties": st.fixed_dictionaries({}, optional={
        "apiName": st.one_of(_TEXT, st.sampled_from(["Azure OpenAI API version 2024-10-21", "version ", "version"])),
        "requestTime": _TICKS, "responseTime": _TICKS,
        "requestLength": st.one_of(st.none(), st.integers(0, 10 ** 9), st.floats(0, 1e9)),
        "streamType": st.one_of(_TEXT, st.sampled_from(["Streaming", "streaming", "NonStreaming", "", "STREAMİNG"])),
        "modelDeploymentName": _TEXT, "modelName": _TEXT, "modelVersion": _TEXT, "objectId": _TEXT,
    }),
})


@settings(max_examples=600, deadline=None)
@given(shaped=st.lists(_SHAPED, min_size=1, max_size=4), as_text=st.booleans())
def test_the_fast_path_makes_the_python_documents_of_every_record_it_admits(shaped: list[dict], as_text: bool):
    """Every column the fast path fills holds what records.py's document stores (through docs_to_arrow), for
    whatever values the admitted shape allows; records.py fills nothing more, beyond the writer's constants."""
    if as_text:
        shaped = [{**r, "properties": orjson.dumps(r["properties"]).decode()} if "properties" in r else r for r in shaped]
    lines = [orjson.dumps(r).decode() for r in shaped]
    table, leftovers = extract(lines)
    admitted = [i for i in range(len(lines)) if i not in leftovers]
    assert (table.num_rows if table is not None else 0) == len(admitted)
    writer_sets = {*FAST_CONSTANTS, "event.ingested", "aoai.source", "extra"}
    for row, i in zip(table.to_pylist() if table is not None else [], admitted):
        batch = Normalized()
        normalize_decoded(decode_line(lines[i].encode()), "", batch)
        assert not batch.rejects and len(batch.logs) == 1
        stored = docs_to_arrow("logs", batch.logs, 0)[0].to_pylist()[0]
        assert {k for k, v in stored.items() if v is not None} <= set(row) | writer_sets
        diffs = {k: (v, stored[k]) for k, v in {**row, **FAST_CONSTANTS}.items() if v != stored[k]}
        assert not diffs, (lines[i], diffs)


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
        tx.insert_fast_many([prepared.fast, prepared.fast])
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
    ingest_files(reference, files, workers=0)  # one transaction: the files hold far less than a row group

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
