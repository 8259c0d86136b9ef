"""SLOs: availability (share of requests that are neither 5xx nor 429) and latency (share of successful
requests under X ms) per deployment or service, with error budget and multiwindow multi-burn-rate alerts.

Burn rate r = error ratio over a window / (1 − target). A tier fires when both its long and its short
window burn faster than its factor (SRE Workbook ch. 5). Factors come from the share of the budget a tier
may consume in its long window: factor = share × period / long window, so the 30-day catalogue is
14.4 / 6 / 3 / 1 and 28- and 7-day SLOs get the factors that keep the same shares. Page tiers are
critical, ticket tiers warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..query.kql import KqlError, compile_kql
from .evaluate import Result, _q, group_key, table_columns
from .rules import Rule, RuleError, _ms

H = 3_600_000
M = 60_000
# (severity, long window, short window, share of the budget consumed in the long window when it fires)
TIERS = (("page", H, 5 * M, 0.02), ("page", 6 * H, 30 * M, 0.05), ("ticket", 24 * H, 2 * H, 0.10),
         ("ticket", 72 * H, 6 * H, 0.10))
SEVERITY = {"page": "critical", "ticket": "warning"}
_KEYS = {"id", "name", "type", "target", "period", "source", "group_by", "filter", "threshold_ms", "notify",
         "every", "min_events", "runbook", "enabled"}


@dataclass
class SLO:
    id: str
    name: str
    type: str  # availability | latency
    target: float  # percent, e.g. 99.5
    period_ms: int = 30 * 24 * H
    source: str = "logs"
    group_by: list[str] = field(default_factory=lambda: ["aoai.deployment"])
    filter: str = ""
    threshold_ms: float | None = None
    min_events: int = 10  # zero-traffic guard: a long window with fewer requests never fires
    notify: list[str] | None = None
    runbook: str = ""
    every_ms: int = 60_000
    enabled: bool = True

    @property
    def budget(self) -> float:
        return 1 - self.target / 100

    def factor(self, share: float, long_ms: int) -> float:
        return share * self.period_ms / long_ms

    def tiers(self) -> list[dict]:
        return [{"severity": s, "long_ms": lo, "short_ms": sh, "factor": round(self.factor(share, lo), 4)}
                for s, lo, sh, share in TIERS]


def parse_slos(items: list, default_every_ms: int = 60_000) -> list[SLO]:
    out = []
    for i, raw in enumerate(items or []):
        where = f"alerts.slos[{i}]"
        unknown = set(raw) - _KEYS
        if unknown:
            raise RuleError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        sid = str(raw.get("id") or "")
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,70}$", sid):
            raise RuleError(f"{where}.id = {sid!r}: give each SLO an id of letters, digits, '-', '_' or '.'")
        kind = raw.get("type", "availability")
        if kind not in ("availability", "latency"):
            raise RuleError(f"{where}.type = {kind!r}: use availability or latency")
        target = raw.get("target")
        if not isinstance(target, (int, float)) or not 50 <= target < 100:
            raise RuleError(f"{where}.target = {target!r}: a percentage such as 99.5 (at least 50, below 100)")
        slo = SLO(id=sid, name=str(raw.get("name") or sid), type=kind, target=float(target),
                  period_ms=_ms(raw.get("period", "30d"), where, "period"), source=raw.get("source", "logs"),
                  filter=str(raw.get("filter", "")), min_events=int(raw.get("min_events", 10)),
                  notify=raw.get("notify"), runbook=str(raw.get("runbook", "")),
                  every_ms=_ms(raw.get("every", default_every_ms / 1000), where, "every"),
                  enabled=bool(raw.get("enabled", True)))
        if slo.source not in ("logs", "spans"):
            raise RuleError(f"{where}.source = {slo.source!r}: logs (per deployment) or spans (per service)")
        gb = raw.get("group_by", "aoai.deployment" if slo.source == "logs" else "service.name")
        slo.group_by = [gb] if isinstance(gb, str) else list(gb)
        if slo.period_ms < 7 * 24 * H:
            raise RuleError(f"{where}.period: at least 7d (the slowest burn tier looks back 3 days)")
        if kind == "latency":
            if not isinstance(raw.get("threshold_ms"), (int, float)) or raw["threshold_ms"] <= 0:
                raise RuleError(f"{where}: a latency SLO needs threshold_ms (requests at or under it are good)")
            slo.threshold_ms = float(raw["threshold_ms"])
        out.append(slo)
    return out


def rule_for(slo: SLO) -> Rule:
    """The burn-rate alert rule every SLO gets."""
    return Rule(id=f"slo.{slo.id}", name=f"SLO {slo.name} burn rate", kind="slo", every_ms=slo.every_ms,
                notify=slo.notify, enabled=slo.enabled, origin="slo", slo=slo, group_by=slo.group_by,
                runbook=slo.runbook or "Burning error budget faster than the SLO allows: open the SLO page, find the "
                "deployment's failing or slow requests in Discover (status, latency) and fix or fail over.")


def _events(cur, slo: SLO) -> tuple[str, str, list, dict]:
    """(total condition, bad condition, params, columns) for the SLO's events."""
    cols = table_columns(cur, slo.source)
    for g in slo.group_by:
        if g not in cols:
            raise RuleError(f"SLO {slo.id!r}: group_by {g!r} is not a column of {slo.source}")
    status, dur = _q("aoai.status_code"), _q("aoai.duration_ms")
    if slo.type == "availability":
        total, bad = f"{status} IS NOT NULL", f"({status} >= 500 OR {status} = 429)"
    else:
        total = f"{status} < 400 AND {dur} IS NOT NULL"
        bad = f"{dur} > {float(slo.threshold_ms)!r}"
    params: list = []
    if slo.filter.strip():
        try:
            cond, params = compile_kql(slo.filter, slo.source, cols)
        except KqlError as exc:
            raise RuleError(f"SLO {slo.id!r}: filter: {exc}") from None
        total = f"{total} AND ({cond})"
    return total, bad, params, cols


