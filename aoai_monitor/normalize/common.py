"""Small pure helpers shared by the normalizers: key casing, resource ids, times, ids."""

from __future__ import annotations

import base64
import calendar
import hashlib
import re
from functools import lru_cache

import orjson

_SNAKE = re.compile(r"_?([a-z])([A-Z]+)")


@lru_cache(maxsize=4096)
def snake_case(key: str) -> str:
    """Elastic's key rule: `_?([a-z])([A-Z]+)` → `$1_$2`, then lower-case (callerIpAddress → caller_ip_address)."""
    return _SNAKE.sub(r"\1_\2", key).lower()


_GUID = r"\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?"
_RESOURCE_PATTERNS = [
    re.compile(rf"^/subscriptions/(?P<sub>{_GUID})/resourcegroups/(?P<group>[^/]+)/providers/(?P<provider>[^/]+/[^/]+)/(?P<name>[^/]+)"
               r"/authorizationrules/(?P<rule>[^/]+)", re.I),
    re.compile(rf"^/subscriptions/(?P<sub>{_GUID})/resourcegroups/(?P<group>[^/]+)/providers/(?P<provider>[^/]+/[^/]+)/(?P<name>[^/]+)", re.I),
    re.compile(rf"^/subscriptions/(?P<sub>{_GUID})/providers/(?P<provider>[^/]+)", re.I),
    re.compile(rf"^/subscriptions/(?P<sub>{_GUID})/resourcegroups/(?P<group>[^/]+)", re.I),
    re.compile(rf"^/subscriptions/(?P<sub>{_GUID})", re.I),
    re.compile(r"^/providers/(?P<provider>.+)", re.I),
]


@lru_cache(maxsize=8192)
def parse_resource_id(resource_id: str) -> tuple[tuple[str, str], ...]:
    """ARM id → lower-cased azure.resource.* / azure.subscription_id / cloud.account.id fields.

    Sub-resource paths (…/ACCOUNTS/X/DEPLOYMENTS/Y) resolve to the parent resource's name, like
    Elastic's grok cascade. Cached: a hub carries few distinct resources.
    """
    rid = resource_id.strip()
    out = [("azure.resource.id", rid.lower())]
    for pattern in _RESOURCE_PATTERNS:
        m = pattern.match(rid)
        if not m:
            continue
        g = {k: v for k, v in m.groupdict().items() if v}
        if "sub" in g:
            sub = g["sub"].strip("{}").lower()
            out += [("azure.subscription_id", sub), ("cloud.account.id", sub)]
        if "group" in g:
            out.append(("azure.resource.group", g["group"].lower()))
        if "provider" in g:
            out.append(("azure.resource.provider", g["provider"].lower()))
        if "name" in g:
            key = "azure.resource.namespace" if "rule" in g else "azure.resource.name"
            out.append((key, g["name"].lower()))
        if "rule" in g:
            out.append(("azure.resource.authorization_rule", g["rule"].lower()))
        break
    return tuple(out)


def _epoch_seconds(prefix: str) -> int:
    # timegm is linear in the seconds: (…(days * 24 + hour) * 60 + minute) * 60 + second; the rest is per minute.
    return _epoch_minute(prefix[:16]) + int(prefix[17:19])


@lru_cache(maxsize=4096)
def _epoch_minute(prefix: str) -> int:
    return calendar.timegm((int(prefix[0:4]), int(prefix[5:7]), int(prefix[8:10]),
                            int(prefix[11:13]), int(prefix[14:16]), 0, 0, 0, 0))


_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)?$")


# 19-character "YYYY-MM-DDTHH:MM:SS" prefixes already matched by _TIME_RE and converted → epoch ms. Bounded at an
# hour of distinct seconds (a PT1H blob; records arrive roughly in time order): at 65,536 entries, with an
# lru_cache of the same size behind it, each worker process held 21 MB of them by the end of a 10 M-record ingest.
_PREFIX_MS: dict[str, int] = {}
_PREFIX_MS_MAX = 4096
_MILLIS = {f"{i:03d}": i for i in range(1000)}  # int() of three ASCII digits, by table


