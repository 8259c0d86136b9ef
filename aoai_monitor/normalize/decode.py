"""Payload → records: every envelope form Azure (and its peers) produce, and the known broken ones.

Forms: `{"records":[...]}`, a bare array, a single object, NDJSON (one record or envelope per line,
as storage-archive PT1H.json blobs are), gzip of any of these. Repairs, tried only when strict parsing
fails: single-quoted JSON (FunctionAppLogs, elastic/integrations #5880), raw control characters inside
strings (elastic/beats #34092), placeholder text such as `[ 227 B blob data ]` (elastic/beats #40641),
and truncated or concatenated envelopes (each complete record is salvaged). What cannot be repaired is
returned as a Reject with the raw text and the reason, so the caller can dead-letter it.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import orjson


@dataclass(slots=True)
class Decoded:
    record: dict
    raw: str  # the record's own JSON text, for event.original
    repairs: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Reject:
    raw: str
    reason: str


_PLACEHOLDER = re.compile(rb"\[\s*[\d.]+\s*[KMGT]?i?B blob data\s*\]")


def maybe_gunzip(data: bytes) -> bytes:
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    return data


def decode_payload(data: bytes | str) -> Iterator[Decoded | Reject]:
    """Decode one payload (an Event Hub message body, a blob, a small file)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    data = maybe_gunzip(data).strip().lstrip(b"\xef\xbb\xbf")
    if not data:
        return
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        value = _NOT_JSON
    if value is not _NOT_JSON:
        yield from _expand(value, data, [])
        return
    # Not one JSON value: NDJSON, or broken. NDJSON first: it is the common case for archives.
    if b"\n" in data:
        lines = [ln for ln in data.split(b"\n") if ln.strip()]
        first_ok = _loads_or_none(lines[0]) is not None
        if first_ok:
            for line in lines:
                yield from decode_line(line)
            return
    yield from _repair_and_salvage(data)


_NOT_JSON = object()


