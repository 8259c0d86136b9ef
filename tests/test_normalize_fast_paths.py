"""The normalizer's fast paths (GatewayLogs above all) give exactly what the general rules give.

Oracles are the straightforward implementations the fast paths replace (kept here verbatim); results are
compared value for value and in key order, so documents stay byte-identical.
"""

from __future__ import annotations

import calendar
import hashlib
import ipaddress
import re
from urllib.parse import urlsplit

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aoai_monitor.normalize import common, records
from aoai_monitor.normalize.common import (
    drop_empty,
    flatten_fresh,
    flatten_into,
    parse_time_ms,
    snake_case,
)
from aoai_monitor.normalize.fastpath import key_part, service_key_id
from aoai_monitor.normalize.records import normalize_record

# --- oracles: the general rules, as they were before the fast paths ------------------------------------


def ref_flatten_into(out: dict, prefix: str, value, snake: bool) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            key = snake_case(k) if snake else k
            ref_flatten_into(out, f"{prefix}.{key}" if prefix else key, v, snake)
    elif value is None or value == "" or value == [] or value == {}:
        return
    elif isinstance(value, list):
        cleaned = [ref_drop_empty(v) for v in value]
        cleaned = [v for v in cleaned if v not in (None, "", [], {})]
        if cleaned:
            out[prefix] = cleaned
    else:
        out[prefix] = value


def ref_drop_empty(value):
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = ref_drop_empty(v)
            if v not in (None, "", [], {}):
                out[k] = v
        return out
    if isinstance(value, list):
        return [v for v in (ref_drop_empty(x) for x in value) if v not in (None, "", [], {})]
    return value


_REF_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)?$")


def ref_parse_time_ms(value):
    if not isinstance(value, str) or len(value) < 19:
        return None
    if not _REF_TIME_RE.match(value):
        return None
    p = value[:19]
    try:
        seconds = calendar.timegm((int(p[0:4]), int(p[5:7]), int(p[8:10]), int(p[11:13]), int(p[14:16]),
                                   int(p[17:19]), 0, 0, 0))
    except ValueError:
        return None
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


def ref_document_id(record: dict) -> str:
    if "EnqueueTime" in record:
        record = {k: v for k, v in record.items() if k != "EnqueueTime"}
    digest = hashlib.blake2b(orjson.dumps(record, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS),
                             digest_size=16).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


def outcome(fn, *args):
    """Result or exception (type and message) of a call, for comparing behaviour including failures."""
    try:
        return "ok", fn(*args)
    except Exception as exc:  # noqa: BLE001 - the comparison is the point
        return "raised", type(exc).__name__, str(exc)


def same(a, b) -> bool:
    """Equal values with equal key order at every level (what decides byte-identical documents)."""
    return repr(a) == repr(b)


# --- strategies -----------------------------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 63 - 1),
                         st.floats(allow_nan=False), st.sampled_from(["", "x", "0", "null", "[]", "{}", 'a""b']),
                         st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda children: st.one_of(
    st.lists(children, max_size=4),
    st.dictionaries(st.sampled_from(["a", "b", "camelCase", "", "x.y", "usage", "choices"]), children, max_size=4)),
    max_leaves=16)


class SubDict(dict):
    pass


class SubList(list):
    pass


odd_scalars = st.sampled_from([(), (None,), (1, ""), frozenset(), b"", 0j, float("nan")])
odd_values = st.recursive(st.one_of(json_scalars, odd_scalars), lambda children: st.one_of(
    st.lists(children, max_size=3), st.lists(children, max_size=3).map(SubList),
    st.dictionaries(st.one_of(st.sampled_from(["a", "bC", ""]), st.integers(0, 2), st.booleans()), children,
                    max_size=3),
    st.dictionaries(st.sampled_from(["a", "bC"]), children, max_size=3).map(SubDict)), max_leaves=10)


# --- flattening and empty-value removal -------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(value=st.one_of(json_values, odd_values), snake=st.booleans())
def test_flatten_into_matches_the_general_rule(value, snake):
    got, want = {}, {}
    assert same(outcome(flatten_into, got, "p", value, snake), outcome(ref_flatten_into, want, "p", value, snake))
    assert same(got, want)
    got, want = {}, {}
    assert same(outcome(flatten_into, got, "", value, snake), outcome(ref_flatten_into, want, "", value, snake))
    assert same(got, want)


