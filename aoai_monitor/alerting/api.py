"""JSON API of the Alerts and SLO pages, mounted by web/app.py (`routes(store)`).

Reads work on any store. Writes (UI rules, silences) need the writable store of `aoai-monitor run`; on
the read-only store of `aoai-monitor serve` they answer 409 saying so. Write requests must be JSON
(a cross-site form cannot send that without a CORS preflight, which this server never grants).
"""

from __future__ import annotations

import time

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from ..store import StoreError
from .rules import RuleError, parse_rule
from .service import ERROR, OUTBOX, PUBLISHED, SILENCE, UI_RULE
from .slo import parse_slos, status
from .state import CURRENT

HISTORY_LIMIT = 300


def overview(store, now_ms: int) -> dict:
    """Rules (config, SLO, UI), current non-ok states, recent history, silences and rule errors."""
    published = store.get_state(PUBLISHED) or {}
    ui = [{**raw, "origin": "ui"} for raw in store.state_items(UI_RULE).values() if raw]
    states = [{"rule": k[len(CURRENT):].split("|", 1)[0], "group": k.split("|", 1)[1], **v}
              for k, v in store.state_items(CURRENT).items() if v and v["state"] != "ok"]
    cur = store.cursor()
    cols = ["@timestamp", "alert.rule.id", "alert.rule.name", "alert.group", "alert.state", "alert.previous_state",
            "alert.severity", "alert.value", "alert.threshold", "alert.message", "alert.notify"]
    rows = cur.execute("SELECT " + ", ".join(f'"{c}"' for c in cols) + ' FROM alerts ORDER BY "@timestamp" DESC LIMIT ?',
                       [HISTORY_LIMIT]).fetchall()
    silences = [{"key": k[len(SILENCE):], **v} for k, v in store.state_items(SILENCE).items()
                if v and v.get("until", 0) > now_ms]
    return {"now": now_ms, "configured": bool(published), "rules": published.get("rules", []) + ui,
            "targets": published.get("targets", {}), "default_notify": published.get("default_notify", []),
            "states": sorted(states, key=lambda s: (s["state"] != "firing", s["rule"], s["group"])),
            "history": [dict(zip(cols, r)) for r in rows], "silences": silences,
            "errors": [{"key": k[len(ERROR):], **v} for k, v in store.state_items(ERROR).items() if v],
            "outbox": len([v for v in store.state_items(OUTBOX).values() if v])}


def save_rule(store, raw: dict) -> dict:
    """Validate and store a rule made in the UI (it takes effect at the next evaluation)."""
    published = store.get_state(PUBLISHED) or {}
    rule = parse_rule(raw, "rule", origin="ui")
    if any(r["id"] == rule.id for r in published.get("rules", [])):
        raise RuleError(f"rule id {rule.id!r} is defined in the config file; pick another id or edit the file")
    known = published.get("targets", {})
    missing = [n for n in (rule.notify or []) if n not in known]
    if missing:
        raise RuleError(f"notify names unknown target(s) {missing}; targets are defined in the config "
                        f"([alerts.targets.<name>]); known: {sorted(known) or 'none'}")
    clean = {k: v for k, v in raw.items() if v not in (None, "", [])}
    store.commit(state={UI_RULE + rule.id: clean})
    return {"saved": rule.id, "rule": rule.to_dict()}


def delete_rule(store, rule_id: str) -> dict:
    if not store.get_state(UI_RULE + rule_id):
        raise RuleError(f"no UI rule {rule_id!r} (rules from the config file are changed in the file)")
    store.commit(state={UI_RULE + rule_id: None})
    return {"deleted": rule_id}


def silence(store, body: dict, now_ms: int) -> dict:
    rule_id, group = str(body.get("rule") or ""), str(body.get("group") or "*")
    if not rule_id:
        raise RuleError("give the rule id to silence")
    key = f"{SILENCE}{rule_id}|{group}"
    if body.get("clear"):
        store.commit(state={key: None})
        return {"cleared": key[len(SILENCE):]}
    minutes = body.get("minutes")
    if not isinstance(minutes, (int, float)) or not 0 < minutes <= 90 * 1440:
        raise RuleError("minutes: how long to mute, 1 … 129600 (90 days)")
    until = now_ms + int(minutes * 60_000)
    store.commit(state={key: {"until": until, "reason": str(body.get("reason", ""))[:500], "by": "ui",
                              "rule": rule_id, "group": group}})
    return {"silenced": key[len(SILENCE):], "until": until}


