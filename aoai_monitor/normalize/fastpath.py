"""The same normalization rules as records.py for the bulk of the traffic, applied to whole columns.

RequestResponse and Audit records are nearly every record of an Azure OpenAI hub or archive. Here Python only
parses each line (orjson), checks its shape, computes its time (records.py's function) and hashes its id's key;
Arrow copies the values into columns, builds the id keys and applies the rules in C++ (casing, resource-id
parsing, durations, status codes). It runs in the worker processes of a bulk ingest, off the writer's thread. Only
records whose shape these rules fully cover take this path (known keys, expected JSON types, a standard time
and resource id, magnitudes the column arithmetic holds exactly); anything else — other categories, odd
types, records needing a repair — goes through records.py. tests/test_fastpath.py asserts both paths produce
identical documents, for samples and for hypothesis' records: one set of semantics, two engines.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from .common import INT_BLANKS, INT_TEXT, parse_time_ms

FAST_CATEGORIES = frozenset({"RequestResponse", "Audit"})
_P = "azure.open_ai.properties."
# What records.py sets on every RequestResponse/Audit document: the writer's insert adds them as constants.
FAST_CONSTANTS = {"cloud.provider": "azure", "data_stream.type": "logs", "data_stream.dataset": "azure_openai.logs"}

# Record key → (target field or None when a rule below uses it, Arrow type the value must convert to).
_TOP = {
    "category": ("azure.open_ai.category", pa.string()),
    "operationName": ("azure.open_ai.operation_name", pa.string()),
    "Tenant": ("azure.open_ai.tenant", pa.string()),
    "callerIpAddress": ("azure.open_ai.caller_ip_address", pa.string()),
    "correlationId": ("azure.open_ai.correlation_id", pa.string()),
    "location": ("azure.open_ai.location", pa.string()),
    "resultSignature": ("azure.open_ai.result_signature", pa.string()),
    "event": ("azure.open_ai.event", pa.string()),
    "AssetIdentity": ("azure.open_ai.asset_identity", pa.string()),
    "EnqueueTime": ("azure.open_ai.enqueue_time", pa.string()),
    "time": (None, pa.string()),
    "resourceId": (None, pa.string()),
    "durationMs": (None, pa.float64()),
}
_PROPS = {
    "apiName": (_P + "api_name", pa.string()),
    "requestTime": (_P + "request_time", pa.int64()),
    "requestLength": (_P + "request_length", pa.float64()),
    "responseTime": (_P + "response_time", pa.int64()),
    "responseLength": (_P + "response_length", pa.float64()),
    "objectId": (_P + "object_id", pa.string()),
    "streamType": (_P + "stream_type", pa.string()),
    "modelDeploymentName": (_P + "model_deployment_name", pa.string()),
    "modelName": (_P + "model_name", pa.string()),
    "modelVersion": (_P + "model_version", pa.string()),
}
_TOP_KEYS = frozenset(_TOP) | {"properties"}
_PROP_KEYS = frozenset(_PROPS)
# Standard time: 3–7 fractional digits and Z (what Azure writes); its millisecond prefix is 23 characters.
_STANDARD_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3,7}Z\Z").match
_RID_RE = (r"^/subscriptions/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/resourcegroups/([^/]+)"
           r"/providers/([^/]+/[^/]+)/([^/]+)$")
_STANDARD_RID = re.compile(_RID_RE).match


def key_part(value) -> str:
    """Text of one part of service_key_id's key (the general rule; service_key_id inlines str and int)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        # Integral numbers print without a fraction whatever their JSON form (102 and 102.0).
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return orjson.dumps(value).decode()


_NO_PROPS: dict = {}  # read-only stand-in for properties that are not an object


