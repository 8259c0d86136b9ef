"""Azure resource-log record → flat ECS document (dotted keys), as Elastic's azure_openai pipeline does.

Pure functions, no I/O. `normalize_record` returns (table, document) or raises RecordError with the
reason; the pipeline dead-letters on that. Differences from Elastic's pipeline are deliberate and listed
in docs/fields.md ("Where aoai-monitor differs from Elastic").
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from operator import itemgetter
from urllib.parse import parse_qs, urlsplit

from .common import (
    INT_TEXT,
    document_id,
    flatten_fresh,
    flatten_into,
    parse_resource_id,
    parse_time_ms,
    snake_case,
)
from .decode import parse_embedded_json
from .fastpath import service_key_id
from .metrics import is_azure_metrics_record, normalize_azure_metrics_record
from ..schema import CONTENT_FILTER_CATEGORIES

LOGS_DATASET = "azure_openai.logs"
PLATFORM_DATASET = "azure.platformlogs"
SERVICE_CATEGORIES = {"audit", "requestresponse", "azureopenairequestusage", "trace"}
_P = "azure.open_ai.properties."
_RESP = _P + "backend_response_body."
_REQ = _P + "backend_request_body."
_TIME_KEYS = ("time", "timeStamp", "timestamp", "TimeGenerated", "EventTimeString", "EnqueueTime")


_PLACEHOLDER_TEXT = re.compile(r"\[\s*[\d.]+\s*[KMGT]?i?B blob data\s*\]$")


class RecordError(ValueError):
    """A record that cannot become a document; the message is the dead-letter reason."""


def normalize_record(record: dict, raw: str, source: str = "", repairs: list[str] | None = None) -> tuple[str, dict]:
    if not isinstance(record, dict):
        raise RecordError("record is not a JSON object")
    repairs = list(repairs or ())
    if is_azure_metrics_record(record):
        return "metrics", normalize_azure_metrics_record(record, source)
    ts = _record_time(record)
    if ts is None:
        raise RecordError("record has no valid time (time, TimeGenerated, EnqueueTime …)")
    if "category" in record:
        category = record["category"]
    else:
        category = _first(record, "Category", "type")
    category = category if isinstance(category, str) else ""
    kind = category.lower()

    doc: dict = {"@timestamp": ts, "cloud.provider": "azure", "data_stream.type": "logs"}
    rid = record["resourceId"] if "resourceId" in record else _first(record, "ResourceId", "_ResourceId")
    if isinstance(rid, str) and rid:
        doc.update(parse_resource_id(rid))

    props = record.get("properties", record.get("Properties"))
    if isinstance(props, str):
        parsed, fixes = parse_embedded_json(props)
        if isinstance(parsed, dict):
            props = parsed
            repairs += [f"properties_{f}" for f in fixes]
        elif props.strip().startswith(("{", "[")) and not _PLACEHOLDER_TEXT.match(props):
            doc["error.message"] = "properties is a string that is not valid JSON, even after repairs; it is kept as text"
    if kind in SERVICE_CATEGORIES:
        _service(record, props, doc, kind)
    elif kind == "gatewaylogs":
        _gateway(record, props, doc)
    elif kind == "gatewayllmlogs":
        _gateway_llm(record, props, doc)
    else:
        _platform(record, props, doc, category)

    repairs += doc.get("aoai.repairs", [])
    if repairs:
        doc["aoai.repairs"] = sorted(set(repairs))
    doc["event.original"] = raw
    if source:
        doc["aoai.source"] = source
    if category in ("RequestResponse", "Audit"):
        doc["id"] = service_key_id(record, props)
    else:
        doc["id"] = document_id(_with_parsed_props(record, props))
    return "logs", doc


def _with_parsed_props(record: dict, props) -> dict:
    if "properties" in record and isinstance(record["properties"], str) and isinstance(props, dict):
        record = dict(record)
        record["properties"] = props
    return record


def _first(record: dict, *keys):
    for k in keys:
        if k in record:
            return record[k]
    return None


def _record_time(record: dict) -> int | None:
    value = record.get("time")
    if value is not None:
        ms = parse_time_ms(value)
        if ms is not None:
            return ms
    for key in _TIME_KEYS[1:]:
        value = record.get(key)
        if value is not None:
            ms = parse_time_ms(value)
            if ms is not None:
                return ms
    return None


# --- Audit, RequestResponse, AzureOpenAIRequestUsage, Trace ------------------------------------------

_SKIP_TOP = {"properties", "Properties", "resourceId", "time", "durationMs", "level", "Level"}


def _service(record: dict, props, doc: dict, kind: str) -> None:
    doc["data_stream.dataset"] = LOGS_DATASET
    _top_level(record, doc)
    if isinstance(props, dict):
        flatten_into(doc, "azure.open_ai.properties", props, snake=True)
    elif props not in (None, ""):
        doc["azure.open_ai.properties.value"] = props
    _duration(record, doc)
    status = _int(doc.get("azure.open_ai.result_signature"))
    if status is not None:
        doc["aoai.status_code"] = status
        doc["event.outcome"] = "success" if status < 400 else "failure"
    op = doc.get("azure.open_ai.operation_name")
    if op:
        doc["aoai.operation"] = op
    _copy(doc, _P + "model_deployment_name", "aoai.deployment")
    _copy(doc, _P + "model_name", "aoai.model")
    _copy(doc, _P + "model_version", "aoai.model_version")
    api = doc.get(_P + "api_name")
    if isinstance(api, str) and "version" in api:
        doc["aoai.api_version"] = api.rsplit(" ", 1)[-1]
    stream = doc.get(_P + "stream_type")
    if isinstance(stream, str):
        doc["aoai.stream"] = stream.lower() == "streaming"
    if kind == "azureopenairequestusage" and isinstance(props, dict):
        _usage_tokens(props, doc)


def _top_level(record: dict, doc: dict) -> None:
    for key, value in record.items():
        if key in _SKIP_TOP:
            continue
        flatten_into(doc, "azure.open_ai." + snake_case(key), value, snake=True)
    level = _first(record, "level", "Level")
    if level not in (None, ""):
        doc["log.level"] = str(level)


_REQUEST_TIME = _P + "request_time"
_RESPONSE_TIME = _P + "response_time"


def _duration(record: dict, doc: dict) -> None:
    """durationMs → event.duration (ns). Negative or missing values are recomputed from the ticks (#9987)."""
    ms = record.get("durationMs")
    ms = float(ms) if type(ms) is int or type(ms) is float else _number(ms)
    if (ms is None or ms < 0) and (start := _int(doc.get(_REQUEST_TIME))) and (end := _int(doc.get(_RESPONSE_TIME))) \
            and end >= start:
        ms = (end - start) / 10_000  # ticks are 100 ns
        doc["aoai.repairs"] = doc.get("aoai.repairs", []) + ["negative_duration" if record.get("durationMs") is not None else "missing_duration"]
    if ms is not None:
        doc["event.duration"] = int(round(ms * 1_000_000))
        doc["aoai.duration_ms"] = float(ms)


def _usage_tokens(props: dict, doc: dict) -> None:
    """AzureOpenAIRequestUsage has no public schema: match token and deployment keys case-insensitively."""
    lower = {snake_case(k).replace("_", ""): v for k, v in props.items()}
    for target, names in (("aoai.tokens.input", ("prompttokens", "inputtokens")),
                          ("aoai.tokens.output", ("completiontokens", "outputtokens", "generatedtokens")),
                          ("aoai.tokens.total", ("totaltokens",)),
                          ("aoai.tokens.cached", ("cachedtokens", "promptcachedtokens", "cachedprompttokens"))):
        for n in names:
            v = _int(lower.get(n))
            if v is not None:
                doc[target] = v
                break
    for target, names in (("aoai.deployment", ("modeldeploymentname", "deploymentname", "deployment")),
                          ("aoai.model", ("modelname", "model"))):
        for n in names:
            if isinstance(lower.get(n), str) and lower[n]:
                doc[target] = lower[n]
                break


# --- API Management GatewayLogs --------------------------------------------------------------------

_GATEWAY_SKIP = _SKIP_TOP | {"callerIpAddress", "resultType"}
_PROP_RENAMES = {"requestSize": "request_length", "responseSize": "response_length"}
_PROP_DROP = {"requestBody", "responseBody", "method", "responseCode", "url", "backendRequestBody", "backendResponseBody"}


_KEY_NAMES_MAX = 4096
_GATEWAY_TOP_NAMES: dict = {}  # record key → document field (only keys snake_case accepted; bounded)
_GATEWAY_PROP_NAMES: dict = {}  # properties key → document field
_PLANS_MAX = 256
_GATEWAY_TOP_PLANS: dict = {}  # tuple of a record's keys → _copy_plan (or None); records of one shape share it
_GATEWAY_PROP_PLANS: dict = {}  # the same for properties
_SCALAR_TYPES = frozenset({str, int, float, bool})


def _gateway_top_name(key) -> str:
    name = "azure.open_ai." + snake_case(key)
    if len(_GATEWAY_TOP_NAMES) < _KEY_NAMES_MAX:
        _GATEWAY_TOP_NAMES[key] = name
    return name


def _gateway_prop_name(key) -> str:
    name = _P + (_PROP_RENAMES.get(key) or snake_case(key))
    if len(_GATEWAY_PROP_NAMES) < _KEY_NAMES_MAX:
        _GATEWAY_PROP_NAMES[key] = name
    return name


def _copy_plan(keys: tuple, skip, names: dict, name_of, plans: dict):
    """For a dict with these keys (in this order): (getter of the kept values, their field names), or None
    when fewer than two keys are kept. Computing the names raises as the loop in _copy_fields would."""
    kept = [k for k in keys if k not in skip]
    fields = tuple(names.get(k) or name_of(k) for k in kept)
    plan = (itemgetter(*kept), fields) if len(kept) >= 2 else None
    if len(plans) >= _PLANS_MAX:
        plans.clear()
    plans[keys] = plan
    return plan


def _copy_fields(src: dict, doc: dict, skip, names: dict, name_of, plans: dict) -> None:
    """flatten_into(doc, field, value, snake=True) for each key of src not in skip, in order.

    Plain non-empty scalars are copied as they are; when every kept value is one (the usual record), one
    C-level update does it through a plan cached per key order. Otherwise the loop, with the scalars inline
    (a plain str is empty exactly when it equals "") and flatten_into for anything else.
    """
    if type(src) is dict:
        keys = tuple(src)
        plan = plans.get(keys, False)
        if plan is False:
            plan = _copy_plan(keys, skip, names, name_of, plans)
        if plan is not None:
            values = plan[0](src)
            if _SCALAR_TYPES.issuperset(map(type, values)) and "" not in values:
                doc.update(zip(plan[1], values))
                return
    for key, value in src.items():
        if key in skip:
            continue
        name = names.get(key) or name_of(key)
        t = type(value)
        if t is str:
            if value:
                doc[name] = value
        elif t is int or t is bool or t is float:
            doc[name] = value
        elif value is not None:
            flatten_into(doc, name, value, True)


def _gateway(record: dict, props, doc: dict) -> None:
    doc["data_stream.dataset"] = LOGS_DATASET
    _copy_fields(record, doc, _GATEWAY_SKIP, _GATEWAY_TOP_NAMES, _gateway_top_name, _GATEWAY_TOP_PLANS)
    level = record["Level"] if "Level" in record else record["level"] if "level" in record else None
    if level not in (None, ""):
        doc["log.level"] = str(level)
    ip = record.get("callerIpAddress")
    if isinstance(ip, str) and ip:
        if (type(ip) is str and _IPV4(ip)) or _valid_ip(ip):
            doc["source.ip"] = ip
        else:
            doc["source.address"] = ip
    result = record.get("resultType")
    if isinstance(result, str):
        result = result.lower()
        if result == "succeeded":
            doc["event.outcome"] = "success"
        elif result == "failed":
            doc["event.outcome"] = "failure"
    _duration(record, doc)
    doc["aoai.operation"] = "Microsoft.ApiManagement/GatewayLogs"
    if not isinstance(props, dict):
        return
    errors = []
    _copy_fields(props, doc, _PROP_DROP, _GATEWAY_PROP_NAMES, _gateway_prop_name, _GATEWAY_PROP_PLANS)
    method = props.get("method")
    if isinstance(method, str) and method:
        doc["http.request.method"] = method
    code = props.get("responseCode")
    if type(code) is not int:
        code = _int(code)
    if code is not None:
        doc["http.response.status_code"] = code
        doc["aoai.status_code"] = code
    url = props.get("url")
    if isinstance(url, str) and url:
        _url_parts(url, doc, errors)
    request = _body(props.get("backendRequestBody"), _REQ, doc, errors, "backend request body")
    response = _body(props.get("backendResponseBody"), _RESP, doc, errors, "backend response body")
    _unify_gateway(doc, props, request, response)
    if errors:
        doc["error.message"] = "; ".join(errors)


def _body(value, prefix: str, doc: dict, errors: list[str], what: str):
    """APIM bodies are JSON strings; keys inside are the API's own and are not snake-cased."""
    if value in (None, ""):
        return None
    parsed = value
    if isinstance(value, str):
        parsed, _ = parse_embedded_json(value)
        if not isinstance(parsed, dict):
            doc[prefix + "text"] = value
            errors.append(f"{what} is not valid JSON (kept as text)")
            return None
    if not isinstance(parsed, dict):
        return None
    # No separate empty-value pass: flatten_into drops empty values (and cleans list items) as it goes.
    usage = parsed.get("usage")
    if isinstance(usage, dict):
        usage = dict(usage)
        if "prompt_tokens" in usage:
            usage["input_tokens"] = usage.pop("prompt_tokens")
        if "completion_tokens" in usage:
            usage["output_tokens"] = usage.pop("completion_tokens")
        parsed["usage"] = usage
    if prefix == _RESP:
        _content_filter_summaries(parsed)
    if parsed is not value and type(parsed) is dict:  # parsed here from the text: the document may keep its lists
        flatten_fresh(doc, prefix[:-1], parsed)
    else:
        flatten_into(doc, prefix[:-1], parsed, snake=False)
    return parsed


def _content_filter_summaries(body: dict) -> None:
    """Elastic's input/output content_filtered_categories lists (order: self_harm, sexual, hate, violence)."""
    error = body.get("error")
    inner = (error or {}).get("innererror") if isinstance(error, dict) else None
    if isinstance(inner, dict) and isinstance(inner.get("content_filter_result"), dict):
        cats = _filtered(inner["content_filter_result"])
        if cats:
            inner["content_filtered_categories"] = cats
    choices = body.get("choices")
    if isinstance(choices, list):
        out = []
        for choice in choices:
            if isinstance(choice, dict):
                results = choice.get("content_filter_results")
                if isinstance(results, dict):
                    for cat in CONTENT_FILTER_CATEGORIES:  # _filtered, inline
                        r = results.get(cat)
                        if isinstance(r, dict) and r.get("filtered") is True:
                            out.append({"category_name": cat, "severity": r.get("severity")})
        if out:
            body["content_filtered_categories"] = out


def _filtered(results: dict) -> list[dict]:
    out = []
    for cat in CONTENT_FILTER_CATEGORIES:
        r = results.get(cat)
        if isinstance(r, dict) and r.get("filtered") is True:
            out.append({"category_name": cat, "severity": r.get("severity")})
    return out


def _unify_gateway(doc: dict, props: dict, request, response) -> None:
    backend_url = props.get("backendUrl")
    deployment = None
    if isinstance(backend_url, str):
        deployment, api_version = _backend_url_info(backend_url)
        if api_version is not None:
            doc["aoai.api_version"] = api_version
    if isinstance(request, dict):
        if not deployment and isinstance(request.get("model"), str):
            deployment = request["model"]
    else:
        request = None
    if deployment:
        doc["aoai.deployment"] = deployment
    operation = props.get("operationId")
    if isinstance(operation, str):
        doc["aoai.operation"] = operation
    if request is not None and isinstance(request.get("stream"), bool):
        doc["aoai.stream"] = request["stream"]
    if isinstance(response, dict):
        model = response.get("model")
        if isinstance(model, str):
            doc["aoai.model"] = model
        usage = response.get("usage")
        if isinstance(usage, dict):
            v = usage.get("input_tokens")
            if type(v) is int or (v := _int(v)) is not None:
                doc["aoai.tokens.input"] = v
            v = usage.get("output_tokens")
            if type(v) is int or (v := _int(v)) is not None:
                doc["aoai.tokens.output"] = v
            v = usage.get("total_tokens")
            if type(v) is int or (v := _int(v)) is not None:
                doc["aoai.tokens.total"] = v
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict) and _int(details.get("cached_tokens")) is not None:
                doc["aoai.tokens.cached"] = _int(details.get("cached_tokens"))
        _unify_content_filter(doc, response)


