"""Files → normalized batches → store. The transport-agnostic middle that every input plugs into.

Large NDJSON files (storage archives, exports) stream line by line in bounded batches, so memory stays
flat whatever the input size. Anything else (an envelope, a pretty-printed file, a broken payload) is
read whole and decoded by the tolerant chain in normalize.decode.
"""

from __future__ import annotations

import codecs
import ctypes
import gc
import gzip
import io
import multiprocessing
import os
import signal
import sys
import time
import zlib
from collections import deque
from contextlib import contextmanager
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import orjson
import pyarrow as pa

from .normalize import Normalized, decode_line, decode_payload, normalize_decoded, normalize_payload
from .normalize.decode import Decoded, Reject, decode_parsed_line
from .normalize.fastpath import extract_parsed, parse_lines
from .spool import Spool, read_tables, write_tables
from .store import CommitResult, Store
from .store.duckdb_store import ROW_GROUP_ROWS, docs_to_arrow, rejects_to_arrow, time_bounds

BATCH_RECORDS = 20_000
WHOLE_FILE_LIMIT = 512 * 1024 * 1024
INPUT_SUFFIXES = (".json", ".jsonl", ".ndjson", ".log", ".txt", ".gz")


@dataclass
class IngestSummary:
    records: int = 0
    result: CommitResult = field(default_factory=CommitResult)
    files: int = 0
    seconds: float = 0.0
    stopped: bool = False  # by ingest_files' `stop`, before the input's end

    @property
    def stored(self) -> int:
        return sum(self.result.stored.values())

    @property
    def duplicates(self) -> int:
        return sum(self.result.duplicates.values())


# The input "-": standard input, read to its end (a pipe or a redirect). Told apart by identity, so a file named
# "-" can still be given as ./-.
STDIN = Path("-")


def expand_inputs(paths: list[str]) -> list[Path]:
    """Files as given; directories walked recursively for log-like files (PT1H.json, *.jsonl, *.gz …); "-" is
    standard input (STDIN)."""
    out = []
    for p in paths:
        path = Path(p)
        if p == "-":
            if not any(f is STDIN for f in out):
                out.append(STDIN)
        elif path.is_dir():
            out += sorted(f for f in path.rglob("*") if f.is_file() and f.name.lower().endswith(INPUT_SUFFIXES))
        elif path.exists():
            out.append(path)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return out


def source_of(path: Path) -> str:
    """What documents and dead letters name as their source: the file, or standard input."""
    return "stdin" if path is STDIN else f"file:{path}"


def _open(path: Path) -> io.BufferedReader:
    """A file's bytes (or standard input's), decompressed when it is gzip and as UTF-8 when it is UTF-16 (by their
    first bytes, whatever the name). A stream that cannot seek back has its first line read ahead (_read_ahead)."""
    if path is STDIN:
        return _read_ahead(_decoded(open(sys.stdin.fileno(), "rb", closefd=False)))
    stream = _decoded(open(path, "rb"))
    return stream if stream.seekable() else _read_ahead(stream)


# UTF-16's byte-order marks: Windows PowerShell 5's `>` and Out-File write UTF-16 LE text with one.
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _decoded(raw: io.BufferedReader) -> io.BufferedReader:
    """raw's bytes, gunzipped when they are gzip, then as UTF-8 when they are UTF-16."""
    stream = io.BufferedReader(_GzipReader(raw)) if raw.peek(2)[:2] == b"\x1f\x8b" else raw
    if stream.peek(2)[:2] in _UTF16_BOMS:
        return io.BufferedReader(_Utf16Reader(stream))
    return stream


def _workers_can_read(stream: io.BufferedReader) -> bool:
    """A plain file, whose blocks worker processes read themselves; a gzip file, UTF-16 text or standard input
    is read by this process."""
    return isinstance(stream.raw, io.FileIO)


class _GzipReader(io.RawIOBase):
    """A gzip file's data that ends where it stops being readable (a truncated download, corrupt bytes) instead
    of raising: the records before that point are ingested, and `error` says why it ended (_gzip_dead_letter)."""

    def __init__(self, file: io.BufferedReader):
        self._file = file
        self._gzip = gzip.GzipFile(fileobj=file)
        self.error: str | None = None
        self._end: int | None = None  # where the data stopped being readable

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        """One decompression step at a time: a step that fails loses what it decompressed, not the whole read."""
        limit = min(len(buffer), 1 << 16)
        if self._end is not None:  # read again after a seek back: up to where it ended before
            limit = min(limit, self._end - self._gzip.tell())
            if limit <= 0:
                return 0
        try:
            data = self._gzip.read1(limit)
        except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            self.error = f"{type(exc).__name__}: {exc}"
            self._end = self._gzip.tell()
            return 0
        buffer[:len(data)] = data
        return len(data)

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._gzip.seek(offset, whence)

    def tell(self) -> int:
        return self._gzip.tell()

    def close(self) -> None:
        if not self.closed:
            self._gzip.close()
            self._file.close()
        super().close()


class _Wrapper(io.RawIOBase):
    """A raw stream made from a buffered one, which it closes, and whose gzip `error` it passes on."""

    def __init__(self, stream: io.BufferedReader):
        self._stream = stream

    def readable(self) -> bool:
        return True

    @property
    def error(self) -> str | None:
        """A gzip stream's reason for ending early (_gzip_dead_letter)."""
        return getattr(self._stream.raw, "error", None)

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


