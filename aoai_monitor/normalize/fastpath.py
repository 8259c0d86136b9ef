"""The same normalization rules as records.py for the bulk of the traffic, split between two engines.

RequestResponse and Audit records are nearly every record of an Azure OpenAI hub or archive. Here
Python only parses each line (orjson), copies the raw values into columns and computes the id (the same
function as records.py: off the writer's thread, in the worker processes of a bulk ingest); DuckDB then
applies the rules to whole columns at once (casing, resource-id parsing, times, durations). Only records whose
shape these rules fully cover take this path (known keys, expected JSON types, a standard time and
resource id); anything else — other categories, odd types, records needing a repair — goes through
records.py. tests/test_fastpath.py asserts both paths produce identical documents: one set of
semantics, two engines.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ..schema import TABLES
from .common import parse_time_ms

FAST_CATEGORIES = frozenset({"RequestResponse", "Audit"})
_P = "azure.open_ai.properties."

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
    """Id of a RequestResponse/Audit record from the fields that identify it, whichever engine normalizes it.

    Written for speed (a bulk ingest computes one per record): strings and ints, nearly every part, are
    formatted inline; key_part takes the rest.
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


def extract(lines: list[str]) -> tuple[pa.Table | None, list[int]]:
    """Parse lines and copy fast-path records into columns; return (columns, indexes left for records.py)."""
    return extract_parsed(parse_lines(lines), lines)


def parse_lines(lines: list[str]) -> list:
    """Each line's JSON value, None where it does not parse (for extract_parsed, and decode_parsed_line)."""
    return [_loads_or_none(line) for line in lines]


def extract_parsed(records: list, texts: list[str] | None = None) -> tuple[pa.Table | None, list[int]]:
    """extract() for records already parsed (an Event Hub envelope's list); None stands for unparsable.

    `texts` are the records' JSON texts (event.original); without them the admitted records are serialized.
    Python only checks each record's shape and computes its id; Arrow converts the kept dicts to columns in C++.
    """
    tops, props, rows, leftovers = [], [], [], []
    loads, fast, top_keys, prop_keys = orjson.loads, FAST_CATEGORIES, _TOP_KEYS, _PROP_KEYS
    number, standard_time, valid_rid = _NUMBER, _STANDARD_TIME, _valid_rid
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
        # text in the id: records.py takes both.
        d, g = r.get("durationMs"), p.get
        if (d.__class__ not in number or g("requestTime").__class__ not in number
                or g("responseTime").__class__ not in number or g("requestLength").__class__ not in number
                or g("responseLength").__class__ not in number
                or (d.__class__ is float and not (d.is_integer() and abs(d) < 1e15))):
            leftovers.append(i)
            continue
        t, rid = r.get("time"), r.get("resourceId")
        if t.__class__ is not str or standard_time(t) is None or rid.__class__ is not str or not valid_rid(rid):
            leftovers.append(i)
            continue
        rows.append(i)
        tops.append(r)
        props.append(p)
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
    arrays = [pa.array([service_key_id(r, p) for r, p in zip(tops, props)], pa.string()), original]
    arrays += top.flatten() + prop.flatten()
    names = ["id", "line"] + ["t_" + k for k in _TOP] + ["p_" + k for k in _PROPS]
    return pa.Table.from_arrays(arrays, names=names), leftovers


def _loads_or_none(line: str):
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


@lru_cache(maxsize=8192)
def _valid_rid(rid: str) -> bool:
    return _STANDARD_RID(rid.lower()) is not None


def time_range_ms(columns: pa.Table) -> tuple[int, int]:
    """Epoch-ms bounds of an extract() table (ISO strings of one format order like the times they name)."""
    bounds = pc.min_max(columns.column("t_time"))
    return parse_time_ms(bounds["min"].as_py()), parse_time_ms(bounds["max"].as_py())


def _select_sql() -> str:
    """SELECT over `_fast_in` (the extract() columns) producing logs rows BY NAME.

    Parameters: $ingested_ms. `_fast_in` also carries `source` (the input's name for each row).
    """
    cols: dict[str, str] = {}
    for key, (target, typ) in {**_TOP, **_PROPS}.items():
        if target:
            col = ("t_" if key in _TOP else "p_") + key
            cols[target] = f"nullif({col}, '')" if typ == pa.string() else col
    cols.update({
        "@timestamp": "CAST(substr(t_time, 1, 23) AS TIMESTAMP)",
        "azure.resource.id": "rid",
        # extract() admitted only ids matching _RID_RE, so its parts are plain '/'-separated positions.
        "azure.subscription_id": "split_part(rid, '/', 3)",
        "cloud.account.id": "split_part(rid, '/', 3)",
        "azure.resource.group": "split_part(rid, '/', 5)",
        "azure.resource.provider": "split_part(rid, '/', 7) || '/' || split_part(rid, '/', 8)",
        "azure.resource.name": "split_part(rid, '/', 9)",
        "cloud.provider": "'azure'",
        "data_stream.type": "'logs'",
        "data_stream.dataset": "'azure_openai.logs'",
        "event.original": "line",
        "event.ingested": "epoch_ms($ingested_ms::BIGINT)",
        "aoai.source": "nullif(source, '')",
        "event.duration": "CAST(round(ms * 1000000) AS BIGINT)",
        "aoai.duration_ms": "ms",
        "aoai.repairs": "CASE WHEN recomputed THEN [CASE WHEN t_durationMs IS NULL THEN 'missing_duration' ELSE 'negative_duration' END] END",
        "aoai.status_code": "status",
        "event.outcome": "CASE WHEN status IS NULL THEN NULL WHEN status < 400 THEN 'success' ELSE 'failure' END",
        "aoai.operation": "nullif(t_operationName, '')",
        "aoai.deployment": "nullif(p_modelDeploymentName, '')",
        "aoai.model": "nullif(p_modelName, '')",
        "aoai.model_version": "nullif(p_modelVersion, '')",
        "aoai.api_version": "CASE WHEN contains(p_apiName, 'version') THEN regexp_extract(p_apiName, '([^ ]*)$', 1) END",
        "aoai.stream": "CASE WHEN nullif(p_streamType, '') IS NOT NULL THEN lower(p_streamType) = 'streaming' END",
    })
    columns = {f.name for f in TABLES["logs"]}
    unknown = [c for c in cols if c not in columns]
    if unknown:
        raise RuntimeError(f"fast path targets fields the schema lacks: {unknown}")
    select = ",\n  ".join(f'{expr} AS "{name}"' for name, expr in cols.items())
    return f"""
WITH base AS (
  SELECT *, lower(t_resourceId) AS rid,
    CASE WHEN regexp_matches(t_resultSignature, '^\\s*-?\\d{{1,18}}\\s*$') THEN CAST(trim(t_resultSignature) AS BIGINT) END AS status,
    ((t_durationMs IS NULL OR t_durationMs < 0) AND coalesce(p_requestTime, 0) <> 0
      AND coalesce(p_responseTime, 0) <> 0 AND p_responseTime >= p_requestTime) AS recomputed
  FROM _fast_in
), computed AS (
  SELECT *, CASE WHEN recomputed THEN (p_responseTime - p_requestTime) / 10000.0 ELSE t_durationMs END AS ms
  FROM base
)
SELECT CAST(id AS UUID) AS id,
  {select}
FROM computed
"""


FAST_SELECT = _select_sql()