_NOTHING: dict = {}  # read-only stand-in for a missing error / innererror object


def _unify_content_filter(doc: dict, response: dict) -> None:
    # Plain loops in the order the values are read (a non-iterable value fails the same way, at the same step).
    error = response.get("error")
    if not isinstance(error, dict):
        error = _NOTHING
    inner = error.get("innererror")
    if not isinstance(inner, dict):
        inner = _NOTHING
    inputs = []
    for c in inner.get("content_filtered_categories", ()):
        if isinstance(c, dict):
            inputs.append(f"{c['category_name']}:{c.get('severity')}")
    outputs = []
    for c in response.get("content_filtered_categories", ()):
        if isinstance(c, dict):
            outputs.append(f"{c['category_name']}:{c.get('severity')}")
    filtered = False
    for c in response.get("choices", ()):
        if isinstance(c, dict) and c.get("finish_reason") == "content_filter":
            filtered = True
    if inputs:
        doc["aoai.content_filter.input"] = inputs
    if outputs:
        doc["aoai.content_filter.output"] = outputs
    doc["aoai.content_filter.filtered"] = bool(error.get("code") == "content_filter" or filtered)


@lru_cache(maxsize=4096)
def _backend_url_info(url: str) -> tuple[str | None, str | None]:
    """(deployment, api-version) of a backend URL; cached, as a gateway calls few distinct backend URLs.
    A URL urlsplit rejects raises here (uncached), as it always did."""
    deployment = _deployment_from_url(url)
    query = parse_qs(urlsplit(url).query)
    return deployment, (query["api-version"][0] if query.get("api-version") else None)