class _Utf16Reader(_Wrapper):
    """UTF-16 text (either byte order, after its byte-order mark) as UTF-8; what does not decode becomes U+FFFD,
    and its records then fail to parse or keep the mark, as any other damage does."""

    def __init__(self, stream: io.BufferedReader):
        super().__init__(stream)
        self._decoder = codecs.getincrementaldecoder("utf-16")("replace")
        self._pending = b""
        self._ended = False

    def readinto(self, buffer) -> int:
        while not self._pending and not self._ended:
            data = self._stream.read1(1 << 16)
            self._ended = not data
            self._pending = self._decoder.decode(data, final=self._ended).encode()
        read = min(len(buffer), len(self._pending))
        buffer[:read] = self._pending[:read]
        self._pending = self._pending[read:]
        return read


def _read_ahead(stream: io.BufferedReader) -> io.BufferedReader:
    """A stream that cannot seek back (a pipe, decoded UTF-16), with its first line read ahead: _looks_like_ndjson
    must see that line whole, and a peek shows it (the buffer being as large)."""
    head = b""
    while not head.strip(_BLANK) and (line := stream.readline(FIRST_LINE_LIMIT)):
        head += line
    return io.BufferedReader(_ReadAhead(head, stream), buffer_size=max(len(head), io.DEFAULT_BUFFER_SIZE))


class _ReadAhead(_Wrapper):
    """`head`, read from `stream` already, then the rest of `stream`."""

    def __init__(self, head: bytes, stream: io.BufferedReader):
        super().__init__(stream)
        self._head = memoryview(head)
        self._position = 0

    def readinto(self, buffer) -> int:
        if len(self._head):
            read = min(len(buffer), len(self._head))
            buffer[:read] = self._head[:read]
            self._head = self._head[read:]
        else:
            read = self._stream.readinto(buffer)
        self._position += read
        return read

    def tell(self) -> int:
        return self._position


def _gzip_dead_letter(stream: io.BufferedReader, source: str) -> Normalized:
    """The dead letter of a gzip file whose data ended early (nothing when it was read whole)."""
    error = getattr(stream.raw, "error", None)
    if error is None:
        return Normalized()
    return _file_dead_letter(source, f"gzip data ended early, after {stream.tell():,} uncompressed bytes ({error}): "
                             "the file is truncated or corrupt; the records before that point were kept. Fetch the "
                             "file again and re-ingest it (what is stored already is skipped).")


def _file_dead_letter(source: str, reason: str) -> Normalized:
    """A dead letter for a file as a whole (no record's text to keep), counted as one record read."""
    return Normalized(rejects=[(source, reason, "")], records=1)


# The longest first line that still makes a file NDJSON: longer, the file is taken for one JSON document.
FIRST_LINE_LIMIT = 64 << 20
_BLANK = b"\xef\xbb\xbf \t\r\n"  # what may come before the first line: a byte-order mark, white space


def _looks_like_ndjson(stream: io.BufferedReader) -> bool:
    """NDJSON when the first line alone is a complete JSON object (the fast streaming path applies).

    The first line is read whole, however long (a gateway log with its request and response bodies can be tens
    of kilobytes, more than a peek shows), and the stream is put back where it was.
    """
    head = stream.peek(1 << 16).lstrip(_BLANK)
    if head and not head.startswith(b"{"):
        return False
    end = head.find(b"\n")
    if end >= 0:
        first = head[:end]
    else:  # the first line is longer than the peek (or the stream starts with blank lines)
        if stream.seekable():
            start = stream.tell()
            first = b""
            while not first and (line := stream.readline(FIRST_LINE_LIMIT)):
                if line.strip(_BLANK):
                    first = line.lstrip(b"\xef\xbb\xbf \t\r")
            stream.seek(start)
        else:  # _read_ahead read the first line ahead, and the peek is all of it
            first = head
        if not first.startswith(b"{") or not first.endswith(b"\n"):
            return False
    try:
        return isinstance(orjson.loads(first), dict)
    except orjson.JSONDecodeError:
        return False


def iter_items(path: Path, on_bytes: Callable[[int], None] | None = None) -> Iterator[tuple[Decoded | Reject, int]]:
    """Decoded records (or rejects) of one file in input order, with their line number (0 when unknown)."""
    with _open(path) as stream:
        yield from _stream_items(stream, path, on_bytes)


def _stream_items(stream: io.BufferedReader, path: Path,
                  on_bytes: Callable[[int], None] | None) -> Iterator[tuple[Decoded | Reject, int]]:
    """iter_items of a file open already."""
    if _looks_like_ndjson(stream):
        line_no = 0
        pending = 0
        for line in stream:
            line_no += 1
            pending += len(line)
            if line.strip():
                for item in decode_line(line):
                    yield item, line_no
            if on_bytes and pending > 1 << 20:
                on_bytes(pending)
                pending = 0
        if on_bytes and pending:
            on_bytes(pending)
    else:
        data = _read_whole(stream, path)
        if on_bytes:
            on_bytes(len(data))
        for item in decode_payload(data):
            yield item, 0
    for _, reason, raw in _gzip_dead_letter(stream, str(path)).rejects:
        yield Reject(raw, reason), 0


def _read_whole(stream, path) -> bytes:
    """A file that is one JSON document, whole (NDJSON streams in blocks instead)."""
    data = stream.read(WHOLE_FILE_LIMIT + 1)
    if len(data) > WHOLE_FILE_LIMIT:
        raise ValueError(f"{path}: larger than {WHOLE_FILE_LIMIT >> 20} MiB and not NDJSON; split it into lines")
    return data


