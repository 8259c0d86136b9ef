"""The core commands as a user runs them: parse, ingest, query, fields, prune, summary."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from aoai_monitor.docs import fields_markdown
from tests.core_helpers import FIXTURES, ROOT, fixture, sample


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aoai_monitor.cli", *args], input=stdin, capture_output=True,
                          cwd=ROOT, timeout=120)


def test_parse_writes_documents_in_input_order_and_rejects_to_stderr():
    proc = run("parse", str(FIXTURES / "ndjson_with_bad_lines.ndjson"), str(FIXTURES / "bare_array.json"))
    assert proc.returncode == 0
    docs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [d["azure"]["open_ai"]["properties"]["object_id"] for d in docs] == ["d", "a", "b"]
    assert docs[0]["@timestamp"] == "2025-10-01T15:00:00.000Z" and docs[0]["_id"]
    rejects = [json.loads(line) for line in proc.stderr.splitlines()]
    assert [r["source"].rsplit(":", 1)[1] for r in rejects] == ["2", "3"]
    assert all(r["reason"] and r["raw"] for r in rejects)


def test_parse_reads_stdin():
    proc = run("parse", stdin=sample("elastic/test-open-ai-gateway.log"))
    assert proc.returncode == 0
    assert len(proc.stdout.splitlines()) == 3


def test_ingest_query_and_formats(tmp_path: Path):
    store = str(tmp_path / "s.duckdb")
    proc = run("ingest", str(FIXTURES), "--store", store)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert "records read" in out and "dead-lettered" in out and "records/s" in out
    again = run("ingest", str(FIXTURES), "--store", store).stdout.decode()
    assert " 0 logs and 0 metrics stored" in again and "duplicates skipped" in again

    sql = 'SELECT "azure.open_ai.category" AS c, count(*) AS n FROM logs GROUP BY 1 ORDER BY 1'
    as_json = [json.loads(x) for x in run("query", sql, "--store", store, "--format", "json").stdout.splitlines()]
    assert {"c": "Audit", "n": 4} in as_json
    as_csv = list(csv.reader(io.StringIO(run("query", sql, "--store", store, "--format", "csv").stdout.decode())))
    assert as_csv[0] == ["c", "n"]
    table = run("query", sql, "--store", store).stdout.decode()
    assert "Audit" in table and "row(s)" in table


def test_ingest_out_of_store_memory_says_what_to_do_and_a_rerun_completes(tmp_path: Path):
    sys.path.insert(0, str(ROOT))
    from bench.gen_records import write

    data = tmp_path / "records.ndjson"
    with open(data, "wb") as f:
        write(3_000, f)
    store = str(tmp_path / "s.duckdb")
    proc = run("ingest", str(data), "--store", store, "--memory-limit", "16MB")
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "Out of Memory" in err and "raise --memory-limit (now 16MB)" in err and "Traceback" not in err
    proc = run("ingest", str(data), "--store", store)
    assert proc.returncode == 0, proc.stderr
    assert "3,000 logs and 0 metrics stored" in proc.stdout.decode()
    bad = run("ingest", str(data), "--store", store, "--memory-limit", "lots")
    assert bad.returncode == 2 and b"cannot use --memory-limit 'lots'" in bad.stderr


def test_ingest_stores_the_same_with_a_worker_process_or_none(tmp_path: Path):
    """--workers 1: a file larger than a block goes through a worker process, the writer helping; --workers 0:
    this process alone. Both store the same documents."""
    sys.path.insert(0, str(ROOT))
    from bench.gen_records import write

    data = tmp_path / "records.ndjson"
    with open(data, "wb") as f:
        write(9_000, f)  # ~7.8 MB: more than one 6 MiB block
    ids = {}
    for workers in ("0", "1"):
        store = str(tmp_path / f"w{workers}.duckdb")
        proc = run("ingest", str(data), "--store", store, "--workers", workers)
        assert proc.returncode == 0, proc.stderr
        assert "9,000 logs and 0 metrics stored" in proc.stdout.decode()
        ids[workers] = run("query", "SELECT md5(string_agg(id::VARCHAR, ',' ORDER BY id)) AS h FROM logs", "--store",
                           store, "--format", "csv").stdout
    assert ids["0"] == ids["1"]
    bad = run("ingest", str(data), "--store", str(tmp_path / "x.duckdb"), "--workers", "-1")
    assert bad.returncode == 2 and b"--workers" in bad.stderr


def test_query_refuses_writes_with_a_clear_error(tmp_path: Path):
    store = str(tmp_path / "s.duckdb")
    run("ingest", str(FIXTURES / "bare_array.json"), "--store", store)
    proc = run("query", "DELETE FROM logs", "--store", store)
    assert proc.returncode == 2
    assert b"only SELECT" in proc.stderr
    assert run("query", "SELECT count(*) FROM logs", "--store", store, "--format", "csv").stdout.decode().split()[-1] == "2"


def test_query_on_missing_store_says_what_to_do(tmp_path: Path):
    proc = run("query", "SELECT 1", "--store", str(tmp_path / "none.duckdb"))
    assert proc.returncode == 2 and b"aoai-monitor ingest" in proc.stderr


def test_ingest_missing_path_fails_clearly(tmp_path: Path):
    proc = run("ingest", str(tmp_path / "missing.json"), "--store", str(tmp_path / "s.duckdb"))
    assert proc.returncode == 2 and b"no such file" in proc.stderr


def test_ingest_reads_standard_input_from_a_pipe(tmp_path: Path):
    """`zcat PT1H.json.gz | aoai-monitor ingest -`: a gzip or plain pipe stores what the file stores (it was
    "-: no such file or directory"), named stdin; and the file then adds nothing."""
    import gzip

    data = fixture("ndjson_with_bad_lines.ndjson")
    path = tmp_path / "PT1H.json"
    path.write_bytes(data)
    store = str(tmp_path / "s.duckdb")
    for piped in (gzip.compress(data), data):
        proc = run("ingest", "-", "--store", store, stdin=piped)
        assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert "1 file(s), 3 records read: 0 logs and 0 metrics stored, 1 duplicates skipped" in out, out
    stored = run("query", 'SELECT "aoai.source", count(*) FROM logs GROUP BY 1', "--store", store, "--format", "csv")
    assert stored.stdout.decode().splitlines()[1:] == ["stdin,1"]
    dead = run("query", "SELECT source FROM dead_letters ORDER BY 1", "--store", store, "--format", "csv")
    assert dead.stdout.decode().splitlines()[1:] == ["stdin:2", "stdin:3"]
    again = run("ingest", str(path), "--store", store).stdout.decode()
    assert " 0 logs and 0 metrics stored, 1 duplicates skipped" in again


def test_ingest_from_a_terminal_says_to_pipe_the_records_in(tmp_path: Path):
    """`aoai-monitor ingest -` typed at a prompt would wait for input the user never meant to type."""
    import os
    import pty

    parent, child = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "aoai_monitor.cli", "ingest", "-", "--store",
                               str(tmp_path / "s.duckdb")], stdin=child, capture_output=True, cwd=ROOT, timeout=60)
    finally:
        os.close(child)
        os.close(parent)
    assert proc.returncode == 2 and b"pipe the records in" in proc.stderr, proc.stderr
    assert not (tmp_path / "s.duckdb").exists()


def test_ingest_into_a_store_the_ui_has_open_names_the_ui_and_what_to_do(tmp_path: Path):
    """`aoai-monitor serve` keeps its store open, and DuckDB lets no process write a file another reads: the
    ingest names the process in the way and what to do (it said another process had it "open for writing")."""
    store = str(tmp_path / "s.duckdb")
    assert run("ingest", str(FIXTURES / "bare_array.json"), "--store", store).returncode == 0
    ui = subprocess.Popen([sys.executable, "-m", "aoai_monitor.cli", "serve", "--store", store, "--port", "0"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    try:
        assert b"aoai-monitor UI:" in ui.stdout.readline()
        proc = run("ingest", str(FIXTURES / "bare_array.json"), "--store", store)
    finally:
        ui.terminate()
        ui.wait(timeout=30)
    message = proc.stderr.decode()
    assert proc.returncode == 2, message
    assert "is in use by `aoai-monitor serve --store " in message and f"(PID {ui.pid})" in message
    assert "stop that UI" in message and "aoai-monitor run" in message


def test_a_store_path_that_cannot_be_a_store_says_what_to_pass(tmp_path: Path):
    (tmp_path / "notes.duckdb").write_text("not a database")
    for store, hint in ((tmp_path / "missing" / "s.duckdb", f"create the folder {tmp_path / 'missing'} first"),
                        (tmp_path, f"--store takes a file, e.g. --store {tmp_path / 'aoai-monitor.duckdb'}"),
                        (tmp_path / "notes.duckdb", "it is not a store")):
        proc = run("ingest", str(FIXTURES / "bare_array.json"), "--store", str(store))
        assert proc.returncode == 2 and hint in proc.stderr.decode(), proc.stderr


def test_parse_names_the_line_of_a_reject_from_standard_input():
    proc = run("parse", stdin=fixture("ndjson_with_bad_lines.ndjson"))
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 1
    assert [json.loads(line)["source"] for line in proc.stderr.splitlines()] == ["stdin:2", "stdin:3"]


def test_fields_reference_is_generated_and_docs_are_in_sync():
    proc = run("fields")
    assert proc.returncode == 0
    assert "`aoai.deployment`" in proc.stdout.decode()
    assert (ROOT / "docs" / "fields.md").read_text() == fields_markdown(), \
        "docs/fields.md is stale: run `aoai-monitor fields > docs/fields.md`"


def test_summary_prints_the_store_overview(tmp_path: Path):
    store = str(tmp_path / "s.duckdb")
    run("ingest", str(FIXTURES), "--store", store)
    out = run("summary", "--store", store).stdout.decode()
    assert "Documents by category" in out and "GatewayLlmLogs" in out and "Dead letters" in out


def test_ctrl_c_stops_an_ingest_after_the_transaction_in_progress(tmp_path: Path, monkeypatch):
    """Ctrl-C during a long ingest: the transaction in progress commits, the ingest stops there, and the user is
    told how many records are stored and to run the same command again (it was click's bare "Aborted!", or
    DuckDB's "Query interrupted" traceback). The workers ignore it: they are the writer's to end."""
    import os
    import signal

    from click.testing import CliRunner

    from aoai_monitor import pipeline
    from aoai_monitor.cli import main
    from aoai_monitor.store import Store
    from aoai_monitor.store.duckdb_store import ROW_GROUP_ROWS

    sys.path.insert(0, str(ROOT))
    from bench.gen_records import write

    data = tmp_path / "records.ndjson"
    with open(data, "wb") as f:
        write(3 * ROW_GROUP_ROWS, f)
    real_insert = pipeline.HeldDocuments.insert_chunk
    inserted = []

    def interrupting_in_the_second_transaction(held, chunk) -> None:
        real_insert(held, chunk)
        inserted.append(held.tx)
        if len({id(tx) for tx in inserted}) == 2 and inserted.count(held.tx) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(pipeline.HeldDocuments, "insert_chunk", interrupting_in_the_second_transaction)
    store = tmp_path / "s.duckdb"
    result = CliRunner().invoke(main, ["ingest", str(data), "--store", str(store), "--workers", "1"])

    assert result.exit_code == 130, result.output
    assert "stopping after the transaction in progress" in result.output
    assert f"interrupted after {2 * ROW_GROUP_ROWS:,} records were committed; run the same command again" in result.output
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    with Store(store, read_only=True) as stored:
        assert stored.count("logs") == 2 * ROW_GROUP_ROWS
    monkeypatch.setattr(pipeline.HeldDocuments, "insert_chunk", real_insert)
    again = CliRunner().invoke(main, ["ingest", str(data), "--store", str(store), "--workers", "1"])
    assert again.exit_code == 0 and f"{2 * ROW_GROUP_ROWS:,} duplicates skipped" in again.output
