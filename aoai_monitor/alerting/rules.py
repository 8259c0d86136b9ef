"""Alert rules: the [[alerts.rules]] tables of the config (and rules made in the UI), parsed and validated.

A rule is a query (a KQL-like filter + an aggregation + a group-by over logs, metrics, spans or anomalies,
or a SQL SELECT) evaluated over a window on a schedule, compared with warning/critical thresholds. Errors
name the rule and the key to change, because a bad rule must fail at start-up rather than stay silent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..store import parse_duration

SOURCES = ("logs", "metrics", "spans", "anomalies")
KINDS = ("threshold", "budget", "slo")
OPS = (">", ">=", "<", "<=")
NO_DATA = ("ok", "alert", "keep")
SEVERITIES = ("warning", "critical")
_AGG = re.compile(r"^(count|count_distinct|sum|avg|min|max|p\d{1,2}|ratio)(?:\((.*)\))?$", re.S)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
_KEYS = {"id", "name", "kind", "source", "filter", "agg", "group_by", "sql", "window", "every", "delay", "op",
         "warning", "critical", "compare_to", "min_count", "min_matches", "pending", "no_data", "known_window", "notify",
         "runbook", "enabled", "monthly_budget", "measure", "description"}


class RuleError(ValueError):
    """A rule that cannot be evaluated; the message names the rule and what to change."""


@dataclass
class Rule:
    id: str
    name: str
    kind: str = "threshold"
    source: str = "logs"
    filter: str = ""
    agg: str = "count"  # function name: count, count_distinct, sum, avg, min, max, pNN, ratio
    agg_arg: str = ""  # the field (or, for ratio, the KQL filter of the counted rows)
    group_by: list[str] = field(default_factory=list)
    sql: str | None = None
    window_ms: int = 600_000
    every_ms: int = 60_000
    delay_ms: int = 0
    op: str = ">="
    warning: float | None = None
    critical: float | None = None
    compare_to_ms: int | None = None  # value becomes current / (same aggregate over this window before)
    min_count: int = 0  # fewer rows in the window: not judged (a zero-traffic guard)
    min_matches: int = 0  # ratio rules: fewer counted rows than this never breach (one error in 20 is not 5 %)
    pending: int = 1  # consecutive breaching evaluations before firing
    no_data: str = "ok"
    known_window_ms: int = 86_400_000
    notify: list[str] | None = None  # None: the [alerts] default_notify targets
    runbook: str = ""
    description: str = ""
    enabled: bool = True
    monthly_budget: float | None = None
    measure: str = "spent_pct"
    origin: str = "config"  # config, ui or slo
    slo: object = None  # the SLO of a kind="slo" rule

    @property
    def agg_text(self) -> str:
        return f"{self.agg}({self.agg_arg})" if self.agg_arg else self.agg

    def severity_of(self, value: float | None) -> tuple[str | None, float | None]:
        """(severity, threshold crossed) for a value; (None, warning-or-critical threshold) when within limits."""
        if value is None:
            return None, None
        for sev, limit in (("critical", self.critical), ("warning", self.warning)):
            if limit is not None and _compare(value, self.op, limit):
                return sev, limit
        return None, self.warning if self.warning is not None else self.critical

    def to_dict(self) -> dict:
        """The TOML/JSON form (what the UI shows and stores)."""
        out = {"id": self.id, "name": self.name, "kind": self.kind, "enabled": self.enabled,
               "every": _dur(self.every_ms), "notify": self.notify, "runbook": self.runbook,
               "description": self.description, "origin": self.origin}
        if self.kind == "threshold":
            out.update({"source": self.source, "window": _dur(self.window_ms), "op": self.op, "warning": self.warning,
                        "critical": self.critical, "pending": self.pending, "no_data": self.no_data,
                        "delay": _dur(self.delay_ms)})
            if self.sql:
                out["sql"] = self.sql
            else:
                out.update({"filter": self.filter, "agg": self.agg_text, "group_by": self.group_by,
                            "min_count": self.min_count, "min_matches": self.min_matches})
                if self.compare_to_ms:
                    out["compare_to"] = _dur(self.compare_to_ms)
                if self.no_data == "alert":
                    out["known_window"] = _dur(self.known_window_ms)
        elif self.kind == "budget":
            out.update({"monthly_budget": self.monthly_budget, "measure": self.measure, "op": self.op,
                        "warning": self.warning, "critical": self.critical})
        return out


def _compare(value: float, op: str, limit: float) -> bool:
    return {">": value > limit, ">=": value >= limit, "<": value < limit, "<=": value <= limit}[op]


def _dur(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0 and ms >= size:
            return f"{ms // size}{unit}"
    return f"{ms / 1000:g}s"


def _ms(value, where: str, key: str) -> int:
    try:
        seconds = float(value) if isinstance(value, (int, float)) else parse_duration(str(value))
    except ValueError:
        raise RuleError(f"{where}.{key} = {value!r}: write a duration such as \"30s\", \"10m\", \"6h\" or \"7d\"") from None
    if seconds <= 0:
        raise RuleError(f"{where}.{key} must be positive")
    return int(seconds * 1000)


def _number(value, where: str, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RuleError(f"{where}.{key} = {value!r}: must be a number (percent values are 0–100)")
    return float(value)


def parse_rule(raw: dict, where: str, default_every_ms: int = 60_000, origin: str = "config") -> Rule:
    """Validate one rule table (TOML or UI JSON) into a Rule."""
    if not isinstance(raw, dict):
        raise RuleError(f"{where}: a rule is a table with at least id and agg (or sql)")
    unknown = set(raw) - _KEYS
    if unknown:
        raise RuleError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    rid = str(raw.get("id") or "")
    if not _ID.match(rid):
        raise RuleError(f"{where}.id = {rid!r}: give each rule an id of letters, digits, '-', '_' or '.' (max 80)")
    where = f"{where} (id {rid!r})"
    kind = raw.get("kind", "threshold")
    if kind not in ("threshold", "budget"):
        raise RuleError(f"{where}.kind = {kind!r}: use threshold or budget (SLO rules come from [[alerts.slos]])")
    rule = Rule(id=rid, name=str(raw.get("name") or rid), kind=kind, origin=origin,
                runbook=str(raw.get("runbook", "")), description=str(raw.get("description", "")),
                enabled=bool(raw.get("enabled", True)))
    rule.every_ms = _ms(raw.get("every", default_every_ms / 1000), where, "every")
    rule.op = raw.get("op", ">=")
    if rule.op not in OPS:
        raise RuleError(f"{where}.op = {rule.op!r}: use one of {', '.join(OPS)}")
    rule.warning = _number(raw.get("warning"), where, "warning")
    rule.critical = _number(raw.get("critical"), where, "critical")
    if rule.warning is None and rule.critical is None and not (kind == "threshold" and raw.get("no_data") == "alert"):
        raise RuleError(f"{where}: set `warning` and/or `critical` (the thresholds the value is compared with, op {rule.op!r})")
    if rule.warning is not None and rule.critical is not None and rule.op in (">", ">=") and rule.warning > rule.critical:
        raise RuleError(f"{where}: warning ({rule.warning:g}) must not exceed critical ({rule.critical:g}) with op {rule.op}")
    if rule.warning is not None and rule.critical is not None and rule.op in ("<", "<=") and rule.warning < rule.critical:
        raise RuleError(f"{where}: with op {rule.op} warning ({rule.warning:g}) must be above critical ({rule.critical:g})")
    notify = raw.get("notify")
    if notify is not None and (not isinstance(notify, list) or not all(isinstance(n, str) for n in notify)):
        raise RuleError(f"{where}.notify: a list of target names from [alerts.targets.<name>], e.g. [\"ops\"]")
    rule.notify = notify
    if kind == "budget":
        rule.monthly_budget = _number(raw.get("monthly_budget"), where, "monthly_budget")
        if not rule.monthly_budget or rule.monthly_budget <= 0:
            raise RuleError(f"{where}.monthly_budget: set the monthly budget in the pricing currency (e.g. 5000)")
        rule.measure = raw.get("measure", "spent_pct")
        if rule.measure not in ("spent_pct", "forecast_pct"):
            raise RuleError(f"{where}.measure = {rule.measure!r}: use spent_pct or forecast_pct")
        return rule
    rule.window_ms = _ms(raw.get("window", "10m"), where, "window")
    rule.delay_ms = _ms(raw["delay"], where, "delay") if raw.get("delay") not in (None, 0, "0s", "0") else 0
    rule.source = raw.get("source", "logs")
    if rule.source not in SOURCES:
        raise RuleError(f"{where}.source = {rule.source!r}: use one of {', '.join(SOURCES)}")
    rule.pending = int(raw.get("pending", 1))
    if rule.pending < 1:
        raise RuleError(f"{where}.pending must be ≥ 1 (consecutive breaching evaluations before firing)")
    rule.no_data = raw.get("no_data", "ok")
    if rule.no_data not in NO_DATA:
        raise RuleError(f"{where}.no_data = {rule.no_data!r}: use ok (missing data is fine), alert (fire critical) or keep (leave the state)")
    rule.known_window_ms = _ms(raw.get("known_window", "24h"), where, "known_window")
    rule.min_count = int(raw.get("min_count", 0))
    rule.min_matches = int(raw.get("min_matches", 0))
    if raw.get("sql"):
        if any(k in raw for k in ("filter", "agg", "group_by", "compare_to")):
            raise RuleError(f"{where}: give either sql or filter/agg/group_by, not both")
        rule.sql = str(raw["sql"])
        return rule
    rule.filter = str(raw.get("filter", ""))
    m = _AGG.match(str(raw.get("agg", "count")).strip())
    if not m:
        raise RuleError(f"{where}.agg = {raw.get('agg')!r}: use count, count_distinct(field), sum|avg|min|max(field), "
                        "p95(field) (any p1–p99) or ratio(KQL) (percent of the rows that match)")
    rule.agg, rule.agg_arg = m.group(1), (m.group(2) or "").strip()
    if rule.agg != "count" and not rule.agg_arg:
        raise RuleError(f"{where}.agg: {rule.agg} needs an argument, e.g. {rule.agg}(aoai.duration_ms)")
    if rule.agg.startswith("p") and not 1 <= int(rule.agg[1:]) <= 99:
        raise RuleError(f"{where}.agg: percentile must be p1 … p99")
    group_by = raw.get("group_by", [])
    if isinstance(group_by, str):
        group_by = [group_by]
    rule.group_by = [str(g) for g in group_by]
    if raw.get("compare_to"):
        rule.compare_to_ms = _ms(raw["compare_to"], where, "compare_to")
    return rule


def parse_rules(rules: list, default_every_ms: int = 60_000, origin: str = "config", where: str = "alerts.rules") -> list[Rule]:
    out = [parse_rule(raw, f"{where}[{i}]", default_every_ms, origin) for i, raw in enumerate(rules or [])]
    ids = [r.id for r in out]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise RuleError(f"{where}: rule ids must be unique; {dupes} appear more than once")
    return out