def read_batches(path: Path, source: str | None = None, batch_records: int = BATCH_RECORDS,
                 on_bytes: Callable[[int], None] | None = None) -> Iterator[Normalized]:
    """Normalized batches of one file, in input order, each at most `batch_records` records."""
    return _batches(iter_items(path, on_bytes), source or source_of(path), batch_records)


def _batches(items: Iterable[tuple[Decoded | Reject, int]], source: str,
             batch_records: int = BATCH_RECORDS) -> Iterator[Normalized]:
    """read_batches of iter_items' items."""
    batch = Normalized()
    for item, line_no in items:
        if isinstance(item, Reject):
            # Rejects name their line so a user can find the record in the file.
            batch.records += 1
            batch.rejects.append((f"{source}:{line_no}" if line_no else source, item.reason, item.raw))
        else:
            before = len(batch.rejects)
            normalize_decoded((item,), source, batch)
            if line_no and len(batch.rejects) != before:
                src, reason, raw = batch.rejects[-1]
                batch.rejects[-1] = (f"{source}:{line_no}", reason, raw)
        if batch.records >= batch_records:
            yield batch
            batch = Normalized()
    if batch.records:
        yield batch


# Bytes of NDJSON per worker task. Smaller blocks pay DuckDB's fixed cost per insert statement (tens of
# milliseconds on the wide logs table) more often; larger ones hold more in flight (workers + IN_FLIGHT_EXTRA blocks and
# their prepared tables). 6 MiB ingests as fast as 8 MiB and peaks ~25 MB lower (bench/bench_ingest.py).
CHUNK_BYTES = 6 << 20
# Blocks in flight beyond one per worker process. The writer commits a row group in bursts of ~0.5 s, as long
# as a worker takes to prepare 3-4 blocks: with one block queued per worker, the workers ran dry in every
# commit and a 2-CPU machine used 1.64 of its CPUs; with five, 1.85 (1 M-record ingests, 4 alternating pairs).
IN_FLIGHT_EXTRA = 5
# A bulk ingest commits each time a table gained exactly one row group (ROW_GROUP_ROWS) of new rows. A
# transaction of another size leaves a partial row group between full ones, and a later checkpoint merges it with
# its neighbours by rewriting them, which costs as much again as writing them (a 1M-record ingest spent 18 of its
# 71 s in the checkpoint after its last commit). Transactions of all duplicates (a re-ingest) stop at this many
# records.
MAX_TX_RECORDS = 4 * ROW_GROUP_ROWS
# A bulk ingest reopens the store after this many records, ~1 M (Store.reopen: memory stays flat in input size).
REOPEN_RECORDS = 24 * ROW_GROUP_ROWS


@dataclass
class PreparedChunk:
    """CPU work done for a chunk of lines, ready for one store transaction (picklable: built in workers)."""
    fast: object = None  # pa.Table of fastpath.extract columns
    tables: dict = field(default_factory=dict)  # table name → (pa.Table, lo, hi)
    rejects: object = None  # pa.Table
    records: int = 0
    # Set instead of the tables while they wait in a spool file (write_tables' path and layout).
    spooled: tuple | None = None

    def to_spool(self, directory: str) -> "PreparedChunk":
        """This chunk with its tables written to a file in the spool `directory` (as is if it cannot be)."""
        tables = {f"table:{name}": table for name, (table, _, _) in self.tables.items()}
        for name, table in (("fast", self.fast), ("rejects", self.rejects)):
            if table is not None:
                tables[name] = table
        spooled = write_tables(directory, tables)
        if spooled is None:
            return self
        bounds = {name: (lo, hi) for name, (_, lo, hi) in self.tables.items()}
        return PreparedChunk(records=self.records, spooled=(*spooled, bounds))

    def from_spool(self) -> "PreparedChunk":
        """The chunk to_spool wrote, its tables mapped from the file (no copy); as is if not spooled."""
        if self.spooled is None:
            return self
        path, layout, bounds = self.spooled
        tables = read_tables(path, layout)
        return PreparedChunk(tables.get("fast"),
                             {name: (tables[f"table:{name}"], *bounds[name]) for name in bounds},
                             tables.get("rejects"), self.records)


def prepare_lines(lines: list[str], source: str | list[str], line_numbers: list[int] | None = None,
                  ingested_ms: int | None = None) -> PreparedChunk:
    """Raw record lines (NDJSON lines, blob lines) → Arrow tables. Pure CPU; no store access. `source` names
    where they came from, or where each line came from (the lines of several files).

    The fast path takes the common well-formed records, those of clean envelope lines included; the rest (other
    categories, anything needing repair) go through the Python normalizer.
    """
    records = parse_lines(lines)
    if any(r.__class__ is list or (r.__class__ is dict and "records" in r) for r in records):
        records, lines, source, line_numbers = _expand_envelopes(records, lines, source, line_numbers)
    return _prepare_parsed(records, lines, source, line_numbers, ingested_ms)


def _prepare_parsed(records: list, texts: list[str], source: str | list[str], positions: list[int] | None,
                    ingested_ms: int | None = None, batch: Normalized | None = None) -> PreparedChunk:
    """prepare_lines once the lines are parsed (`records`, each with its JSON text)."""
    fast, leftovers = extract_parsed(records, texts)
    return _prepared(fast, leftovers, lambda i: decode_parsed_line(records[i], texts[i]),
                     len(records), source, positions, ingested_ms, batch)