def _loads_or_none(data: bytes):
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def decode_line(line: bytes) -> Iterator[Decoded | Reject]:
    """One NDJSON line: a record, an envelope, or something to repair. The fast path is one orjson call."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        yield from _repair_and_salvage(line.strip())
        return
    if isinstance(value, dict) and "records" not in value:
        yield Decoded(value, line.decode("utf-8", "replace").strip())
    else:
        yield from _expand(value, line, [])


def decode_parsed_line(value, line: str) -> Iterable[Decoded | Reject]:
    """decode_line for a line whose orjson.loads was already taken (`value`; None when it raised): a plain
    record costs no second parse."""
    if value.__class__ is dict and "records" not in value:
        return (Decoded(value, line.strip()),)
    return decode_line(line.encode("utf-8", "surrogatepass"))


def _expand(value, raw: bytes, repairs: list[str]) -> Iterator[Decoded | Reject]:
    if isinstance(value, dict):
        records = value.get("records")
        if isinstance(records, list):
            for rec in records:
                if isinstance(rec, dict):
                    yield Decoded(rec, orjson.dumps(rec).decode(), list(repairs))
                else:
                    yield Reject(_text(rec), "an element of records[] is not a JSON object")
            return
        yield Decoded(value, raw.decode("utf-8", "replace") if not repairs else orjson.dumps(value).decode(), list(repairs))
    elif isinstance(value, list):
        for rec in value:
            if isinstance(rec, dict):
                if isinstance(rec.get("records"), list):
                    yield from _expand(rec, b"", repairs)
                else:
                    yield Decoded(rec, orjson.dumps(rec).decode(), list(repairs))
            else:
                yield Reject(_text(rec), "an element of the JSON array is not a JSON object")
    else:
        yield Reject(_text(value), "payload is a JSON scalar, not a record")


def _text(value) -> str:
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)


def repair_text(data: bytes) -> tuple[bytes, list[str]]:
    """Apply the known textual repairs; return the new text and which ones changed something."""
    repairs = []
    fixed = _PLACEHOLDER.sub(lambda m: orjson.dumps(" ".join(m.group(0).decode().split())), data)
    if fixed != data:
        repairs.append("placeholder")
    sanitized, changes = sanitize_json_text(fixed.decode("utf-8", "replace"))
    repairs += changes
    return sanitized.encode(), repairs


def _repair_and_salvage(data: bytes) -> Iterator[Decoded | Reject]:
    fixed, repairs = repair_text(data)
    value = _loads_or_none(fixed)
    if value is not None:
        yield from _expand(value, fixed, repairs)
        return
    # Still broken: salvage every complete record (truncated envelope, concatenated objects, …).
    text = fixed.decode("utf-8", "replace")
    spans = list(_record_spans(text))
    if not spans:
        yield Reject(data.decode("utf-8", "replace"), _error_of(fixed))
        return
    covered_end = 0
    for start, end in spans:
        piece = text[start:end]
        rec = _loads_or_none(piece.encode())
        if isinstance(rec, dict):
            yield from _expand(rec, piece.encode(), repairs + ["salvaged"])
        else:
            yield Reject(piece, _error_of(piece.encode()))
        covered_end = end
    tail = text[covered_end:].strip().strip(",]} \n\r\t")
    if tail:
        yield Reject(tail, "truncated or unparseable trailing data after the last complete record")


def _error_of(data: bytes) -> str:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return f"invalid JSON after repairs: {exc}"
    return "invalid JSON"


def _record_spans(text: str) -> Iterator[tuple[int, int]]:
    """Spans of complete JSON objects that are records: the elements of a "records" array if there is one,
    otherwise the top-level objects. String-aware (double and single quotes)."""
    idx = text.find('"records"')
    base = 0
    depth_wanted = 0
    if idx >= 0:
        bracket = text.find("[", idx)
        if bracket >= 0:
            base = bracket + 1
    depth = 0
    start = None
    quote = None
    escaped = False
    i = base
    n = len(text)
    while i < n:
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "{[":
            if depth == depth_wanted and ch == "{":
                start = i
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth < 0:
                if idx >= 0:
                    return  # end of the records array
                depth = 0
            elif depth == depth_wanted and ch == "}" and start is not None:
                yield start, i + 1
                start = None
        i += 1


def sanitize_json_text(text: str) -> tuple[str, list[str]]:
    """Turn single-quoted strings into JSON strings and escape raw control characters inside strings.

    Unlike a blanket quote replacement, apostrophes inside double-quoted strings survive.
    """
    out = []
    changes = set()
    quote = None
    escaped = False
    for ch in text:
        if quote is None:
            if ch == '"':
                quote = '"'
                out.append(ch)
            elif ch == "'":
                quote = "'"
                changes.add("single_quotes")
                out.append('"')
            else:
                out.append(ch)
            continue
        if escaped:
            escaped = False
            if quote == "'" and ch == "'":
                out[-1] = "'"  # \' inside a single-quoted string is a plain apostrophe
            else:
                out.append(ch)
            continue
        if ch == "\\":
            escaped = True
            out.append(ch)
        elif ch == quote:
            quote = None
            out.append('"')
        elif quote == "'" and ch == '"':
            out.append('\\"')
        elif ch < " ":
            changes.add("control_characters")
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch, "\\u%04x" % ord(ch)))
        else:
            out.append(ch)
    return "".join(out), sorted(changes)


def parse_embedded_json(value: str) -> tuple[object | None, list[str]]:
    """A JSON document embedded as a string (properties, APIM bodies): parse, repairing if needed."""
    text = value.strip()
    if not text or text[0] not in "{[":
        return None, []
    try:
        return orjson.loads(text), []
    except orjson.JSONDecodeError:
        pass
    fixed, repairs = repair_text(text.encode())
    parsed = _loads_or_none(fixed)
    if parsed is None:
        return None, []
    return parsed, repairs