def window_counts(cur, slo: SLO, at_ms: int, windows: list[int]) -> dict[str, list[tuple[int, int]]]:
    """group → [(total, bad) per window ending at at_ms]."""
    total, bad, params, _ = _events(cur, slo)
    groups = ", ".join(_q(g) for g in slo.group_by)
    parts = []
    for w in windows:
        parts.append(f'count(*) FILTER (WHERE "@timestamp" >= epoch_ms({at_ms - w}::BIGINT))')
        parts.append(f'count(*) FILTER (WHERE "@timestamp" >= epoch_ms({at_ms - w}::BIGINT) AND {bad})')
    sql = (f"SELECT {groups}, {', '.join(parts)} FROM {slo.source} WHERE \"@timestamp\" >= epoch_ms(?::BIGINT) "
           f"AND \"@timestamp\" < epoch_ms(?::BIGINT) AND {total} GROUP BY {groups}")
    rows = cur.execute(sql, [at_ms - max(windows), at_ms] + params).fetchall()
    k = len(slo.group_by)
    return {group_key(slo.group_by, r[:k]): [(r[k + 2 * i], r[k + 2 * i + 1]) for i in range(len(windows))] for r in rows}


def burn_results(cur, slo: SLO, at_ms: int) -> list[Result]:
    """Per group: the most severe tier whose long and short windows both burn above its factor."""
    windows = sorted({w for _, lo, sh, _ in TIERS for w in (lo, sh)})
    counts = window_counts(cur, slo, at_ms, windows)
    out = []
    for group, per in sorted(counts.items()):
        by_w = dict(zip(windows, per))

        def rate(w: int, by_w=by_w) -> float | None:
            t, b = by_w[w]
            return (b / t) / slo.budget if t else None

        hit = None
        for tier in slo.tiers():
            lo, sh = rate(tier["long_ms"]), rate(tier["short_ms"])
            if (by_w[tier["long_ms"]][0] >= slo.min_events and lo is not None and sh is not None
                    and lo >= tier["factor"] and sh >= tier["factor"]):
                hit = (tier, lo, sh)
                break
        one_h = rate(H)
        if hit:
            tier, lo, sh = hit
            detail = (f"burn rate {lo:.1f}× over {tier['long_ms'] // H} h and {sh:.1f}× over {tier['short_ms'] // M} min "
                      f"(≥ {tier['factor']:g}× {tier['severity']} tier; target {slo.target:g} %)")
            out.append(Result(group, round(lo, 4), SEVERITY[tier["severity"]], tier["factor"], detail=detail))
        else:
            out.append(Result(group, None if one_h is None else round(one_h, 4), None, None,
                              detail="burn rate " + ("—" if one_h is None else f"{one_h:.2f}×") + " over 1 h"))
    return out


def status(cur, slo: SLO, at_ms: int, points: int = 60) -> list[dict]:
    """Per group: SLI and budget remaining over the period, current burn rates and the burn-down series."""
    total, bad, params, _ = _events(cur, slo)
    groups = ", ".join(_q(g) for g in slo.group_by)
    start = at_ms - slo.period_ms
    step = max(slo.period_ms // points, M)
    rows = cur.execute(
        f"SELECT {groups}, (epoch_ms(\"@timestamp\") - ?) // ? AS b, count(*), count(*) FILTER (WHERE {bad}) "
        f"FROM {slo.source} WHERE \"@timestamp\" >= epoch_ms(?::BIGINT) AND \"@timestamp\" < epoch_ms(?::BIGINT) "
        f"AND {total} GROUP BY ALL ORDER BY b", [start, step, start, at_ms] + params).fetchall()
    k = len(slo.group_by)
    series: dict[str, list[tuple[int, int, int]]] = {}
    for r in rows:
        series.setdefault(group_key(slo.group_by, r[:k]), []).append((r[k], r[k + 1], r[k + 2]))
    windows = sorted({w for _, lo, sh, _ in TIERS for w in (lo, sh)})
    counts = window_counts(cur, slo, at_ms, windows)
    out = []
    for group, buckets in sorted(series.items()):
        t_all = sum(t for _, t, _ in buckets)
        b_all = sum(b for _, _, b in buckets)
        allowed = slo.budget * t_all
        burn_down, cum = [], 0
        by_bucket = {i: b for i, _, b in buckets}
        for i in range(-(-slo.period_ms // step)):
            cum += by_bucket.get(i, 0)
            burn_down.append([start + (i + 1) * step, round(100 * (1 - cum / allowed), 3) if allowed else None])
        per = dict(zip(windows, counts.get(group, [(0, 0)] * len(windows))))
        out.append({
            "slo": slo.id, "group": group, "type": slo.type, "target": slo.target, "period_ms": slo.period_ms,
            "events": t_all, "bad": b_all, "sli": round(100 * (1 - b_all / t_all), 4) if t_all else None,
            "budget_remaining_pct": round(100 * (1 - b_all / allowed), 2) if allowed else None,
            "burn_rates": {_label(w): (round((b / t) / slo.budget, 3) if t else None) for w, (t, b) in per.items()},
            "tiers": slo.tiers(), "burn_down": burn_down,
        })
    return out


def _label(ms: int) -> str:
    return f"{ms // H}h" if ms % H == 0 else f"{ms // M}m"