def _expand_envelopes(records: list, lines: list[str], source: str | list[str], positions: list[int] | None):
    """Lines that are clean envelopes (an Event Hub message per line) replaced by their records, so those take
    the fast path too: (records, their JSON texts (_texts), sources, positions), each record with its line's source
    and position."""
    out_records, texts, sources, out_positions = [], [], [], []
    for i, (record, line) in enumerate(zip(records, lines)):
        inner = _envelope_records(record) if record.__class__ is list or record.__class__ is dict else None
        if inner is None:
            out_records.append(record)
            texts.append(line)
            n = 1
        else:
            out_records += inner
            texts += _texts(inner)
            n = len(inner)
        sources += [source if source.__class__ is str else source[i]] * n
        if positions:
            out_positions += [positions[i]] * n
    return out_records, texts, sources, out_positions if positions else None


def prepare_records(records: list[dict], source: str, positions: list[int] | None = None,
                    ingested_ms: int | None = None) -> PreparedChunk:
    """prepare_lines for records already parsed (the `records` of Event Hub envelopes): no second parse."""
    fast, leftovers = extract_parsed(records)
    return _prepared(fast, leftovers, lambda i: (Decoded(records[i], orjson.dumps(records[i]).decode()),),
                     len(records), source, positions, ingested_ms)


def _prepared(fast, leftovers: list[int], decoded: Callable[[int], Iterable], count: int, source: str | list[str],
              positions: list[int] | None, ingested_ms: int | None, batch: Normalized | None = None) -> PreparedChunk:
    """The fast path's columns plus the Python normalizer's documents for the leftovers (added to `batch`, what
    was normalized already); dead letters name their position (`<source>:<line or offset>`)."""
    ingested_ms = ingested_ms or int(time.time() * 1000)
    batch = batch or Normalized()
    for i in leftovers:
        before = len(batch.rejects)
        line_source = source if source.__class__ is str else source[i]
        normalize_decoded(decoded(i), line_source, batch)
        if positions and len(batch.rejects) != before:
            batch.rejects[before:] = [(f"{line_source}:{positions[i]}", reason, raw)
                                      for _, reason, raw in batch.rejects[before:]]
    if fast is not None:
        if source.__class__ is str:
            sources = pa.repeat(pa.scalar(source or None, pa.string()), fast.num_rows)
        else:
            left = set(leftovers)
            sources = pa.array([s or None for i, s in enumerate(source) if i not in left], pa.string())
        fast = fast.append_column("aoai.source", sources)
    return _chunk(batch, fast, count - len(leftovers) + batch.records, ingested_ms)


def _chunk(batch: Normalized, fast=None, records: int | None = None, ingested_ms: int | None = None) -> PreparedChunk:
    """A normalized batch (plus fast-path columns) as Arrow tables for one insert."""
    ingested_ms = ingested_ms or int(time.time() * 1000)
    prepared = PreparedChunk(fast, records=batch.records if records is None else records)
    for name, docs in (("logs", batch.logs), ("metrics", batch.metrics)):
        if docs:
            prepared.tables[name] = docs_to_arrow(name, docs, ingested_ms)
    prepared.rejects = rejects_to_arrow(batch.rejects, ingested_ms)
    return prepared


def commit_prepared(store: Store, prepared: PreparedChunk | list[PreparedChunk], state: dict | None = None) -> CommitResult:
    """One transaction: the chunks' documents, dead letters and the input state that covers them."""
    chunks = prepared if isinstance(prepared, list) else [prepared]
    with store.transaction() as tx:
        held = HeldDocuments(tx)
        for chunk in chunks:
            held.insert_chunk(chunk)
        held.flush()
        if state:
            tx.set_state(state)
    return tx.result


def ingest_lines(store: Store, lines: list[str], source: str, line_numbers: list[int] | None = None,
                 state: dict | None = None) -> tuple[CommitResult, int]:
    """prepare_lines + commit_prepared in this process; returns the result and the records the lines held."""
    prepared = prepare_lines(lines, source, line_numbers)
    return commit_prepared(store, prepared, state), prepared.records


def payload_records(payload: bytes) -> list[dict] | None:
    """An Event Hub message body's records when it is a clean envelope (`{"records": [...]}` or an array of
    records), for prepare_records; None for anything else, which the tolerant decoder handles whole."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return _envelope_records(value)


def _texts(records: list[dict]) -> list[str]:
    """The JSON texts (event.original) of records taken out of an envelope: their serialization, as the
    decoder's expansion of an envelope gives it."""
    return [orjson.dumps(r).decode() for r in records]


def _envelope_records(value) -> list[dict] | None:
    """The records of a parsed clean envelope (`{"records": [...]}` or an array of records, none of them an
    envelope itself); None for anything else."""
    if isinstance(value, dict) and isinstance(value.get("records"), list):
        records = value["records"]
    elif isinstance(value, list):
        records = value
    else:
        return None
    if not all(isinstance(r, dict) and not isinstance(r.get("records"), list) for r in records):
        return None
    return records