@settings(max_examples=400, deadline=None)
@given(value=st.one_of(json_values, odd_values))
def test_drop_empty_matches_the_general_rule(value):
    assert same(outcome(drop_empty, value), outcome(ref_drop_empty, value))


@settings(max_examples=400, deadline=None)
@given(value=st.dictionaries(st.sampled_from(["a", "b", "usage", "choices", "x.y", ""]), json_values, max_size=6))
def test_flatten_fresh_matches_flatten_into(value):
    want = {}
    ref_flatten_into(want, "body", value, False)
    for _ in range(2):  # the second time through the cached names
        got = {}
        flatten_fresh(got, "body", value)
        assert same(got, want)


def test_flatten_fresh_keeps_clean_lists_and_copies_the_rest():
    clean, dirty = [{"a": 1, "b": ["x"]}], [{"a": None, "b": 1}, ""]
    out = {}
    flatten_fresh(out, "p", {"clean": clean, "dirty": dirty})
    assert out["p.clean"] is clean
    assert out["p.dirty"] == [{"b": 1}] and dirty == [{"a": None, "b": 1}, ""]


# --- times, ids, addresses, URLs --------------------------------------------------------------------------

digit = st.sampled_from("0123456789") | st.sampled_from("٣۵߂०৭")  # ASCII and other Unicode decimal digits
time_text = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, tz: f"{y}-{mo}-{d}{sep}{h}:{mi}:{s}{frac}{tz}",
    st.sampled_from(["2025", "1970", "0000", "9999", "20٢5"]), st.sampled_from(["01", "12", "13", "00", "1٢"]),
    st.sampled_from(["01", "31", "32", "00"]), st.sampled_from(["T", " ", "t"]),
    st.sampled_from(["00", "23", "24", "99"]),
    st.sampled_from(["00", "59", "60"]), st.sampled_from(["00", "59", "61", "٥9"]),
    st.one_of(st.just(""), st.text(digit, min_size=1, max_size=9).map(lambda s: "." + s), st.just("."),
              st.sampled_from([".12x", ".1²3", ".123\n"])),
    st.sampled_from(["", "Z", "+02:00", "-0530", "+05:30\n", "Z\n", "\n", "z", "+2:00", "Zx"]))


@settings(max_examples=1500, deadline=None)
@given(value=st.one_of(time_text, st.text(max_size=30), st.integers(), st.none()))
def test_parse_time_ms_matches_the_general_rule(value):
    want = outcome(ref_parse_time_ms, value)
    assert outcome(parse_time_ms, value) == want
    assert outcome(parse_time_ms, value) == want  # again, now that its prefix is cached


def test_parse_time_ms_fast_path_after_a_cached_prefix():
    assert parse_time_ms("2025-11-01T12:26:40.4013965Z") == ref_parse_time_ms("2025-11-01T12:26:40.4013965Z")
    for value in ["2025-11-01T12:26:40.9999999Z", "2025-11-01T12:26:40.123Z", "2025-11-01T12:26:40.12Z",
                  "2025-11-01T12:26:40.1٢3Z", "2025-11-01T12:26:40.12²Z", "2025-11-01T12:26:40.123\n",
                  "2025-11-01T12:26:40.123+01:00", "2025-11-01T12:26:40.123ZZ", "2025-11-01T12:26:40,123Z"]:
        assert outcome(parse_time_ms, value) == outcome(ref_parse_time_ms, value), value


@settings(max_examples=300, deadline=None)
@given(record=st.dictionaries(st.one_of(st.text(max_size=6), st.integers(0, 3)), json_values, max_size=5),
       enqueue=st.booleans())
def test_document_id_matches_the_general_rule(record, enqueue):
    if enqueue:
        record["EnqueueTime"] = "2025-01-01T00:00:00Z"
    assert outcome(common.document_id, record) == outcome(ref_document_id, record)


