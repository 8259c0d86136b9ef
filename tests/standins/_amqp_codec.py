"""Just enough AMQP 1.0 type encoding for the Event Hubs stand-in.

The stand-in stores every event already encoded as the bytes it will put on
the wire, so delivering 100k events is a loop of ``link.send(bytes)`` with no
per-delivery encoding.  Encoding those bytes with hand-packed structs is
several times faster than going through a generic message object, which is
what makes preloading large partitions cheap.

Only the shapes the stand-in produces are covered; decoding of what clients
send is left to the SDK's own ``decode_payload`` (see ``eventhubs.py``).
"""

from __future__ import annotations

import datetime as _dt
import struct
import uuid
from typing import Any, Iterable, List, Tuple

# Section descriptors (AMQP 1.0 part 3.2).
HEADER = 0x70
DELIVERY_ANNOTATIONS = 0x71
MESSAGE_ANNOTATIONS = 0x72
PROPERTIES = 0x73
APPLICATION_PROPERTIES = 0x74
DATA = 0x75
AMQP_SEQUENCE = 0x76
AMQP_VALUE = 0x77
FOOTER = 0x78
BODY_SECTIONS = (DATA, AMQP_SEQUENCE, AMQP_VALUE)

_Q = struct.Struct(">q")
_D = struct.Struct(">d")
_I = struct.Struct(">I")
_II = struct.Struct(">II")


class Symbol(str):
    """Marks a str to be encoded as an AMQP symbol rather than a string."""


class Timestamp(int):
    """Marks an int (milliseconds since the Unix epoch) as an AMQP timestamp."""


def _sized(small: int, large: int, payload: bytes) -> bytes:
    if len(payload) < 256:
        return bytes((small, len(payload))) + payload
    return bytes((large,)) + _I.pack(len(payload)) + payload


def encode_symbol(value: str) -> bytes:
    return _sized(0xA3, 0xB3, value.encode("ascii"))


def encode_string(value: str) -> bytes:
    return _sized(0xA1, 0xB1, value.encode("utf-8"))


def encode_binary(value: bytes) -> bytes:
    return _sized(0xA0, 0xB0, bytes(value))


def encode_long(value: int) -> bytes:
    return b"\x81" + _Q.pack(value)


def encode_timestamp(ms: int) -> bytes:
    return b"\x83" + _Q.pack(ms)


def datetime_to_ms(value: _dt.datetime) -> int:
    if value.tzinfo is None:  # naive datetimes are taken as UTC, like the SDK does
        value = value.replace(tzinfo=_dt.timezone.utc)
    return int(round(value.timestamp() * 1000))