def _blocks(stream, on_bytes, keep_bytes: bool, size: int | None = None) -> Iterator[tuple[int, int, int, bytes | None]]:
    """(offset, length, 1-based number of the first line, the bytes when `keep_bytes`) of bounded blocks of whole
    lines, read into one reused buffer (memory stays flat); a line longer than a block is a block of its own. The
    buffer is no larger than the stream's `size` when known: a zeroed 6 MiB buffer for each of a directory's
    small files cost more than reading them.

    Only bytes cross to the worker processes: decoding and splitting happen there, off the writer's core. A plain
    file's blocks are read by the task that prepares them (prepare_ranges, in a worker but for the blocks the
    writer takes back), so this process only finds where blocks end and counts lines: reading the blocks here and
    piping them over cost it, the writer, ~2.5 µs per record (a fresh 6 MiB buffer for each read, its copies and
    the pipe) against ~0.6 µs.
    """
    buf = bytearray(CHUNK_BYTES if size is None else min(CHUNK_BYTES, size + 1))
    offset = filled = 0
    line_no = 1
    while True:
        if filled == len(buf):  # one line longer than the buffer
            buf.extend(bytes(len(buf)))
        with memoryview(buf) as view:
            read = stream.readinto(view[filled:])
        if on_bytes and read:
            on_bytes(read)
        filled += read
        if not filled:
            return
        cut = filled if not read else buf.rfind(b"\n", 0, filled) + 1
        if cut:
            if keep_bytes:
                with memoryview(buf) as view:
                    data = bytes(view[:cut])
            yield offset, cut, line_no, data if keep_bytes else None
            line_no += buf.count(b"\n", 0, cut)
            buf[:filled - cut] = buf[cut:filled]
            offset, filled = offset + cut, filled - cut
            if len(buf) > CHUNK_BYTES >= filled:  # grown for a long line: back to size
                del buf[CHUNK_BYTES:]


def prepare_ranges(ranges: tuple[tuple[str, int, int, int, str], ...], spool: str | None = None) -> PreparedChunk:
    """prepare_block for _blocks blocks (path, offset, length, first line's number, source), read here (in a
    worker process): one block of a large file, or the whole of several small files, prepared together."""
    if len(ranges) == 1:
        path, offset, length, first_line, source = ranges[0]
        return prepare_block(_read_range(path, offset, length), first_line, source, spool)
    with _cycle_collector_off():
        lines, numbers, sources = [], [], []
        for path, offset, length, first_line, source in ranges:
            more, more_numbers = block_lines(_read_range(path, offset, length), first_line)
            lines += more
            numbers += more_numbers
            sources += [source] * len(more)
        prepared = prepare_lines(lines, sources, numbers)
        return prepared.to_spool(spool) if spool else prepared


