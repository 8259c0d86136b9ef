"""The embedded store: idempotent writes, atomic commits with state, migrations, retention, readers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import duckdb
import pytest

from aoai_monitor import schema
from aoai_monitor.normalize import normalize_payload
from aoai_monitor.pipeline import expand_inputs, ingest_files
from aoai_monitor.query.sql import QueryError, open_for_queries, run_query
from aoai_monitor.store import Store, StoreError
from tests.core_helpers import FIXTURES, ROOT, SAMPLES, fixture


def _counts(store: Store) -> dict[str, int]:
    return {t: store.count(t) for t in ("logs", "metrics", "dead_letters")}


def test_ingest_twice_gives_the_same_row_counts(tmp_path: Path):
    inputs = [str(FIXTURES)] + ([str(SAMPLES)] if SAMPLES.exists() else [])
    files = expand_inputs(inputs)
    store = Store(tmp_path / "s.duckdb")
    first = ingest_files(store, files, workers=0)
    counts = _counts(store)
    second = ingest_files(store, files, workers=0)
    assert _counts(store) == counts
    assert second.stored == 0 and second.result.dead_lettered == 0
    assert second.duplicates == first.stored
    assert counts["logs"] > 10 and counts["dead_letters"] >= 2


def test_commit_is_atomic_with_state(tmp_path: Path):
    store = Store(tmp_path / "s.duckdb")
    docs = normalize_payload(fixture("bare_array.json")).logs
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.insert("logs", docs)
            tx.set_state({"input:x": {"offset": 10}})
            raise RuntimeError("store failed half way")
    assert store.count("logs") == 0
    assert store.get_state("input:x") is None
    store.commit(logs=docs, state={"input:x": {"offset": 10}})
    assert store.count("logs") == 2 and store.get_state("input:x") == {"offset": 10}


def test_a_batch_repeating_an_id_stores_its_first_document_once(tmp_path: Path):
    """One record delivered twice in one batch (a redelivered message) is one row: the first one, every time."""
    store = Store(tmp_path / "s.duckdb")
    docs = normalize_payload(fixture("bare_array.json")).logs
    later = [dict(d, **{"aoai.source": "redelivery"}) for d in docs]
    result = store.commit(logs=[docs[0], later[0], docs[1], later[1], later[0]])
    assert result.stored == {"logs": 2} and result.duplicates == {"logs": 3}
    assert store.cursor().execute('SELECT count(*) FROM logs WHERE "aoai.source" IS NOT DISTINCT FROM ?',
                                  [docs[0].get("aoai.source")]).fetchall() == [(2,)]
    assert store.commit(logs=later).stored == {"logs": 0}


def test_unknown_fields_are_kept_in_extra(tmp_path: Path):
    store = Store(tmp_path / "s.duckdb")
    docs = normalize_payload(b'{"time":"2025-01-01T00:00:00Z","category":"Audit","operationName":"ListKey",'
                             b'"properties":{"objectId":"o","brandNewKey":{"deep":1}}}').logs
    store.commit(logs=docs)
    value = store.cursor().execute(
        """SELECT extra->>'$."azure.open_ai.properties.brand_new_key.deep"' FROM logs""").fetchone()[0]
    assert value == "1"


def test_older_store_is_migrated_forward(tmp_path: Path):
    path = tmp_path / "old.duckdb"
    store = Store(path)
    store.commit(logs=normalize_payload(fixture("bare_array.json")).logs)
    store.close()
    # Simulate a store written before a field existed and before versioning recorded version 1.
    con = duckdb.connect(str(path))
    con.execute('ALTER TABLE logs DROP COLUMN "aoai.repairs"')
    con.execute("UPDATE _meta SET value = '0' WHERE key = 'schema_version'")
    con.close()
    store = Store(path)
    cols = {r[0] for r in store.cursor().execute("DESCRIBE logs").fetchall()}
    assert "aoai.repairs" in cols
    assert store.cursor().execute("SELECT value FROM _meta WHERE key='schema_version'").fetchone()[0] == str(schema.SCHEMA_VERSION)
    assert store.count("logs") == 2


def test_newer_store_is_refused_with_a_fix(tmp_path: Path):
    path = tmp_path / "new.duckdb"
    Store(path).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE _meta SET value = '999' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(StoreError, match="upgrade aoai-monitor"):
        Store(path)


def test_retention_prunes_old_documents(tmp_path: Path):
    store = Store(tmp_path / "s.duckdb")
    store.commit(logs=normalize_payload(fixture("bare_array.json")).logs)  # 2025-10-01
    now_doc = normalize_payload(
        ('{"time":"%s","category":"Audit","operationName":"ListKey","properties":{"objectId":"n"}}'
         % time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())).encode()).logs
    store.commit(logs=now_doc)
    removed = store.prune("30d")
    assert removed["logs"] == 2 and store.count("logs") == 1


def test_readers_query_while_a_writer_commits(tmp_path: Path):
    store = Store(tmp_path / "s.duckdb")
    docs = normalize_payload(fixture("bare_array.json")).logs
    errors, seen = [], []

    def reader():
        try:
            for _ in range(50):
                seen.append(store.cursor().execute("SELECT count(*) FROM logs").fetchone()[0])
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(20):
        d = [dict(x, id=f"{i:08d}-0000-0000-0000-{n:012d}") for n, x in enumerate(docs)]
        store.commit(logs=d)
    t.join()
    assert not errors and seen == sorted(seen) and store.count("logs") == 40


@pytest.mark.parametrize("sql", [
    "DELETE FROM logs", "DROP TABLE logs", "INSERT INTO logs (id) VALUES (uuid())",
    "COPY logs TO '/tmp/aoai-exfil.csv'", "ATTACH '/tmp/other.duckdb'", "SELECT 1; DROP TABLE logs",
    "PRAGMA version", "INSTALL httpfs",
])
def test_query_refuses_anything_but_one_select(tmp_path: Path, sql: str):
    path = tmp_path / "s.duckdb"
    Store(path).close()
    store = open_for_queries(str(path))
    with pytest.raises(QueryError):
        run_query(store, sql)


def test_query_cannot_read_files(tmp_path: Path):
    path = tmp_path / "s.duckdb"
    Store(path).close()
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    store = open_for_queries(str(path))
    with pytest.raises(QueryError):
        run_query(store, f"SELECT * FROM read_csv('{secret}')")


def test_a_store_opened_twice_in_one_process_says_what_to_do(tmp_path: Path):
    with Store(tmp_path / "s.duckdb") as store:
        for read_only in (False, True):
            with pytest.raises(StoreError, match="already open in this process"):
                Store(tmp_path / "s.duckdb", read_only=read_only)
        assert store.count("logs") == 0  # the open one is unharmed


def test_missing_store_error_says_what_to_do(tmp_path: Path):
    with pytest.raises(StoreError, match="aoai-monitor ingest"):
        open_for_queries(str(tmp_path / "nope.duckdb"))


def test_rows_committed_before_a_crash_are_replayed_from_the_write_ahead_log(tmp_path: Path):
    """Writers checkpoint only every CHECKPOINT_THRESHOLD of log (small commits would otherwise rewrite the last
    row group again and again), so committed rows live in the WAL meanwhile: a crash must not lose them."""
    import subprocess
    import sys

    path = tmp_path / "s.duckdb"
    script = (
        "import os, sys\n"
        "import orjson\n"
        "from aoai_monitor.pipeline import ingest_lines\n"
        "from aoai_monitor.store import Store\n"
        "from bench.gen_records import records\n"
        "store = Store(sys.argv[1])\n"
        "for i in range(20):\n"
        "    lines = [orjson.dumps(r).decode() for r in records(200, seed=100 + i)]\n"
        "    ingest_lines(store, lines, f'crash-{i}', state={'position': i})\n"
        "os._exit(0)  # no close, no checkpoint: as if killed\n")
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=120, cwd=ROOT)
    assert Path(f"{path}.wal").stat().st_size > 1 << 20  # the rows were only in the log
    store = Store(path, read_only=True)
    assert store.count("logs") == 20 * 200
    assert store.get_state("position") == 19


def _row_group_sizes(store: Store) -> list[int]:
    """Rows of each row group of the logs table, in order."""
    return [n for (n,) in store.cursor().execute(
        "SELECT max(count) FROM pragma_storage_info('logs') GROUP BY row_group_id ORDER BY row_group_id").fetchall()]


def test_writers_fill_row_groups_of_the_store_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The row group size is an option of each connection, not of the file: every writer opens the store with
    ROW_GROUP_ROWS (a bulk ingest's memory budget holds one row group uncompressed), and readers see the data."""
    import orjson

    from aoai_monitor.pipeline import ingest_lines
    from aoai_monitor.store import duckdb_store
    from bench.gen_records import records

    monkeypatch.setattr(duckdb_store, "ROW_GROUP_ROWS", 2048)
    store = Store(tmp_path / "s.duckdb")
    result, _ = ingest_lines(store, [orjson.dumps(r).decode() for r in records(5000, seed=7)], "rg")
    store.con.execute("CHECKPOINT")
    sizes = _row_group_sizes(store)
    assert sizes == [2048, 2048, result.stored["logs"] - 4096]
    # what DuckDB spills goes next to the store, as when it opens the file itself
    assert store.con.execute("SELECT current_setting('temp_directory')").fetchone()[0] == f"{tmp_path / 's.duckdb'}.tmp"
    store.close()
    assert Store(tmp_path / "s.duckdb", read_only=True).count("logs") == result.stored["logs"]


def test_a_store_written_with_other_row_groups_takes_new_rows_beside_them(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """Stores written before the row group size changed (DuckDB's own 122,880) keep their row groups; later
    writers add theirs after them, and a replay of the old rows is still recognised as duplicates."""
    import orjson

    from aoai_monitor.pipeline import ingest_lines
    from aoai_monitor.store import duckdb_store
    from bench.gen_records import records

    lines = [orjson.dumps(r).decode() for r in records(6000, seed=11)]
    monkeypatch.setattr(duckdb_store, "ROW_GROUP_ROWS", 122_880)
    with Store(tmp_path / "s.duckdb") as store:
        first, _ = ingest_lines(store, lines[:3000], "old")
    monkeypatch.setattr(duckdb_store, "ROW_GROUP_ROWS", 2048)
    with Store(tmp_path / "s.duckdb") as store:
        again, _ = ingest_lines(store, lines, "new")
        store.con.execute("CHECKPOINT")
        sizes = _row_group_sizes(store)
        assert again.duplicates["logs"] == first.stored["logs"]
        assert store.count("logs") == first.stored["logs"] + again.stored["logs"]
    assert sizes[0] == first.stored["logs"] and max(sizes[1:]) == 2048