def encode_value(value: Any) -> bytes:
    """Encode a Python value with the obvious AMQP type."""
    if value is None:
        return b"\x40"
    if value is True:
        return b"\x41"
    if value is False:
        return b"\x42"
    if isinstance(value, Timestamp):
        return encode_timestamp(int(value))
    if isinstance(value, int):
        return encode_long(value)
    if isinstance(value, float):
        return b"\x82" + _D.pack(value)
    if isinstance(value, Symbol):
        return encode_symbol(value)
    if isinstance(value, str):
        return encode_string(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return encode_binary(bytes(value))
    if isinstance(value, uuid.UUID):
        return b"\x98" + value.bytes
    if isinstance(value, _dt.datetime):
        return encode_timestamp(datetime_to_ms(value))
    if isinstance(value, dict):
        return encode_map(value.items())
    if isinstance(value, (list, tuple)):
        return encode_list(value)
    raise TypeError(f"cannot AMQP-encode {type(value).__name__}")


def encode_list(items: Iterable[Any]) -> bytes:
    items = list(items)
    body = b"".join(encode_value(v) for v in items)
    return b"\xd0" + _II.pack(len(body) + 4, len(items)) + body


def encode_map_entries(entries: Iterable[Tuple[Any, Any]]) -> Tuple[bytes, int]:
    """Encoded key/value pairs and the element count (2 per pair)."""
    parts: List[bytes] = []
    for key, value in entries:
        parts.append(encode_value(key))
        parts.append(encode_value(value))
    return b"".join(parts), len(parts)


def map_from_raw(raw_entries: bytes, count: int) -> bytes:
    return b"\xd1" + _II.pack(len(raw_entries) + 4, count) + raw_entries


def encode_map(entries: Iterable[Tuple[Any, Any]]) -> bytes:
    return map_from_raw(*encode_map_entries(entries))


def encode_string_array(values: Iterable[str]) -> bytes:
    """array32 of str32, the shape Event Hubs uses for ``partition_ids``."""
    values = [v.encode("utf-8") for v in values]
    body = b"\xb1" + b"".join(_I.pack(len(v)) + v for v in values)
    return b"\xf0" + _II.pack(len(body) + 4, len(values)) + body


def section(descriptor: int, encoded_value: bytes) -> bytes:
    return bytes((0x00, 0x53, descriptor)) + encoded_value


def data_section(body: bytes) -> bytes:
    return section(DATA, encode_binary(body))


# --- skipping over encoded values: used to split a message into sections ----


class AmqpFormatError(ValueError):
    pass


def skip_value(buf: memoryview, pos: int) -> int:
    """Position just after the encoded value that starts at ``pos``.

    Relies on the AMQP type-code layout: the high nibble of the constructor
    says how the value's width is stored (fixed widths, or a 1- or 4-byte
    size prefix), so no per-type table is needed.
    """
    code = buf[pos]
    pos += 1
    if code == 0x00:  # described value: descriptor then value
        pos = skip_value(buf, pos)
        return skip_value(buf, pos)
    high = code >> 4
    fixed = {0x4: 0, 0x5: 1, 0x6: 2, 0x7: 4, 0x8: 8, 0x9: 16}
    if high in fixed:
        end = pos + fixed[high]
    elif high in (0xA, 0xC, 0xE):
        end = pos + 1 + buf[pos]
    elif high in (0xB, 0xD, 0xF):
        end = pos + 4 + _I.unpack_from(buf, pos)[0]
    else:
        raise AmqpFormatError(f"unknown constructor 0x{code:02x}")
    if end > len(buf):
        raise AmqpFormatError("value runs past the end of the buffer")
    return end


def split_sections(raw: bytes) -> List[Tuple[int, bytes]]:
    """Split an encoded message into ``(descriptor, section bytes)`` pairs.

    Raises AmqpFormatError if ``raw`` is not a well-formed message, which is
    also how a batch (whose data sections hold whole messages) is told apart
    from a single event whose body is arbitrary bytes.
    """
    buf = memoryview(raw)
    pos = 0
    out: List[Tuple[int, bytes]] = []
    while pos < len(buf):
        if buf[pos] != 0x00 or pos + 3 > len(buf):
            raise AmqpFormatError("section is not a described type")
        if buf[pos + 1] == 0x53:  # smallulong descriptor
            descriptor = buf[pos + 2]
        elif buf[pos + 1] == 0x80 and pos + 10 <= len(buf):  # ulong descriptor
            descriptor = _Q.unpack_from(buf, pos + 2)[0]
        else:
            raise AmqpFormatError("unexpected section descriptor encoding")
        if not HEADER <= descriptor <= FOOTER:
            raise AmqpFormatError(f"not a message section: 0x{descriptor:x}")
        end = skip_value(buf, pos)
        out.append((descriptor, bytes(buf[pos:end])))
        pos = end
    if not out:
        raise AmqpFormatError("empty message")
    return out


def data_section_value(section_bytes: bytes) -> bytes:
    """The binary carried by one encoded data section."""
    buf = memoryview(section_bytes)
    pos = 3 if buf[1] == 0x53 else 10  # skip 0x00 + descriptor
    code = buf[pos]
    if code == 0xA0:
        start, size = pos + 2, buf[pos + 1]
    elif code == 0xB0:
        start, size = pos + 5, _I.unpack_from(buf, pos + 1)[0]
    else:
        raise AmqpFormatError(f"data section does not hold binary (0x{code:02x})")
    if start + size > len(buf):
        raise AmqpFormatError("data section runs past the end of the buffer")
    return bytes(buf[start:start + size])


def map_section_entries(section_bytes: bytes) -> Tuple[bytes, int]:
    """Raw key/value bytes and element count of a map-valued section."""
    buf = memoryview(section_bytes)
    pos = 3 if buf[1] == 0x53 else 10  # skip 0x00 + descriptor
    code = buf[pos]
    if code == 0xC1:
        count = buf[pos + 2]
        return bytes(buf[pos + 3:]), count
    if code == 0xD1:
        count = _I.unpack_from(buf, pos + 5)[0]
        return bytes(buf[pos + 9:]), count
    if code == 0x40:  # null map
        return b"", 0
    raise AmqpFormatError(f"section value is not a map (0x{code:02x})")