def service_key_id(record: dict, props) -> str:
    """Id of a RequestResponse/Audit record from the fields that identify it (records.py; _ids computes the
    same over the fast path's columns).

    Strings and ints, nearly every part, are formatted inline; key_part takes the rest.
    """
    g = record.get
    h = props.get if isinstance(props, dict) else _NO_PROPS.get
    parts = [g("category"), g("resourceId"), g("time"), g("operationName"), g("correlationId"), g("resultSignature"),
             g("durationMs"), g("AssetIdentity"), h("requestTime"), h("responseTime"), h("objectId")]
    digest = hashlib.md5("\x1f".join([
        v if v.__class__ is str else str(v) if v.__class__ is int else key_part(v) for v in parts]).encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


_TOP_TYPE = pa.struct([(key, typ) for key, (_, typ) in _TOP.items()])
_PROP_TYPE = pa.struct([(key, typ) for key, (_, typ) in _PROPS.items()])
_NUMBER = (int, float, type(None))
# Ticks must be integers: Arrow would truncate a fractional one, and key_part prints large floats in e-notation.
_INTEGER = (int, type(None))
# Admitted magnitudes, within which _duration's arithmetic is exact in 64 bits and doubles: durationMs whose
# nanoseconds fit, and tick pairs less than 2^53 apart.
_MAX_MS = 9_000_000_000_000
_TICKS_APART = 1 << 53


def extract(lines: list[str]) -> tuple[pa.Table | None, list[int]]:
    """Parse lines and copy fast-path records into columns; return (columns, indexes left for records.py)."""
    return extract_parsed(parse_lines(lines), lines)


def parse_lines(lines: list[str]) -> list:
    """Each line's JSON value, None where it does not parse (for extract_parsed, and decode_parsed_line)."""
    return [_loads_or_none(line) for line in lines]


def extract_parsed(records: list, texts: list[str] | None = None) -> tuple[pa.Table | None, list[int]]:
    """extract() for records already parsed (an Event Hub envelope's list); None stands for unparsable.

    `texts` are the records' JSON texts (event.original); without them the admitted records are serialized.
    Python only checks each record's shape and computes its time; Arrow converts the kept dicts to columns,
    builds the ids' keys (_ids) and applies the rules in C++ (_documents).
    """
    tops, props, rows, times, leftovers = [], [], [], [], []
    loads, fast, top_keys, prop_keys = orjson.loads, FAST_CATEGORIES, _TOP_KEYS, _PROP_KEYS
    number, integer, apart, time_ms = _NUMBER, _INTEGER, _TICKS_APART, parse_time_ms
    standard_time, valid_rid = _STANDARD_TIME, _valid_rid
    for i, r in enumerate(records):
        if r.__class__ is not dict or r.get("category") not in fast or not r.keys() <= top_keys:
            leftovers.append(i)
            continue
        p = r.get("properties")
        if p.__class__ is str:
            try:
                p = loads(p)
            except orjson.JSONDecodeError:
                leftovers.append(i)
                continue
        if p.__class__ is not dict or not p.keys() <= prop_keys:
            leftovers.append(i)
            continue
        # Numbers must be JSON numbers (not strings or booleans), and a fractional duration keeps its exact
        # text in the id: records.py takes both. Bounds keep the rules' integer arithmetic within 64 bits
        # (records.py takes the rest: its Python integers do not overflow).
        d, g = r.get("durationMs"), p.get
        req, resp = g("requestTime"), g("responseTime")
        if (d.__class__ not in number or req.__class__ not in integer or resp.__class__ not in integer
                or g("requestLength").__class__ not in number or g("responseLength").__class__ not in number
                or (d.__class__ is float and not d.is_integer())
                or (d is not None and not -_MAX_MS <= d <= _MAX_MS)
                or (req is not None and resp is not None and not -apart < resp - req < apart)):
            leftovers.append(i)
            continue
        t, rid = r.get("time"), r.get("resourceId")
        if t.__class__ is not str or standard_time(t) is None or rid.__class__ is not str or not valid_rid(rid):
            leftovers.append(i)
            continue
        ms = time_ms(t)
        if ms is None:  # the standard form, but not a date (month 13)
            leftovers.append(i)
            continue
        rows.append(i)
        tops.append(r)
        props.append(p)
        times.append(ms)
    if not rows:
        return None, leftovers
    try:
        top, prop = pa.array(tops, _TOP_TYPE), pa.array(props, _PROP_TYPE)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # A value of an unexpected JSON type somewhere in the chunk: let records.py handle the whole chunk
        # (rare, and it keeps the per-record loop above free of type checks).
        return None, list(range(len(records)))
    if texts is None:
        dumps = orjson.dumps
        original = pa.array([dumps(r) for r in tops], pa.binary()).cast(pa.string())
    else:
        original = pa.array([texts[i] for i in rows], pa.string())
    raw = dict(zip(["t_" + k for k in _TOP] + ["p_" + k for k in _PROPS], top.flatten() + prop.flatten()))
    return _documents(_ids(raw), pa.array(times, pa.timestamp("ms")), original, raw), leftovers


# service_key_id's parts, by raw column (extract_parsed's names).
_KEY_COLUMNS = ["t_category", "t_resourceId", "t_time", "t_operationName", "t_correlationId", "t_resultSignature",
                "t_durationMs", "t_AssetIdentity", "p_requestTime", "p_responseTime", "p_objectId"]


def _ids(raw: dict[str, pa.Array]) -> pa.Array:
    """service_key_id of admitted records, its key text built in Arrow (Python only hashes it).

    The key's parts print as service_key_id prints them: the admitted durations are integral and within 9e12,
    and ticks are integers, so each number prints as its integer, and a missing value as "".
    """
    parts = []
    for name in _KEY_COLUMNS:
        values = raw[name]
        if pa.types.is_floating(values.type):
            values = pc.cast(values, pa.int64())
        if not pa.types.is_string(values.type):
            values = pc.cast(values, pa.string())
        parts.append(pc.fill_null(values, ""))
    md5 = hashlib.md5
    keys = pc.binary_join_element_wise(*parts, "\x1f").cast(pa.binary()).to_pylist()
    digests = pa.array([md5(key).hexdigest() for key in keys], pa.string())
    groups = ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))
    return pc.binary_join_element_wise(*[pc.utf8_slice_codeunits(digests, a, b) for a, b in groups], "-")


