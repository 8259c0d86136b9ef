"""The same normalization rules as records.py for the bulk of the traffic, split between two engines.

RequestResponse and Audit records are nearly every record of an Azure OpenAI hub or archive. Here
Python only parses each line (orjson) and copies the raw values into columns; DuckDB then applies the
rules to whole columns at once (casing, resource-id parsing, times, durations, ids). Only records whose
shape these rules fully cover take this path (known keys, expected JSON types, a standard time and
resource id); anything else — other categories, odd types, records needing a repair — goes through
records.py. tests/test_fastpath.py asserts both paths produce identical documents: one set of
semantics, two engines.
"""

from __future__ import annotations

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
_NUMERIC = {"durationMs", "requestTime", "requestLength", "responseTime", "responseLength"}
_NUM_TYPES = (int, float)
# Standard time: 3–7 fractional digits and Z (what Azure writes); its millisecond prefix is 23 characters.
_STANDARD_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3,7}Z\Z").match
_RID_RE = (r"^/subscriptions/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/resourcegroups/([^/]+)"
           r"/providers/([^/]+/[^/]+)/([^/]+)$")
_STANDARD_RID = re.compile(_RID_RE).match


def key_part(value) -> str:
    """Text of one id component; records.service_key_id and this path share it."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        # Integral numbers print without a fraction whatever their JSON form (102 and 102.0), as DuckDB's twin does.
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return orjson.dumps(value).decode()


def extract(lines: list[str]) -> tuple[pa.Table | None, list[int]]:
    """Parse lines and copy fast-path records into columns; return (columns, indexes left for records.py)."""
    top_names = list(_TOP)
    prop_names = list(_PROPS)
    top_cols = {k: [] for k in top_names}
    prop_cols = {k: [] for k in prop_names}
    duration_text, rows, leftovers = [], [], []
    loads = orjson.loads
    for i, line in enumerate(lines):
        try:
            r = loads(line)
        except orjson.JSONDecodeError:
            leftovers.append(i)
            continue
        if r.__class__ is not dict or r.get("category") not in FAST_CATEGORIES or not r.keys() <= _TOP_KEYS:
            leftovers.append(i)
            continue
        p = r.get("properties")
        if p.__class__ is str:
            try:
                p = loads(p)
            except orjson.JSONDecodeError:
                leftovers.append(i)
                continue
        if p.__class__ is not dict or not p.keys() <= _PROP_KEYS or not _numbers_ok(r, p) or not _standard(r):
            leftovers.append(i)
            continue
        rows.append(i)
        get = r.get
        for k in top_names:
            top_cols[k].append(get(k))
        pget = p.get
        for k in prop_names:
            prop_cols[k].append(pget(k))
        duration_text.append(key_part(get("durationMs")))
    if not rows:
        return None, leftovers
    arrays, names = [pa.array(rows, pa.int64()), pa.array([lines[i] for i in rows], pa.string())], ["n", "line"]
    try:
        for k in top_names:
            arrays.append(pa.array(top_cols[k], _TOP[k][1]))
            names.append("t_" + k)
        for k in prop_names:
            arrays.append(pa.array(prop_cols[k], _PROPS[k][1]))
            names.append("p_" + k)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # A value of an unexpected JSON type somewhere in the chunk: let records.py handle the whole chunk
        # (rare, and it keeps the per-record loop above free of type checks).
        return None, list(range(len(lines)))
    arrays.append(pa.array(duration_text, pa.string()))
    names.append("duration_text")
    return pa.Table.from_arrays(arrays, names=names), leftovers


def _standard(r: dict) -> bool:
    """A time and resource id the SQL rules read without help (others take records.py's tolerant path)."""
    t, rid = r.get("time"), r.get("resourceId")
    return (t.__class__ is str and _STANDARD_TIME(t) is not None and rid.__class__ is str
            and _valid_rid(rid))


@lru_cache(maxsize=8192)
def _valid_rid(rid: str) -> bool:
    return _STANDARD_RID(rid.lower()) is not None


def time_range_ms(columns: pa.Table) -> tuple[int, int]:
    """Epoch-ms bounds of an extract() table (ISO strings of one format order like the times they name)."""
    bounds = pc.min_max(columns.column("t_time"))
    return parse_time_ms(bounds["min"].as_py()), parse_time_ms(bounds["max"].as_py())


def _numbers_ok(r: dict, p: dict) -> bool:
    for source in (r, p):
        for k in _NUMERIC:
            v = source.get(k)
            if v is not None and (v.__class__ not in _NUM_TYPES):
                return False
    return True


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _select_sql() -> str:
    """SELECT over `_fast_in` (the extract() columns) producing logs rows BY NAME, plus `n`.

    Rows whose time or resource id are not standard are left out (they go to records.py).
    Parameters: $source, $ingested_ms.
    """
    cols: dict[str, str] = {}
    for key, (target, typ) in {**_TOP, **_PROPS}.items():
        if target:
            col = ("t_" if key in _TOP else "p_") + key
            cols[target] = f"nullif({col}, '')" if typ == pa.string() else col
    rid = _lit(_RID_RE)
    cols.update({
        "@timestamp": "CAST(substr(t_time, 1, 23) AS TIMESTAMP)",
        "azure.resource.id": "rid",
        "azure.subscription_id": f"regexp_extract(rid, {rid}, 1)",
        "cloud.account.id": f"regexp_extract(rid, {rid}, 1)",
        "azure.resource.group": f"regexp_extract(rid, {rid}, 2)",
        "azure.resource.provider": f"regexp_extract(rid, {rid}, 3)",
        "azure.resource.name": f"regexp_extract(rid, {rid}, 4)",
        "cloud.provider": "'azure'",
        "data_stream.type": "'logs'",
        "data_stream.dataset": "'azure_openai.logs'",
        "event.original": "line",
        "event.ingested": "epoch_ms($ingested_ms::BIGINT)",
        "aoai.source": "nullif($source, '')",
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
    key = " || chr(31) || ".join(
        [f"coalesce(t_{k}, '')" for k in ("category", "resourceId", "time", "operationName", "correlationId",
                                          "resultSignature")]
        + ["duration_text", "coalesce(t_AssetIdentity, '')",
           "coalesce(CAST(p_requestTime AS VARCHAR), '')", "coalesce(CAST(p_responseTime AS VARCHAR), '')",
           "coalesce(p_objectId, '')"])
    h = "key_md5"
    uuid = (f"CAST(substr({h},1,8)||'-'||substr({h},9,4)||'-'||substr({h},13,4)||'-'||"
            f"substr({h},17,4)||'-'||substr({h},21,12) AS UUID)")
    return f"""
WITH base AS (
  SELECT *, lower(t_resourceId) AS rid,
    CASE WHEN regexp_matches(t_resultSignature, '^\\s*-?\\d{{1,18}}\\s*$') THEN CAST(trim(t_resultSignature) AS BIGINT) END AS status,
    ((t_durationMs IS NULL OR t_durationMs < 0) AND coalesce(p_requestTime, 0) <> 0
      AND coalesce(p_responseTime, 0) <> 0 AND p_responseTime >= p_requestTime) AS recomputed
  FROM _fast_in
), computed AS (
  SELECT *, CASE WHEN recomputed THEN (p_responseTime - p_requestTime) / 10000.0 ELSE t_durationMs END AS ms,
    md5({key}) AS key_md5
  FROM base
)
SELECT n, {uuid} AS id,
  {select}
FROM computed
"""


FAST_SELECT = _select_sql()