def parse_time_ms(value) -> int | None:
    """ISO-8601 (Azure writes 7 fractional digits) → epoch milliseconds, truncated like Elastic's date processor.

    Returns None when the value is not a time. The seconds part is cached: records share seconds.
    """
    # Fast path: Azure's own form (at least 3 fractional digits, then Z) after a prefix already seen. _TIME_RE's
    # match of the prefix does not depend on the rest, \d is exactly str.isdecimal, and the general path
    # below gives seconds * 1000 + the first three fractional digits for such a value.
    if type(value) is str:
        n = len(value)
        if n >= 24 and value[n - 1] == "Z" and value[19] == ".":
            ms = _PREFIX_MS.get(value[:19])
            if ms is not None and value[20:n - 1].isdecimal():
                millis = _MILLIS.get(value[20:23])
                return ms + (int(value[20:23]) if millis is None else millis)
    if not isinstance(value, str) or len(value) < 19:
        return None
    if not _TIME_RE.match(value):
        return None
    try:
        seconds = _epoch_seconds(value[:19])
    except ValueError:
        return None
    if len(_PREFIX_MS) >= _PREFIX_MS_MAX:
        _PREFIX_MS.clear()
    _PREFIX_MS[value[:19]] = seconds * 1000
    rest = value[19:]
    millis = 0
    if rest.startswith("."):
        digits = ""
        for ch in rest[1:]:
            if not ch.isdigit():
                break
            digits += ch
        millis = int((digits + "000")[:3])
        rest = rest[1 + len(digits):]
    if rest and rest != "Z":
        sign = 1 if rest[0] == "+" else -1
        hh, mm = int(rest[1:3]), int(rest[-2:])
        seconds -= sign * (hh * 3600 + mm * 60)
    return seconds * 1000 + millis


# An integer in text (records._int, and the fast path's status rule): ASCII digits (up to 18, so it fits 64
# bits) after an optional minus sign, with blanks around.
INT_BLANKS = " \t\n\r\f\x0b"
INT_TEXT = f"[{INT_BLANKS}]*(-?[0-9]{{1,18}})[{INT_BLANKS}]*"


TICKS_AT_UNIX_EPOCH = 621355968000000000  # .NET ticks (100 ns since 0001-01-01) at 1970-01-01