def _read_range(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def prepare_documents(files: tuple[tuple[str, str], ...], spool: str | None = None) -> PreparedChunk:
    """Files (path, source) that are one JSON document each, read whole here (in a worker process): the records
    of clean envelopes (`{"records": [...]}`, an array of records) through the fast path, as the Event Hub's
    messages; anything else through the tolerant decoder, which repairs or dead-letters it whole."""
    with _cycle_collector_off():
        records, texts, sources, others = [], [], [], Normalized()
        for path, source in files:
            try:
                with _open(Path(path)) as stream:
                    data = _read_whole(stream, path)
                    others.extend(_gzip_dead_letter(stream, source))
            except OSError as exc:  # gone, or unreadable, since it was listed
                others.extend(_unreadable_file(source, exc))
                continue
            inner = payload_records(data)
            if inner is None:
                others.extend(normalize_payload(data, source))
                continue
            records += inner
            texts += _texts(inner)
            sources += [source] * len(inner)
        prepared = _prepare_parsed(records, texts, sources, None, batch=others)
        return prepared.to_spool(spool) if spool else prepared


def block_lines(data: bytes, first_line: int) -> tuple[list[str], list[int]]:
    """A block's non-empty lines (stripped) and their line numbers."""
    lines, numbers = [], []
    for number, raw in enumerate(data.decode("utf-8", "replace").split("\n"), first_line):
        line = raw.strip()
        if line:
            lines.append(line)
            numbers.append(number)
    return lines, numbers


def prepare_block(data: bytes, first_line: int, source: str, spool: str | None = None) -> PreparedChunk:
    """prepare_lines for a block of NDJSON bytes (runs in the worker processes), written to the `spool`
    directory when given."""
    with _cycle_collector_off():
        lines, numbers = block_lines(data, first_line)
        prepared = prepare_lines(lines, source, numbers)
        return prepared.to_spool(spool) if spool else prepared


@contextmanager
def _cycle_collector_off():
    """The cycle collector off while a block is prepared: the containers its parsed JSON allocates made it run
    ~30 times per 6 MiB block, for nothing (parsed JSON holds no cycles): 0.6 µs per line, ~2 % of a worker's
    CPU. It resumes after the block."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def _glibc(function: str, *args) -> bool:
    """Call one of glibc's malloc tuning functions; False where the C library has none (macOS, Windows)."""
    try:
        getattr(ctypes.CDLL(None), function)(*args)
    except (OSError, AttributeError, TypeError):
        return False
    return True


def return_large_buffers_to_the_os() -> None:
    """Make glibc map every buffer of 1 MiB or more on its own and unmap it when freed.

    Its default threshold adapts upward once such a buffer is freed, after which the multi-megabyte chunks a
    bulk ingest passes between processes are carved from the heap and stay in its peak RSS. A fixed threshold
    took 30-40 MB off the ingest's peak at the same speed (bench/bench_ingest.py). Process-wide, so commands
    call it, not the library; elsewhere than glibc it does nothing.

    Arrow allocates through the same malloc: its default pool (mimalloc) keeps what it frees for reuse, and
    peaked ~14 MB higher at the same speed (ARROW_DEFAULT_MEMORY_POOL, 4 alternating 300k-record runs).
    """
    if _glibc("mallopt", M_MMAP_THRESHOLD, 1 << 20):
        pa.set_memory_pool(pa.system_memory_pool())


def _trim_heap() -> None:
    """Give the heap's free pages back to the OS (glibc; elsewhere nothing): after the writer prepared a block
    itself, the freed lines and parsed records (~20 MB) otherwise stayed in its peak RSS (358 → 340 MB)."""
    _glibc("malloc_trim", 0)


def ingest_files(store: Store, files: list[Path], on_bytes: Callable[[int], None] | None = None,
                 on_batch: Callable[[IngestSummary], None] | None = None, workers: int | None = None,
                 stop: Callable[[], bool] | None = None) -> IngestSummary:
    """Ingest files; NDJSON chunks are prepared by `workers` processes (default: one per CPU but this one's, so
    none on one CPU) while this one commits them in order, and by this one too while the next chunk is not ready.
    When `stop()` turns true, the ingest ends after the transaction it is in (summary.stopped).

    The store is reopened along the way (Store.reopen): hold no cursors of it meanwhile.

    All files feed one stream of transactions, so many small files (hourly archive blobs) commit as few
    whole row groups, not one partial row group each.
    """
    summary = IngestSummary()
    started = time.perf_counter()
    workers = workers if workers is not None else (os.cpu_count() or 1) - 1
    pools: list[ProcessPoolExecutor] = []
    spools: list[Spool] = []
    try:
        _ingest_chunks(store, _file_chunks(files, summary, on_bytes, workers, pools, spools), summary, on_batch, stop)
    finally:
        for pool in pools:
            pool.shutdown(cancel_futures=True)
            gc.unfreeze()
        for spool in spools:
            spool.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _file_chunks(files: list[Path], summary: IngestSummary, on_bytes, workers: int,
                 pools: list[ProcessPoolExecutor], spools: list[Spool]) -> Iterator[PreparedChunk]:
    """Prepared chunks of every file in order. NDJSON blocks stream through the worker pool (started, into
    `pools`, when the input is larger than one block, with its spool into `spools` where shared memory allows),
    the blocks of consecutive files in flight together: a directory of storage-archive PT1H.json files, each
    smaller than a block, keeps the workers as busy as one large file does."""
    pool = spool = None
    size = total_bytes(files)
    if workers and (size is None or size > CHUNK_BYTES):  # standard input's size is unknown: as if large
        pool = _worker_pool(workers)
        pools.append(pool)
        created = Spool.create()
        if created is not None:
            spools.append(created)
            spool = created.path
    yield from _prepared_in_order(_file_tasks(files, summary, on_bytes), pool, workers, spool)


def _file_tasks(files: list[Path], summary: IngestSummary, on_bytes) -> Iterator[tuple | PreparedChunk]:
    """Each file's work in order, as tasks (a prepare function and its arguments but the spool): the blocks of
    NDJSON files, which the task reads (a gzip file's, this process); small files, NDJSON or one JSON document
    each, several to a task. A document larger than a block comes as its chunks, decoded here. A file that
    cannot be read is dead-lettered, and the run goes on."""
    small = _TaskBatch()
    for path in files:
        summary.files += 1
        source = source_of(path)
        try:
            yield from _tasks_of_file(path, source, on_bytes, small)
        except (OSError, ValueError) as exc:
            yield from small.flush()
            yield _chunk(_unreadable_file(source, exc))
    yield from small.flush()


def _tasks_of_file(path: Path, source: str, on_bytes, small: "_TaskBatch") -> Iterator[tuple | PreparedChunk]:
    """_file_tasks for one file; small work goes into `small`, to share a task with the next files'."""
    with _open(path) as stream:
        if _looks_like_ndjson(stream):
            if _workers_can_read(stream):
                for offset, length, first_line, _ in _blocks(stream, on_bytes, keep_bytes=False,
                                                             size=path.stat().st_size):
                    yield from small.add(prepare_ranges, (str(path), offset, length, first_line, source), length)
                return
            yield from small.flush()
            # a gzip or UTF-16 file or standard input, which only this process can read
            for _, _, first_line, data in _blocks(stream, on_bytes, keep_bytes=True):
                yield prepare_block, data, first_line, source
            dead = _gzip_dead_letter(stream, source)
            if dead.records:
                yield _chunk(dead)
            return
        size = None if path is STDIN else _input_size(path)
        if size is not None and size <= CHUNK_BYTES:
            if on_bytes:
                on_bytes(size)
            yield from small.add(prepare_documents, (str(path), source), size)
            return
        yield from small.flush()
        for batch in _batches(_stream_items(stream, path, on_bytes), source):
            yield _chunk(batch)


def _unreadable_file(source: str, exc: Exception) -> Normalized:
    """The dead letter of a file that could not be read (gone, no permission, a JSON document too large)."""
    return _file_dead_letter(source, f"cannot read the file: {exc}")


class _TaskBatch:
    """Small pieces of work of one kind (blocks of NDJSON files for prepare_ranges, whole documents for
    prepare_documents) gathered into tasks of up to a block's size: a task has a fixed cost of a few
    milliseconds, and 1,000 files of 250 KB ran at a third of the speed of one large file."""

    def __init__(self) -> None:
        self.prepare: Callable | None = None
        self.items: list[tuple] = []
        self.size = 0

    def add(self, prepare: Callable, item: tuple, size: int) -> Iterator[tuple]:
        """Add an item, yielding the task it does not fit in first."""
        if self.items and (prepare is not self.prepare or self.size + size > CHUNK_BYTES):
            yield from self.flush()
        self.prepare = prepare
        self.items.append(item)
        self.size += size

    def flush(self) -> Iterator[tuple]:
        if self.items:
            yield self.prepare, tuple(self.items)
            self.items, self.size = [], 0


def _worker_pool(workers: int) -> ProcessPoolExecutor:
    """Forked processes for the prepare tasks, with this process's objects frozen out of their garbage collector
    (until ingest_files unfreezes them) before any is forked. A child that collects what it inherited runs
    finalizers of objects that are not its own: a DuckDB connection open here, finalized in a worker, crashed
    it. Freezing also keeps the collector from touching, and so copying, the pages the children share."""
    gc.freeze()
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_start_worker)