def ref_service_key_id(record: dict, props) -> str:
    parts = [key_part(record.get(k)) for k in ("category", "resourceId", "time", "operationName", "correlationId",
                                               "resultSignature", "durationMs", "AssetIdentity")]
    props = props if isinstance(props, dict) else {}
    parts += [key_part(props.get(k)) for k in ("requestTime", "responseTime", "objectId")]
    digest = hashlib.md5("\x1f".join(parts).encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


_KEY_FIELDS = ["category", "resourceId", "time", "operationName", "correlationId", "resultSignature", "durationMs",
               "AssetIdentity", "requestTime", "responseTime", "objectId"]


@settings(max_examples=1000, deadline=None)
@given(record=st.dictionaries(st.sampled_from(_KEY_FIELDS + ["other"]), st.one_of(json_values, odd_values), max_size=9),
       props=st.one_of(st.dictionaries(st.sampled_from(_KEY_FIELDS), st.one_of(json_values, odd_values), max_size=4),
                       json_values))
def test_service_key_id_matches_the_general_rule(record, props):
    assert outcome(service_key_id, record, props) == outcome(ref_service_key_id, record, props)


def test_service_key_id_is_the_id_stored_by_earlier_versions():
    """A change of the id rule would make a re-ingest duplicate every record already in a store."""
    record = {"category": "RequestResponse", "time": "2025-11-01T12:26:40.1234567Z", "durationMs": 102,
              "resourceId": "/SUBSCRIPTIONS/12CABCB4-86E8-404F-A3D2-1DC9982F45CA/RESOURCEGROUPS/RG/PROVIDERS/"
                            "MICROSOFT.COGNITIVESERVICES/ACCOUNTS/AOAI", "operationName": "ChatCompletions_Create",
              "correlationId": "9d3a6e98-fc11-48d0-82cf-4de065c1a1f8", "resultSignature": "200"}
    props = {"requestTime": 638975220001234567, "responseTime": 638975220011234567,
             "objectId": "b610ab05-ce06-4cc1-a6dd-174b9f80468a"}
    assert service_key_id(record, props) == "25b64f16-8f7e-a751-2b9b-155d37be4e18"  # computed by 0.x up to cd19a16


def ref_valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


octet = st.one_of(st.integers(0, 999).map(str), st.sampled_from(["00", "01", "007", "0", "", "*", "**", "1٢", " 1"]))


@settings(max_examples=1500, deadline=None)
@given(value=st.one_of(st.lists(octet, min_size=1, max_size=5).map(".".join), st.text(max_size=16)))
def test_ipv4_precheck_only_accepts_valid_addresses(value):
    assert (records._IPV4(value) is not None) <= ref_valid_ip(value)
    if value.count(".") == 3 and value.isascii():
        assert (records._IPV4(value) is not None) == ref_valid_ip(value)


def test_ipv4_precheck_every_octet():
    for i in range(1000):
        for text in (str(i), f"{i:02d}", f"{i:03d}"):
            value = f"10.{text}.0.1"
            assert (records._IPV4(value) is not None) == ref_valid_ip(value), value


def ref_url_parts(url: str, doc: dict, errors: list[str]) -> None:
    doc["url.original"] = url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        errors.append(f"url could not be parsed: {exc}")
        return
    if parts.scheme:
        doc["url.scheme"] = parts.scheme
    if parts.hostname:
        doc["url.domain"] = parts.hostname
    if port:
        doc["url.port"] = port
    if parts.path:
        doc["url.path"] = parts.path
    if parts.query:
        doc["url.query"] = parts.query


URLS = ["https://a.b:8443/p?q=1", "http://[::1]:99/x", "http://h:bad/x", "https://h:99999/x", "relative/path?x",
        "//host/p", "https://user:pw@Host.COM/p#f", "http://[::1/x", "https://h:0/x", "",
        "https://h/openai/deployments/d1/chat?api-version=a&api-version=b", "https://h/x?api-version=",
        "https://h/x?api%2Dversion=2&a=%20"]


@pytest.mark.parametrize("url", URLS)
def test_url_parts_cached_matches_the_general_rule(url):
    for _ in range(2):
        got, want, got_errors, want_errors = {}, {}, [], []
        records._url_parts(url, got, got_errors)
        ref_url_parts(url, want, want_errors)
        assert same(got, want) and got_errors == want_errors


# --- whole GatewayLogs records: fast paths on and off give the same document ---------------------------

body = st.one_of(
    json_values.map(lambda v: orjson.dumps(v).decode()),
    st.fixed_dictionaries({}, optional={
        "model": st.sampled_from(["gpt-4o", "", None]), "stream": st.sampled_from([True, False, None, "true"]),
        "usage": st.one_of(json_values, st.fixed_dictionaries({}, optional={
            "prompt_tokens": json_scalars, "completion_tokens": json_scalars, "total_tokens": json_scalars,
            "prompt_tokens_details": st.dictionaries(st.just("cached_tokens"), json_scalars)})),
        "choices": st.lists(st.one_of(json_values, st.fixed_dictionaries({}, optional={
            "finish_reason": st.sampled_from(["stop", "content_filter", None]),
            "message": json_values,
            "content_filter_results": st.dictionaries(
                st.sampled_from(["hate", "self_harm", "sexual", "violence", "jailbreak"]),
                st.one_of(json_values, st.fixed_dictionaries({"filtered": st.sampled_from([True, False])},
                                                             optional={"severity": json_scalars})))})), max_size=3),
        "error": st.one_of(json_values, st.fixed_dictionaries({}, optional={
            "code": st.sampled_from(["content_filter", "x", None]),
            "innererror": st.dictionaries(st.just("content_filter_result"), json_values)})),
        "extra": json_values}).map(lambda v: orjson.dumps(v).decode()),
    st.sampled_from(["", "{bad", "{'model': 'x'}", "[1]", "null"]))

APIM_RID = ("/SUBSCRIPTIONS/12CABCB4-86E8-404F-A3D2-1DC9982F45CA/RESOURCEGROUPS/RG"
            "/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/GW")
gateway_record = st.fixed_dictionaries(
    {"category": st.just("GatewayLogs"), "time": st.sampled_from(["2025-11-01T12:26:40.4013965Z",
                                                                 "2025-11-01T12:26:41.0000000Z", "bad"])},
    optional={
        "DeploymentVersion": st.sampled_from(["0.44", ""]), "Level": st.one_of(json_scalars),
        "callerIpAddress": st.sampled_from(["89.160.20.156", "1.2.3.***", "::1", "01.2.3.4", "", "x"]),
        "correlationId": json_scalars, "durationMs": json_scalars, "isRequestSuccess": json_scalars,
        "resourceId": st.sampled_from([APIM_RID, ""]),
        "resultType": st.sampled_from(["Succeeded", "Failed", "other"]), "extraTop": json_values,
        "properties": st.one_of(json_values, st.fixed_dictionaries({}, optional={
            "backendRequestBody": body, "backendResponseBody": body, "apiId": json_scalars,
            "backendUrl": st.sampled_from(URLS), "url": st.sampled_from(URLS), "method": json_scalars,
            "responseCode": json_scalars, "requestSize": json_scalars, "operationId": json_scalars,
            "cacheState": json_values}))})


def _general_paths(monkeypatch):
    """Switch the fast paths off: no copy plans, no list keeping, no IPv4 pre-check, no time prefix cache."""
    monkeypatch.setattr(records, "_GATEWAY_TOP_PLANS", _NoCache())
    monkeypatch.setattr(records, "_GATEWAY_PROP_PLANS", _NoCache())
    monkeypatch.setattr(records, "flatten_fresh",
                        lambda out, prefix, value: ref_flatten_into(out, prefix, value, False))
    monkeypatch.setattr(records, "_IPV4", lambda value: None)
    monkeypatch.setattr(common, "_PREFIX_MS", _NoCache())


class _NoCache(dict):
    def get(self, key, default=None):
        return default

    def __setitem__(self, key, value):
        pass


def _dump(result) -> str:
    return repr(result)  # values and key order (documents may hold what orjson cannot write, e.g. huge ints)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=gateway_record)
def test_gateway_fast_paths_give_the_general_document(record, monkeypatch_session):
    line = orjson.dumps(record).decode()
    fast = [_dump(outcome(normalize_record, orjson.loads(line), line, "src")) for _ in range(2)]
    with monkeypatch_session.context() as mp:
        _general_paths(mp)
        general = _dump(outcome(normalize_record, orjson.loads(line), line, "src"))
    assert fast[0] == fast[1] == general


@pytest.fixture(scope="module")
def monkeypatch_session():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()
