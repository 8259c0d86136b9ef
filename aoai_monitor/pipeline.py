"""Files → normalized batches → store. The transport-agnostic middle that every input plugs into.

Large NDJSON files (storage archives, exports) stream line by line in bounded batches, so memory stays
flat whatever the input size. Anything else (an envelope, a pretty-printed file, a broken payload) is
read whole and decoded by the tolerant chain in normalize.decode.
"""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import orjson

from .normalize import Normalized, decode_line, decode_payload, normalize_decoded
from .normalize.decode import Decoded, Reject
from .store import CommitResult, Store

BATCH_RECORDS = 20_000
WHOLE_FILE_LIMIT = 512 * 1024 * 1024
INPUT_SUFFIXES = (".json", ".jsonl", ".ndjson", ".log", ".txt", ".gz")


@dataclass
class IngestSummary:
    records: int = 0
    result: CommitResult = field(default_factory=CommitResult)
    files: int = 0
    seconds: float = 0.0

    @property
    def stored(self) -> int:
        return sum(self.result.stored.values())

    @property
    def duplicates(self) -> int:
        return sum(self.result.duplicates.values())


def expand_inputs(paths: list[str]) -> list[Path]:
    """Files as given; directories walked recursively for log-like files (PT1H.json, *.jsonl, *.gz …)."""
    out = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            out += sorted(f for f in path.rglob("*") if f.is_file() and f.name.lower().endswith(INPUT_SUFFIXES))
        elif path.exists():
            out.append(path)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    return out


def _open(path: Path) -> io.BufferedReader:
    raw = open(path, "rb")
    if raw.peek(2)[:2] == b"\x1f\x8b":
        return io.BufferedReader(gzip.GzipFile(fileobj=raw))  # type: ignore[arg-type]
    return raw


def _looks_like_ndjson(stream: io.BufferedReader) -> bool:
    """NDJSON when the first line alone is a complete JSON object (the fast streaming path applies)."""
    head = stream.peek(1 << 16)
    head = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"{"):
        return False
    end = head.find(b"\n")
    if end < 0:
        return False
    try:
        return isinstance(orjson.loads(head[:end]), dict)
    except orjson.JSONDecodeError:
        return False


def iter_items(path: Path, on_bytes: Callable[[int], None] | None = None) -> Iterator[tuple[Decoded | Reject, int]]:
    """Decoded records (or rejects) of one file in input order, with their line number (0 when unknown)."""
    with _open(path) as stream:
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
            return
        data = stream.read(WHOLE_FILE_LIMIT + 1)
        if len(data) > WHOLE_FILE_LIMIT:
            raise ValueError(f"{path}: larger than {WHOLE_FILE_LIMIT >> 20} MiB and not NDJSON; split it into lines")
        if on_bytes:
            on_bytes(len(data))
        for item in decode_payload(data):
            yield item, 0


def read_batches(path: Path, source: str | None = None, batch_records: int = BATCH_RECORDS,
                 on_bytes: Callable[[int], None] | None = None) -> Iterator[Normalized]:
    """Normalized batches of one file, in input order, each at most `batch_records` records."""
    source = source or f"file:{path}"
    batch = Normalized()
    for item, line_no in iter_items(path, on_bytes):
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


def ingest_files(store: Store, files: list[Path], on_bytes: Callable[[int], None] | None = None,
                 on_batch: Callable[[IngestSummary], None] | None = None) -> IngestSummary:
    import time
    summary = IngestSummary()
    started = time.perf_counter()
    for path in files:
        summary.files += 1
        for batch in read_batches(path, on_bytes=on_bytes):
            summary.records += batch.records
            summary.result.add(store.commit(batch.logs, batch.metrics, batch.rejects))
            if on_batch:
                on_batch(summary)
    summary.seconds = time.perf_counter() - started
    return summary


def total_bytes(files: list[Path]) -> int:
    return sum(os.path.getsize(f) for f in files)
