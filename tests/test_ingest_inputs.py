"""How `aoai-monitor ingest` takes the forms files come in: which ones stream in blocks, and that each stores
what the record-by-record normalizer stores."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import orjson
import pytest

from aoai_monitor import pipeline
from aoai_monitor.pipeline import ingest_files
from aoai_monitor.store import Store
from tests.core_helpers import FIXTURES, ROOT, stored_rows

sys.path.insert(0, str(ROOT))
from bench.gen_records import records  # noqa: E402


def _gateway_with_prompt(text: str) -> dict:
    record = next(r for r in records(200, seed=4) if r["category"] == "GatewayLogs")
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}
    return {**record, "properties": {**record["properties"], "backendRequestBody": orjson.dumps(body).decode()}}


def test_an_ndjson_file_whose_first_line_is_longer_than_a_peek_streams_in_blocks(tmp_path: Path, monkeypatch):
    """A gateway log with its bodies makes a first line of tens of kilobytes, more than a buffered peek shows:
    the file is still NDJSON and streams in blocks. (It was read whole as one JSON document: memory grew with
    the file, and a file over WHOLE_FILE_LIMIT failed as "not NDJSON".)"""
    monkeypatch.setattr(pipeline, "WHOLE_FILE_LIMIT", 100_000)
    prompt = "Summarize this contract. " * 2000  # 50 KB
    lines = [orjson.dumps(_gateway_with_prompt(prompt)).decode()] + [orjson.dumps(r).decode() for r in records(300)]
    path = tmp_path / "PT1H.json"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size > pipeline.WHOLE_FILE_LIMIT

    store = Store(tmp_path / "s.duckdb")
    summary = ingest_files(store, [path], workers=0)

    assert summary.records == 301 and store.count("logs") == 301 and summary.result.dead_lettered == 0
    stored = store.cursor().execute(
        "SELECT \"azure.open_ai.properties.backend_request_body.messages\"->>'$[0].content' FROM logs "
        "WHERE \"azure.open_ai.properties.backend_request_body.messages\" IS NOT NULL AND "
        "length(\"event.original\") > 50000").fetchall()
    assert stored == [(prompt,)]


_LONG = orjson.dumps({"category": "Audit", "note": "x" * 100_000})


@pytest.mark.parametrize("data, ndjson", [
    (_LONG + b"\n" + _LONG + b"\n", True),
    (b"\xef\xbb\xbf\n \n\r\n" + _LONG + b"\n{}\n", True),  # a byte-order mark and blank lines first
    (b'{"a": 1}\n{"b": 2}\n', True),
    (_LONG, False),  # one JSON document on one line, no newline
    (b"[" + _LONG + b"]\n", False),  # an array of records
    (b'{"records": [\n' + _LONG + b"\n]}\n", False),  # a document over several lines
    (b"", False),
], ids=["long first line", "bom and blank lines", "short lines", "one document", "array", "pretty document", "empty"])
def test_what_counts_as_ndjson_and_the_stream_is_put_back(tmp_path: Path, monkeypatch, data: bytes, ndjson: bool):
    """The same for files, UTF-16 text and standard input (the last two cannot seek back: their first line is
    read ahead)."""
    for name, content in [("plain", data), ("packed.gz", gzip.compress(data))] + [
            (name, encode(data)) for name, encode in _UTF16.items()]:
        path = tmp_path / name
        path.write_bytes(content)
        with pipeline._open(path) as stream:
            assert pipeline._looks_like_ndjson(stream) is ndjson, name
            assert stream.read() == data, name
        with open(path, "rb") as stdin:
            monkeypatch.setattr(sys, "stdin", stdin)
            with pipeline._open(pipeline.STDIN) as stream:
                assert pipeline._looks_like_ndjson(stream) is ndjson, f"stdin {name}"
                assert stream.read() == data, f"stdin {name}"


_UTF16 = {"utf-16 le": lambda data: b"\xff\xfe" + data.decode().encode("utf-16-le"),
          "utf-16 be, gzip": lambda data: gzip.compress(b"\xfe\xff" + data.decode().encode("utf-16-be"))}


def test_standard_input_and_utf16_files_store_what_the_same_file_stores(tmp_path: Path, monkeypatch):
    """`ingest -` (plain or gzip) and UTF-16 text (Windows PowerShell 5's `>` writes it; every record was
    dead-lettered as invalid JSON), with a first line longer than a peek, in blocks through the worker processes
    or not: the records and dead letters of the UTF-8 file, named after their input and line."""
    monkeypatch.setattr(pipeline, "CHUNK_BYTES", 60_000)
    lines = [orjson.dumps(_gateway_with_prompt("Summarize this contract. " * 2000)).decode()]
    lines += [orjson.dumps(r).decode() for r in records(400)]
    lines.insert(100, "{broken")
    data = ("\n\n" + "\n".join(lines) + "\n").encode()
    path = tmp_path / "PT1H.json"
    path.write_bytes(data)
    reference = Store(tmp_path / "file.duckdb")
    ingest_files(reference, [path], workers=0)
    logs = "SELECT id, \"event.original\" FROM logs ORDER BY id"
    dead = "SELECT source, reason FROM dead_letters ORDER BY source"
    expected_dead = reference.cursor().execute(dead).fetchall()
    assert expected_dead[0][0] == f"file:{path}:103"

    inputs = {"stdin": data, "stdin, gzip": gzip.compress(data)} | {name: encode(data) for name, encode in _UTF16.items()}
    for i, (name, content) in enumerate(inputs.items()):
        given = tmp_path / f"input-{i}.json"
        given.write_bytes(content)
        source = "stdin" if name.startswith("stdin") else f"file:{given}"
        if not name.startswith("stdin"):  # the progress total counts what is read: UTF-8
            assert pipeline.total_bytes([given]) == len(data), name
        for workers in (0, 2):
            with open(given, "rb") as stdin:
                monkeypatch.setattr(sys, "stdin", stdin)
                store = Store(tmp_path / f"{i}-{workers}.duckdb")
                summary = ingest_files(store, pipeline.expand_inputs(["-", "-"] if source == "stdin" else [str(given)]),
                                       workers=workers)
            assert summary.records == 402 and summary.files == 1, (name, workers)
            assert store.cursor().execute(logs).fetchall() == reference.cursor().execute(logs).fetchall(), name
            assert store.cursor().execute('SELECT DISTINCT "aoai.source" FROM logs').fetchall() == [(source,)]
            assert store.cursor().execute(dead).fetchall() == [
                (where.replace(f"file:{path}", source), reason) for where, reason in expected_dead], name


def test_envelopes_take_the_fast_path_and_store_what_the_decoder_stores(tmp_path: Path, monkeypatch):
    """Event Hub envelopes one per line, `{"records": [...]}` documents and arrays of records (older archives,
    saved messages): their records take the fast path, small documents several to a task in the worker
    processes, and the store gets what the record-by-record decoder stores (read_batches), dead letters naming
    their file and line; envelopes that are not clean, and repairs, still go through the decoder."""
    monkeypatch.setattr(pipeline, "CHUNK_BYTES", 60_000)
    dumps = lambda value: orjson.dumps(value).decode()  # noqa: E731
    recs = list(records(700, seed=7))
    files = []

    def add(name: str, text: str) -> None:
        files.append(tmp_path / name)
        files[-1].write_text(text)

    lines = [dumps({"records": recs[i:i + 25]}) for i in range(0, 300, 25)]
    lines[3:3] = [dumps({"records": [recs[300], 5]}), "{broken", dumps(recs[301:303]), dumps(recs[303])]
    add("hub-messages.ndjson", "\n".join(lines) + "\n")
    add("PT1H-a.json", dumps({"records": recs[310:360]}))
    add("PT1H-b.json", orjson.dumps(recs[360:390], option=orjson.OPT_INDENT_2).decode())  # an array, over many lines
    add("truncated.json", (FIXTURES / "truncated_envelope.json").read_text())
    add("raw-newline.json", (FIXTURES / "raw_newline_envelope.json").read_text())
    add("PT1H-big.json", dumps({"records": recs[400:700]}))  # larger than a block: decoded in the writer
    assert files[-1].stat().st_size > pipeline.CHUNK_BYTES > files[1].stat().st_size

    reference = Store(tmp_path / "reference.duckdb")
    expected = 0
    for path in files:
        for batch in pipeline.read_batches(path):
            reference.commit(batch.logs, batch.metrics, batch.rejects)
            expected += batch.records
    admitted = []
    real_extract = pipeline.extract_parsed

    def counting(parsed, texts=None):
        fast, leftovers = real_extract(parsed, texts)
        admitted.append(len(parsed) - len(leftovers))
        return fast, leftovers

    monkeypatch.setattr(pipeline, "extract_parsed", counting)
    for workers in (0, 2):
        store = Store(tmp_path / f"workers-{workers}.duckdb")
        summary = ingest_files(store, files, workers=workers)
        assert summary.records == expected and summary.files == len(files)
        assert stored_rows(store) == stored_rows(reference), workers
        dead = [source for source, in store.cursor().execute("SELECT source FROM dead_letters ORDER BY 1").fetchall()]
        assert f"file:{files[0]}:4" in dead and f"file:{files[0]}:5" in dead  # the bad element, the broken line
    assert sum(admitted) >= 0.8 * sum(r["category"] in ("RequestResponse", "Audit") for r in recs[:400])


def test_gzip_files_count_uncompressed_in_the_progress_total(tmp_path: Path):
    """The progress bar advances by the bytes read, uncompressed for gzip: its total counts them so too (it was
    the files' sizes on disk, and a gzip ingest ran past 100 %)."""
    data = "\n".join(orjson.dumps(r).decode() for r in records(500)).encode() + b"\n"
    (tmp_path / "plain.ndjson").write_bytes(data)
    (tmp_path / "packed.ndjson.gz").write_bytes(gzip.compress(data))
    (tmp_path / "tiny.gz").write_bytes(b"\x1f\x8b")  # no trailer: counted as it is
    files = [tmp_path / "plain.ndjson", tmp_path / "packed.ndjson.gz"]
    assert pipeline.total_bytes(files + [tmp_path / "tiny.gz"]) == 2 * len(data) + 2
    advanced = []
    ingest_files(Store(tmp_path / "s.duckdb"), files, on_bytes=advanced.append, workers=0)
    assert sum(advanced) == pipeline.total_bytes(files)


def test_a_truncated_or_corrupt_gzip_file_keeps_what_it_could_read_and_is_dead_lettered(tmp_path: Path, monkeypatch):
    """An interrupted download ends a gzip file early; a file can have gzip's magic bytes and garbage after them.
    Neither stops the run any more (the decompressor's EOFError ended the whole ingest as click's bare "Aborted!"):
    the records before the break are stored, the cut line is dead-lettered as usual, the file gets a dead letter
    saying what to do, and the files after it are ingested."""
    import zlib

    monkeypatch.setattr(pipeline, "CHUNK_BYTES", 50_000)
    text = ("\n".join(orjson.dumps(r).decode() for r in records(2000, seed=9)) + "\n").encode()
    packed = gzip.compress(text)
    readable = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(packed[:len(packed) // 2])
    whole_lines = readable.count(b"\n")
    (tmp_path / "a-cut.ndjson.gz").write_bytes(packed[:len(packed) // 2])
    (tmp_path / "b-garbage.json.gz").write_bytes(b"\x1f\x8b" + b"not gzip at all")
    (tmp_path / "c-cut-envelope.json.gz").write_bytes(
        gzip.compress(orjson.dumps({"records": list(records(40, seed=10))}))[:-30])
    (tmp_path / "d-good.ndjson").write_text(orjson.dumps(next(records(1, seed=11))).decode() + "\n")
    files = sorted(tmp_path.glob("*.*"))

    for workers in (0, 2):
        store = Store(tmp_path / f"w{workers}.duckdb")
        summary = ingest_files(store, files, workers=workers)
        cur = store.cursor()
        sources = {f"file:{tmp_path / name}": name for name in ("a-cut.ndjson.gz", "b-garbage.json.gz",
                                                                "c-cut-envelope.json.gz", "d-good.ndjson")}
        stored = dict(cur.execute('SELECT "aoai.source", count(*) FROM logs GROUP BY 1').fetchall())
        assert stored[f"file:{tmp_path / 'a-cut.ndjson.gz'}"] == whole_lines
        assert stored[f"file:{tmp_path / 'd-good.ndjson'}"] == 1
        ended = {sources[s] for s, in cur.execute(
            "SELECT source FROM dead_letters WHERE reason LIKE 'gzip data ended early%Fetch the file again%'").fetchall()}
        assert ended == {"a-cut.ndjson.gz", "b-garbage.json.gz", "c-cut-envelope.json.gz"}, workers
        assert cur.execute("SELECT count(*) FROM dead_letters WHERE source = ?",
                           [f"file:{tmp_path / 'a-cut.ndjson.gz'}:{whole_lines + 1}"]).fetchone()[0] == 1
        again = ingest_files(store, files, workers=workers)  # nothing new, and nothing twice
        assert again.records == summary.records and not again.result.stored.get("logs")
        assert again.result.dead_lettered == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_that_cannot_be_read_is_dead_lettered_and_the_run_goes_on(tmp_path: Path, monkeypatch, workers: int):
    """A listed file that is gone by the time it is read, and a JSON document too large to read whole, each get a
    dead letter saying why (they stopped the whole ingest with a traceback, and sizing the input for the worker
    pool did); the other files are ingested."""
    monkeypatch.setattr(pipeline, "WHOLE_FILE_LIMIT", 40_000)
    monkeypatch.setattr(pipeline, "CHUNK_BYTES", 20_000)
    big = tmp_path / "a-big.json"
    big.write_text(orjson.dumps({"records": list(records(60, seed=12))}).decode())
    assert big.stat().st_size > pipeline.WHOLE_FILE_LIMIT
    gone = tmp_path / "b-gone.ndjson"
    good = tmp_path / "c-good.ndjson"
    good.write_text("\n".join(orjson.dumps(r).decode() for r in records(30, seed=13)) + "\n")

    store = Store(tmp_path / "s.duckdb")
    summary = ingest_files(store, [big, gone, good], workers=workers)

    assert store.count("logs") == 30 and summary.result.dead_lettered == 2
    reasons = dict(store.cursor().execute("SELECT source, reason FROM dead_letters").fetchall())
    assert "split it into lines" in reasons[f"file:{big}"]
    assert reasons[f"file:{gone}"].startswith("cannot read the file: [Errno 2]")