@lru_cache(maxsize=1024)
def _deployment_from_url(url: str) -> str | None:
    path = urlsplit(url).path
    marker = "/deployments/"
    i = path.find(marker)
    if i < 0:
        return None
    return path[i + len(marker):].split("/", 1)[0] or None


def _url_parts(url: str, doc: dict, errors: list[str]) -> None:
    doc["url.original"] = url
    fields = _url_fields(url)
    if type(fields) is str:
        errors.append(fields)
    else:
        doc.update(fields)


@lru_cache(maxsize=4096)
def _url_fields(url: str) -> tuple[tuple[str, object], ...] | str:
    """The url.* fields of a URL, or the error message when it cannot be parsed; cached (few distinct URLs)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"url could not be parsed: {exc}"
    out = []
    if parts.scheme:
        out.append(("url.scheme", parts.scheme))
    if parts.hostname:
        out.append(("url.domain", parts.hostname))
    if port:
        out.append(("url.port", port))
    if parts.path:
        out.append(("url.path", parts.path))
    if parts.query:
        out.append(("url.query", parts.query))
    return tuple(out)


# --- API Management GatewayLlmLogs (dropped by Elastic, elastic/integrations #15826) ---------------

def _gateway_llm(record: dict, props, doc: dict) -> None:
    doc["data_stream.dataset"] = LOGS_DATASET
    _top_level(record, doc)
    _duration(record, doc)
    if not isinstance(props, dict):
        return
    props = dict(props)
    for key in list(props):
        if snake_case(key) in ("request_messages", "response_messages") and isinstance(props[key], str):
            parsed, _ = parse_embedded_json(props[key])
            if parsed is not None:
                props[key] = parsed
    flatten_into(doc, "azure.open_ai.properties", props, snake=True)
    if "azure.open_ai.correlation_id" not in doc:
        _copy(doc, _P + "correlation_id", "azure.open_ai.correlation_id")
    _copy(doc, _P + "deployment_name", "aoai.deployment")
    _copy(doc, _P + "model_name", "aoai.model")
    _copy(doc, _P + "api_version", "aoai.api_version")
    _copy(doc, _P + "operation_name", "aoai.operation")
    if "aoai.operation" not in doc:
        _copy(doc, "azure.open_ai.operation_name", "aoai.operation")
    for src, dst in (("prompt_tokens", "aoai.tokens.input"), ("completion_tokens", "aoai.tokens.output"),
                     ("total_tokens", "aoai.tokens.total"), ("prompt_cached_tokens", "aoai.tokens.cached")):
        v = _int(doc.get(_P + src))
        if v is not None:
            doc[dst] = v
    stream = doc.get(_P + "is_stream_completion")
    if isinstance(stream, bool):
        doc["aoai.stream"] = stream


# --- Any other category: kept, flagged by category ------------------------------------------------

def _platform(record: dict, props, doc: dict, category: str) -> None:
    doc["data_stream.dataset"] = PLATFORM_DATASET
    doc["azure.platformlogs.category"] = category or "unknown"
    for key, value in record.items():
        if key in ("properties", "Properties", "resourceId", "category", "Category", "type", "time"):
            continue
        flatten_into(doc, "azure.platformlogs." + snake_case(key), value, snake=True)
    level = _first(record, "level", "Level")
    if level not in (None, ""):
        doc["log.level"] = str(level)
    if props not in (None, "", {}, []):
        doc["azure.platformlogs.properties"] = props
    ms = _number(record.get("durationMs"))
    if ms is not None:
        doc["event.duration"] = int(round(ms * 1_000_000))


# --- small coercions -------------------------------------------------------------------------------

def _copy(doc: dict, src: str, dst: str) -> None:
    v = doc.get(src)
    if v not in (None, ""):
        doc[dst] = v


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


_INT_TEXT = re.compile(INT_TEXT).fullmatch


def _int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and (match := _INT_TEXT(value)):
        return int(match.group(1))
    return None


# Exactly the dotted quads ipaddress accepts (ASCII digits, 0–255, no leading zeros): a match is valid without
# the (cached, but client addresses are many) ipaddress parse; anything else is left to _valid_ip.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}").fullmatch


@lru_cache(maxsize=4096)
def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False