def document_id(record: dict) -> str:
    """Deterministic id: the same record content gives the same id, whatever the envelope or formatting.

    Transport-only keys (EnqueueTime, added by storage archives) are left out so a record read from the
    Event Hub and from the archive is one document. 128 bits of BLAKE2b, shown as a UUID.
    """
    if "EnqueueTime" in record:
        record = {k: v for k, v in record.items() if k != "EnqueueTime"}
    try:  # OPT_NON_STR_KEYS costs time and changes nothing for str keys: only when orjson asks for it
        data = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        data = orjson.dumps(record, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


def key_id(*parts) -> str:
    """Deterministic id from key parts (metrics: resource, metric, dimensions, timestamp)."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=16).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


def fingerprint(dimensions: dict[str, str]) -> str:
    """SHA-1 base64 over sorted dimension keys and values, in the spirit of Elastic's fingerprint processor."""
    h = hashlib.sha1()
    for k in sorted(dimensions):
        h.update(k.encode())
        h.update(b"|")
        h.update(str(dimensions[k]).encode())
        h.update(b"|")
    return base64.b64encode(h.digest()).decode()


def flatten_into(out: dict, prefix: str, value, snake: bool) -> None:
    """Flatten nested maps to dotted keys; lists stay whole (as Elastic arrays). Empty values are dropped.

    `snake` applies Elastic's key rule on the way (record keys), but never inside API bodies.
    """
    if type(value) is dict:
        _flatten_dict(out, prefix, value, snake)
    else:
        _flatten_any(out, prefix, value, snake)


def _flatten_any(out: dict, prefix: str, value, snake: bool) -> None:
    """The general rule, for any value (dict and list subclasses, non-JSON types)."""
    if isinstance(value, dict):
        for k, v in value.items():
            key = snake_case(k) if snake else k
            flatten_into(out, f"{prefix}.{key}" if prefix else key, v, snake)
    elif value is None or value == "" or value == [] or value == {}:
        return
    elif isinstance(value, list):
        cleaned = [drop_empty(v) for v in value]
        cleaned = [v for v in cleaned if v not in (None, "", [], {})]
        if cleaned:
            out[prefix] = cleaned
    else:
        out[prefix] = value


def _flatten_dict(out: dict, prefix: str, value: dict, snake: bool) -> None:
    """flatten_into for a plain dict, dispatching on the exact JSON types (what orjson produces) inline.

    Same result as _flatten_any: a plain str is empty exactly when it equals "", a plain list/dict exactly
    when it equals []/{}; ints, floats and bools are never empty. Anything else takes the general rule.
    """
    for k, v in value.items():
        key = snake_case(k) if snake else k
        name = f"{prefix}.{key}" if prefix else key
        t = type(v)
        if t is str:
            if v:
                out[name] = v
        elif t is dict:
            if v:
                _flatten_dict(out, name, v, snake)
        elif t is int or t is bool or t is float:
            out[name] = v
        elif t is list:
            if v:
                cleaned = _clean_list(v)
                if cleaned:
                    out[name] = cleaned
        elif v is not None:
            _flatten_any(out, name, v, snake)


_FRESH_NAMES: dict = {}  # prefix → {key: "prefix.key"} for flatten_fresh (bounded)
_NAMES_MAX = 2048


def flatten_fresh(out: dict, prefix: str, value: dict) -> None:
    """flatten_into(out, prefix, value, snake=False) for a dict nothing else holds (just parsed from JSON text).

    Same result; a list with nothing to clean is stored as it is instead of as a cleaned copy (equal to it),
    and the dotted names of str keys are cached (bodies of one API repeat their keys).
    """
    names = _FRESH_NAMES.get(prefix)
    if names is None:
        names = {}
        if len(_FRESH_NAMES) < _NAMES_MAX:
            _FRESH_NAMES[prefix] = names
    for k, v in value.items():
        name = names.get(k) if type(k) is str else None
        if name is None:
            name = f"{prefix}.{k}" if prefix else k
            if type(k) is str and len(names) < _NAMES_MAX:
                names[k] = name
        t = type(v)
        if t is str:
            if v:
                out[name] = v
        elif t is dict:
            if v:
                flatten_fresh(out, name, v)
        elif t is int or t is bool or t is float:
            out[name] = v
        elif t is list:
            if v:
                if _clean_values(v):
                    out[name] = v
                else:
                    cleaned = _clean_list(v)
                    if cleaned:
                        out[name] = cleaned
        elif v is not None:
            _flatten_any(out, name, v, False)


def _clean_values(values) -> bool:
    """True when drop_empty would keep these values as they are: only plain JSON types, nothing empty at any
    depth (a list's items, or a dict's values)."""
    for v in values:
        t = type(v)
        if t is str:
            if not v:
                return False
        elif t is dict:
            if not v or not _clean_values(v.values()):
                return False
        elif t is list:
            if not v or not _clean_values(v):
                return False
        elif not (t is int or t is bool or t is float):
            return False
    return True


def drop_empty(value):
    """Elastic's final step: remove nulls, empty strings and maps/lists that become empty, recursively."""
    t = type(value)
    if t is dict:
        return _clean_dict(value)
    if t is list:
        return _clean_list(value)
    return _drop_empty_any(value)


def _drop_empty_any(value):
    """The general rule, for any value (dict and list subclasses, non-JSON types)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = drop_empty(v)
            if v not in (None, "", [], {}):
                out[k] = v
        return out
    if isinstance(value, list):
        return [v for v in (drop_empty(x) for x in value) if v not in (None, "", [], {})]
    return value


def _clean_dict(value: dict) -> dict:
    """drop_empty for a plain dict (exact JSON types inline, as in _flatten_dict; always a new dict)."""
    out = {}
    for k, v in value.items():
        t = type(v)
        if t is str:
            if v:
                out[k] = v
        elif t is dict:
            if v:
                v = _clean_dict(v)
                if v:
                    out[k] = v
        elif t is int or t is bool or t is float:
            out[k] = v
        elif t is list:
            if v:
                v = _clean_list(v)
                if v:
                    out[k] = v
        elif v is not None:
            v = drop_empty(v)
            if v not in (None, "", [], {}):
                out[k] = v
    return out


def _clean_list(value: list) -> list:
    """drop_empty for a plain list (always a new list)."""
    out = []
    append = out.append
    for v in value:
        t = type(v)
        if t is str:
            if v:
                append(v)
        elif t is dict:
            if v:
                v = _clean_dict(v)
                if v:
                    append(v)
        elif t is int or t is bool or t is float:
            append(v)
        elif t is list:
            if v:
                v = _clean_list(v)
                if v:
                    append(v)
        elif v is not None:
            v = drop_empty(v)
            if v not in (None, "", [], {}):
                append(v)
    return out


def nest(flat: dict) -> dict:
    """Dotted keys → nested document (for display and for Elasticsearch)."""
    out: dict = {}
    for key, value in flat.items():
        if key == "@timestamp":
            out[key] = value
            continue
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = node[p] = {}
            node = nxt
        node[parts[-1]] = value
    return out