def _nullif_empty(values: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, values.type), values)


def _documents(ids: pa.Array, times: pa.Array, original: pa.Array, raw: dict[str, pa.Array]) -> pa.Table:
    """The logs columns of admitted records (what records.py makes of them), from their raw columns.

    FAST_CONSTANTS and event.ingested are the writer's (Transaction.insert_fast_many).
    """
    out = {"id": ids, "@timestamp": times}
    for key, (target, typ) in {**_TOP, **_PROPS}.items():
        if target:
            values = raw[("t_" if key in _TOP else "p_") + key]
            out[target] = _nullif_empty(values) if typ == pa.string() else values
    # extract_parsed admitted only ids matching _RID_RE: their parts are plain '/'-separated positions.
    rid = pc.ascii_lower(raw["t_resourceId"])
    parts = pc.split_pattern(rid, "/")
    subscription = pc.list_element(parts, 2)
    out.update({
        "azure.resource.id": rid,
        "azure.subscription_id": subscription,
        "cloud.account.id": subscription,
        "azure.resource.group": pc.list_element(parts, 4),
        "azure.resource.provider": pc.binary_join_element_wise(pc.list_element(parts, 6), pc.list_element(parts, 7), "/"),
        "azure.resource.name": pc.list_element(parts, 8),
        "event.original": original,
        "aoai.operation": out["azure.open_ai.operation_name"],
        "aoai.deployment": out[_P + "model_deployment_name"],
        "aoai.model": out[_P + "model_name"],
        "aoai.model_version": out[_P + "model_version"],
    })
    out.update(_duration(raw["t_durationMs"], raw["p_requestTime"], raw["p_responseTime"]))
    # records._int: a result signature that is an integer in text is the status code.
    signature = raw["t_resultSignature"]
    numeric = pc.fill_null(pc.match_substring_regex(signature, f"^{INT_TEXT}$"), False)
    digits = pc.utf8_trim(pc.if_else(numeric, signature, pa.scalar(None, pa.string())), characters=INT_BLANKS)
    status = pc.cast(digits, pa.int64())
    out["aoai.status_code"] = status
    out["event.outcome"] = pc.if_else(pc.less(status, 400), "success", "failure")
    api = raw["p_apiName"]
    versioned = pc.fill_null(pc.match_substring(api, "version"), False)
    last_word = pc.struct_field(pc.extract_regex(api, r"(?P<v>[^ ]*)$"), [0])
    out["aoai.api_version"] = pc.if_else(versioned, last_word, pa.scalar(None, pa.string()))
    stream = raw["p_streamType"]  # ASCII lower: no other letter lowercases to one of "streaming" in Python
    out["aoai.stream"] = pc.if_else(pc.equal(stream, ""), pa.scalar(None, pa.bool_()),
                                    pc.equal(pc.ascii_lower(stream), "streaming"))
    return pa.table(out)


def _duration(given: pa.Array, request_ticks: pa.Array, response_ticks: pa.Array) -> dict[str, pa.Array]:
    """records._duration over columns: durationMs, recomputed from the ticks when missing or negative (#9987)."""
    broken = pc.fill_null(pc.less(given, 0.0), True)
    recomputed = pc.and_(broken, pc.fill_null(pc.and_(
        pc.and_(pc.not_equal(request_ticks, 0), pc.not_equal(response_ticks, 0)),
        pc.greater_equal(response_ticks, request_ticks)), False))
    # Ticks are 100 ns. Where recomputed, the admitted bounds make the difference and its double exact, so one
    # division rounds as Python's int / int does.
    from_ticks = pc.divide(pc.cast(pc.subtract(response_ticks, request_ticks), pa.float64()), 10_000.0)
    ms = pc.if_else(recomputed, from_ticks, given)
    ns = pc.round(pc.multiply(ms, 1_000_000.0), round_mode="half_to_even")  # Python's round
    repairs = pa.array([None, ["missing_duration"], ["negative_duration"]], pa.list_(pa.string()))
    which = pc.if_else(recomputed, pc.if_else(pc.is_null(given), 1, 2), 0)
    return {
        "event.duration": pc.cast(ns, pa.int64()),
        "aoai.duration_ms": ms,
        "aoai.repairs": pc.take(repairs, which),
    }


def _loads_or_none(line: str):
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


@lru_cache(maxsize=8192)
def _valid_rid(rid: str) -> bool:
    # ASCII only: Python's lower() turns a few letters elsewhere into two ("İ"); records.py takes those.
    return rid.isascii() and _STANDARD_RID(rid.lower()) is not None