def _start_worker() -> None:
    """In a worker process: Ctrl-C is the writer's to act on (it stops after the transaction it is in, then
    ends the pool), not each worker's to die of mid-task; and _keep_block_buffers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _keep_block_buffers()


def _keep_block_buffers() -> None:
    """In a worker process: keep freed block-sized buffers in the heap for the next block (glibc; elsewhere
    nothing).

    Workers inherit the writer's 1 MiB mapping threshold (return_large_buffers_to_the_os), under which each
    block's bytes, its text and its largest Arrow columns were fresh mappings, faulted in page by page: ~1 page
    fault per record, most of the workers' system time. Taken from the heap (buffers up to 8 MiB) and kept
    there (up to 16 MiB free at its top), a worker peaks ~12 MB higher, and a 1 M-record ingest took ~29 % less
    system time and ~4 % less CPU (10 alternating pairs, 8 of them lower).
    """
    _glibc("mallopt", M_MMAP_THRESHOLD, 8 << 20) and _glibc("mallopt", M_TRIM_THRESHOLD, 16 << 20)


def _ingest_chunks(store: Store, prepared_chunks: Iterable[PreparedChunk], summary: IngestSummary, on_batch,
                   stop: Callable[[], bool] | None = None) -> None:
    """Insert chunks as they come (memory holds a few, not a transaction's worth), committing whenever a table
    gained a whole row group of new rows (ROW_GROUP_ROWS): a chunk that crosses the boundary is split there."""
    chunks = iter(prepared_chunks)
    chunk = next(chunks, None)
    since_reopen = 0
    while chunk is not None:
        if stop is not None and stop():
            summary.stopped = True
            return
        if since_reopen >= REOPEN_RECORDS:
            store.reopen()
            since_reopen = 0
        records = 0
        with store.transaction(bulk=True) as tx:
            held = HeldDocuments(tx)
            while True:
                head, rest = _split_chunk(chunk, {name: ROW_GROUP_ROWS - filled for name, filled in held.filled().items()})
                if rest is not None and held.rows:
                    held.flush()  # at the row group's end, count what held documents really add (not duplicates)
                    continue
                held.insert_chunk(head)
                chunk = rest
                records += head.records
                if max(held.filled().values()) >= ROW_GROUP_ROWS:
                    held.flush()  # likewise
                if records >= MAX_TX_RECORDS or max(held.filled().values()) >= ROW_GROUP_ROWS:
                    break
                chunk = chunk if chunk is not None else next(chunks, None)
                if chunk is None:
                    break
            held.flush()
        _account(summary, tx.result, records, on_batch)
        since_reopen += records
        if chunk is None:
            chunk = next(chunks, None)


def _split_chunk(chunk: PreparedChunk, room: dict[str, int]) -> tuple[PreparedChunk, PreparedChunk | None]:
    """(at most `room[table]` documents of each table, the rest or None). Records are independent, so the
    parts may commit in different transactions; dead letters go with the first part."""
    fast_rows = chunk.fast.num_rows if chunk.fast is not None else 0
    rows = {name: chunk.tables[name][0].num_rows if name in chunk.tables else 0 for name in room}
    rows["logs"] += fast_rows
    if all(rows[name] <= room[name] for name in room):
        return chunk, None
    head = PreparedChunk(rejects=chunk.rejects)
    rest = PreparedChunk()
    take = room["logs"]
    if fast_rows:
        head.fast, rest.fast = chunk.fast.slice(0, min(take, fast_rows)), chunk.fast.slice(min(take, fast_rows))
        take -= head.fast.num_rows
    for name, (table, lo, hi) in chunk.tables.items():
        keep = take if name == "logs" else room[name]
        if keep >= table.num_rows:
            head.tables[name] = (table, lo, hi)
        elif keep <= 0:
            rest.tables[name] = (table, lo, hi)
        else:
            head.tables[name] = _with_bounds(table.slice(0, keep))
            rest.tables[name] = _with_bounds(table.slice(keep))
    head.records = min(chunk.records, sum(min(rows[name], room[name]) for name in room))
    rest.records = chunk.records - head.records
    return head, rest


def _with_bounds(table) -> tuple[object, int, int]:
    """A docs_to_arrow table with its @timestamp range in epoch ms, as insert_arrow takes it."""
    return (table, *time_bounds(table))


def _account(summary: IngestSummary, result: CommitResult, records: int, on_batch) -> None:
    summary.records += records
    summary.result.add(result)
    if on_batch:
        on_batch(summary)


# An insert into the wide logs table has a fixed cost of ~15 ms, whatever its size: about what 3,000 fast-path
# rows or 700 gateway documents cost. So a transaction's documents wait and go in as one statement per kind:
# the fast path's columns until the row group is full (a bulk transaction's end: 6.3 instead of 7.6-8.1 µs per
# row for a block's 6,500 rows at a time), the Python normalizer's documents (records off the fast path, such
# as APIM gateway logs) and dead letters until 4 MiB of them wait (two blocks of the bench's mix: 8 MiB was no
# faster within the noise and peaked ~10 MB higher, bench_ingest).
HELD_BYTES = 4 << 20


class HeldDocuments:
    """A transaction's documents and dead letters, held to go in as one statement per kind at flush() (which
    the transaction must call before it commits); insert_chunk flushes once HELD_BYTES of other documents
    wait. The fast path's columns are spooled or in Arrow already, and a transaction holds at most a row group
    of them (pipeline._ingest_chunks)."""

    def __init__(self, tx):
        self.tx = tx
        self.fast: list = []
        self.tables: dict[str, list] = {}
        self.rows: dict[str, int] = {}
        self.rejects: list = []
        self.bytes = 0

    def filled(self) -> dict[str, int]:
        """Rows per table in the transaction, counting held documents as new."""
        stored = self.tx.result.stored
        return {name: stored.get(name, 0) + self.rows.get(name, 0) for name in ("logs", "metrics")}

    def hold_fast(self, columns) -> None:
        """fastpath columns (with aoai.source) for the logs table."""
        if columns is not None and columns.num_rows:
            self.fast.append(columns)
            self.rows["logs"] = self.rows.get("logs", 0) + columns.num_rows

    def hold(self, name: str, part: tuple) -> None:
        """A docs_to_arrow (table, lo, hi) for `name`."""
        self.tables.setdefault(name, []).append(part)
        self.rows[name] = self.rows.get(name, 0) + part[0].num_rows
        self.bytes += part[0].nbytes

    def hold_rejects(self, rejects) -> None:
        if rejects is not None:
            self.rejects.append(rejects)
            self.bytes += rejects.nbytes

    def hold_documents(self, chunk: PreparedChunk) -> None:
        """A chunk's documents and dead letters, not its fast-path columns."""
        for name, part in chunk.tables.items():
            self.hold(name, part)
        self.hold_rejects(chunk.rejects)

    def insert_chunk(self, chunk: PreparedChunk) -> None:
        self.hold_fast(chunk.fast)
        self.hold_documents(chunk)
        if self.bytes >= HELD_BYTES:
            self.flush()

    def flush(self) -> None:
        # Fast-path rows first: the pricer looks up the deployments of the documents after them in the stored logs
        # (pricing.catalogue.learn_from_store), which then include these.
        self.tx.insert_fast_many(self.fast)
        for name, parts in self.tables.items():
            table = parts[0][0] if len(parts) == 1 else pa.concat_tables([t for t, _, _ in parts])
            self.tx.insert_arrow(name, table, min(lo for _, lo, _ in parts), max(hi for _, _, hi in parts))
        if self.rejects:
            self.tx.insert_rejects_arrow(self.rejects[0] if len(self.rejects) == 1 else pa.concat_tables(self.rejects))
        self.fast, self.tables, self.rows, self.rejects, self.bytes = [], {}, {}, [], 0