def slo_overview(store, now_ms: int) -> dict:
    published = store.get_state(PUBLISHED) or {}
    out = []
    for slo in parse_slos(published.get("slos", [])):
        out.append({"id": slo.id, "name": slo.name, "type": slo.type, "target": slo.target,
                    "period_ms": slo.period_ms, "threshold_ms": slo.threshold_ms, "tiers": slo.tiers(),
                    "groups": status(store.cursor(), slo, now_ms)})
    return {"now": now_ms, "slos": out}


def anomalies(store, start: int, end: int, bucket: int, dep: str | None) -> dict:
    """Anomalies in a range: the list, and counts per bucket and measure (a chart series)."""
    where, params = '"@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT)', [start, end]
    if dep:
        where += ' AND "aoai.deployment" = ?'
        params.append(dep)
    cur = store.cursor()
    rows = cur.execute('SELECT epoch_ms("@timestamp"), "aoai.deployment", "anomaly.metric", "anomaly.value", '
                       '"anomaly.expected", "anomaly.lower", "anomaly.upper", "anomaly.score", "anomaly.direction" '
                       f'FROM anomalies WHERE {where} ORDER BY 1 DESC LIMIT 500', params).fetchall()
    counts = cur.execute(f'SELECT epoch_ms("@timestamp") // ? * ? AS t, "anomaly.metric", count(*) FROM anomalies '
                         f'WHERE {where} GROUP BY ALL ORDER BY 1', [bucket, bucket] + params).fetchall()
    times = sorted({t for t, _, _ in counts})
    index = {t: i for i, t in enumerate(times)}
    series: dict[str, list] = {}
    for t, m, n in counts:
        series.setdefault(m, [None] * len(times))[index[t]] = n
    names = ["t", "deployment", "measure", "value", "expected", "lower", "upper", "score", "direction"]
    return {"rows": [dict(zip(names, r)) for r in rows], "chart": {"t": times, "series": series, "bucket": bucket},
            "start": start, "end": end}


def routes(store) -> list[Route]:
    """The routes web/app.py mounts."""
    from ..web.app import BadRequest, _error, _json, time_range

    def guarded(fn):
        async def handler(request: Request):
            body = None
            if request.method in ("POST", "DELETE"):
                if not (request.headers.get("content-type") or "").startswith("application/json"):
                    return _error("send JSON (Content-Type: application/json)", 415)
                try:
                    body = orjson.loads(await request.body() or b"{}")
                except orjson.JSONDecodeError:
                    return _error("the body is not valid JSON")
                if not isinstance(body, dict):
                    return _error("the body must be a JSON object")
            try:
                return _json(await run_in_threadpool(fn, request, body))
            except (RuleError, BadRequest) as exc:
                return _error(str(exc))
            except StoreError as exc:
                if "read-only" in str(exc):
                    return _error("this UI serves a read-only store (`aoai-monitor serve`); change rules and silences "
                                  "in the UI of `aoai-monitor run` (with [web] in its config) or in the config file", 409)
                raise
        return handler

    def now() -> int:  # the pages show the live state
        return int(time.time() * 1000)

    return [
        Route("/api/alerts", guarded(lambda r, b: overview(store, now()))),
        Route("/api/alerts/rules", guarded(lambda r, b: save_rule(store, b)), methods=["POST"]),
        Route("/api/alerts/rules/{id}", guarded(lambda r, b: delete_rule(store, r.path_params["id"])), methods=["DELETE"]),
        Route("/api/alerts/silence", guarded(lambda r, b: silence(store, b, now())), methods=["POST"]),
        Route("/api/slo", guarded(lambda r, b: slo_overview(store, now()))),
        Route("/api/anomalies", guarded(lambda r, b: anomalies(store, *time_range(r.query_params), r.query_params.get("dep")))),
    ]