def _prepared_in_order(tasks: Iterable[tuple | PreparedChunk], pool, workers: int,
                       spool: str | None) -> Iterator[PreparedChunk]:
    """The chunks of `tasks` (a prepare function and its arguments but the spool each, or a chunk prepared
    already), in order: in this process without a pool. Else the pool prepares them, at most workers +
    IN_FLIGHT_EXTRA in flight (bounded memory), into `spool`; and while the next chunk is not ready, this
    process takes the last queued task back from the pool and prepares it itself, rather than wait. A chunk
    prepared already waits (alone) until the tasks before it are done.
    """
    if pool is None:
        for task in tasks:
            yield task if isinstance(task, PreparedChunk) else task[0](*task[1:], None)
        return
    tasks = iter(tasks)
    pending: deque[tuple[Future, tuple | None]] = deque()  # (future, its task until done here), in order
    prepared: PreparedChunk | None = None
    while True:
        while prepared is None and len(pending) < workers + IN_FLIGHT_EXTRA and (task := next(tasks, None)) is not None:
            if isinstance(task, PreparedChunk):
                prepared = task
            else:
                pending.append((pool.submit(*task, spool), task))
        if not pending:
            if prepared is None:
                return
            yield prepared
            prepared = None
            continue
        head = pending[0][0]
        while not head.done() and (i := _take_back(pending)) is not None:
            fn, *args = pending[i][1]
            done: Future = Future()
            done.set_result(fn(*args, None))  # kept in memory: no spool file
            pending[i] = (done, None)
            _trim_heap()
        yield pending.popleft()[0].result().from_spool()


def _take_back(pending: deque) -> int | None:
    """Index of the last task in `pending` that no worker started, now taken back from the pool (cancelled)."""
    for i in range(len(pending) - 1, -1, -1):
        if pending[i][0].cancel():
            return i
    return None


def total_bytes(files: list[Path]) -> int | None:
    """The bytes an ingest of `files` reads, gzip files counted uncompressed (as the progress advances); None
    with standard input among them (its size is unknown until its end)."""
    if any(f is STDIN for f in files):
        return None
    return sum(_input_size(f) for f in files)


def _input_size(path: Path) -> int:
    """A file's size as read: uncompressed for a gzip file, from its trailer (modulo 4 GiB, as gzip records it);
    as UTF-8 for UTF-16 text, taken to be ASCII; 0 for a file that cannot be read (reading it dead-letters it)."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            if end < 4:
                return end
            f.seek(0)
            magic = f.read(2)
            if magic != b"\x1f\x8b":
                return (end - 2) // 2 if magic in _UTF16_BOMS else end
            f.seek(end - 4)
            size = int.from_bytes(f.read(4), "little")
            f.seek(0)
            try:
                magic = gzip.GzipFile(fileobj=f).read(2)
            except (EOFError, zlib.error, gzip.BadGzipFile):
                return size
            return (size - 2) // 2 if magic in _UTF16_BOMS else size
    except OSError:
        return 0
