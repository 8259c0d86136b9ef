"""Evaluating one rule at one instant: a parameterized query over the window → one Result per group.

Evaluation is a pure function of the store and the instant (no wall clock), so the scheduler can replay
missed instants after downtime and tests can run any scenario on a fixed clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb

from ..query.kql import KqlError, compile_kql
from ..query.sql import QueryError, check_read_only
from .rules import Rule, RuleError

TS = '"@timestamp"'


@dataclass
class Result:
    """What a rule saw for one group at one instant. severity None = within limits."""

    group: str  # "aoai.deployment=gpt-4o" ('' for an ungrouped rule)
    value: float | None
    severity: str | None
    threshold: float | None
    no_data: bool = False
    detail: str = ""


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_columns: dict[str, tuple[float, dict[str, str]]] = {}


def table_columns(cur: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """Column → type. Cached for 60 s per table: the catalogue query costs more than most rule queries, and
    every store of this version has the same tables (the store adds missing columns when it opens)."""
    hit = _columns.get(table)
    if hit and time.monotonic() - hit[0] < 60:
        return hit[1]
    rows = cur.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()
    cols = {n: t for n, t in rows}
    if cols:
        _columns[table] = (time.monotonic(), cols)
    return cols


def group_key(names: list[str], values: tuple) -> str:
    return ",".join(f"{n}={'' if v is None else v}" for n, v in zip(names, values))


def _value_sql(rule: Rule, cols: dict[str, str], now: datetime) -> tuple[str, list]:
    """The aggregate expression of a rule and the count of rows it counts (with their parameters)."""
    agg, arg = rule.agg, rule.agg_arg
    if agg == "count":
        return "count(*)::DOUBLE, count(*)", []
    if agg == "ratio":
        try:
            cond, params = compile_kql(arg, rule.source, cols, now=now)
        except KqlError as exc:
            raise RuleError(f"rule {rule.id!r}: ratio({arg}): {exc}") from None
        return (f"100.0 * count(*) FILTER (WHERE {cond}) / nullif(count(*), 0), count(*) FILTER (WHERE {cond})",
                params + params)
    if arg not in cols:
        raise RuleError(f"rule {rule.id!r}: agg {rule.agg_text}: {arg!r} is not a column of {rule.source}; "
                        "`aoai-monitor fields` lists them")
    col = _q(arg)
    if agg == "count_distinct":
        return f"count(DISTINCT {col})::DOUBLE, count({col})", []
    if agg.startswith("p"):
        return f"quantile_cont({col}, {int(agg[1:]) / 100}), count({col})", []
    return f"{agg}({col})::DOUBLE, count({col})", []


def _where(rule: Rule, cols: dict[str, str], now: datetime) -> tuple[str, list]:
    if not rule.filter.strip():
        return "TRUE", []
    try:
        return compile_kql(rule.filter, rule.source, cols, now=now)
    except KqlError as exc:
        raise RuleError(f"rule {rule.id!r}: filter: {exc}") from None


def query_values(cur, rule: Rule, start_ms: int, end_ms: int) -> dict[str, tuple[float | None, int, int]]:
    """group → (value, rows in the window, rows the aggregate counted) for rows in [start, end)."""
    cols = table_columns(cur, rule.source)
    if not cols:
        raise RuleError(f"rule {rule.id!r}: the store has no {rule.source} table yet")
    for g in rule.group_by:
        if g not in cols:
            raise RuleError(f"rule {rule.id!r}: group_by {g!r} is not a column of {rule.source}; `aoai-monitor fields` lists them")
    now = datetime.fromtimestamp(end_ms / 1000, timezone.utc)
    where, wparams = _where(rule, cols, now)
    value, vparams = _value_sql(rule, cols, now)
    groups = ", ".join(_q(g) for g in rule.group_by)
    sql = (f"SELECT {groups + ', ' if groups else ''}{value}, count(*) AS n FROM {rule.source} "
           f"WHERE {TS} >= epoch_ms(?::BIGINT) AND {TS} < epoch_ms(?::BIGINT) AND ({where})"
           + (f" GROUP BY {groups}" if groups else ""))
    rows = cur.execute(sql, vparams + [start_ms, end_ms] + wparams).fetchall()
    return {group_key(rule.group_by, row[:-3]): (row[-3], row[-1], row[-2]) for row in rows if row[-1]}


def known_groups(cur, rule: Rule, start_ms: int, end_ms: int) -> set[str]:
    """Groups that had data in [start, end): those expected to keep sending (no_data = alert)."""
    cols = table_columns(cur, rule.source)
    where, params = _where(rule, cols, datetime.fromtimestamp(end_ms / 1000, timezone.utc))
    groups = ", ".join(_q(g) for g in rule.group_by)
    if not groups:
        n = cur.execute(f"SELECT count(*) FROM (SELECT 1 FROM {rule.source} WHERE {TS} >= epoch_ms(?::BIGINT) AND "
                        f"{TS} < epoch_ms(?::BIGINT) AND ({where}) LIMIT 1)", [start_ms, end_ms] + params).fetchone()[0]
        return {""} if n else set()
    rows = cur.execute(f"SELECT DISTINCT {groups} FROM {rule.source} WHERE {TS} >= epoch_ms(?::BIGINT) AND "
                       f"{TS} < epoch_ms(?::BIGINT) AND ({where})", [start_ms, end_ms] + params).fetchall()
    return {group_key(rule.group_by, r) for r in rows}


def _sql_values(cur, rule: Rule, start_ms: int, end_ms: int) -> dict[str, tuple[float | None, int]]:
    """A SQL rule: the SELECT gets $start and $end (epoch ms); its last column is the value, the others the group."""
    try:
        check_read_only(cur, rule.sql)
        rel = cur.execute(rule.sql, {"start": start_ms, "end": end_ms})
    except (QueryError, duckdb.Error) as exc:
        raise RuleError(f"rule {rule.id!r}: sql: {str(exc).splitlines()[0]} (the query gets $start and $end as epoch ms; "
                        "its last column is the value, the others name the group)") from None
    names = [d[0] for d in rel.description]
    out = {}
    for row in rel.fetchall():
        v = row[-1]
        out[group_key(names[:-1], row[:-1])] = (None if v is None else float(v), 1, 1)
    return out


def evaluate_threshold(cur, rule: Rule, at_ms: int) -> list[Result]:
    end = at_ms - rule.delay_ms
    start = end - rule.window_ms
    values = _sql_values(cur, rule, start, end) if rule.sql else query_values(cur, rule, start, end)
    if rule.compare_to_ms and not rule.sql:
        base = query_values(cur, rule, start - rule.compare_to_ms, start)
    results = []
    for group, (value, n, matches) in sorted(values.items()):
        detail = f"{rule.agg_text if not rule.sql else 'value'} = {_fmt(value)} over {n} row(s)"
        if n < rule.min_count or matches < rule.min_matches:
            results.append(Result(group, value, None, None, detail=detail + " (too few rows to judge: min_count "
                                  f"{rule.min_count}, min_matches {rule.min_matches})"))
            continue
        if rule.compare_to_ms and not rule.sql:
            b = base.get(group, (None, 0))[0]
            if not b:
                results.append(Result(group, None, None, None, detail=detail + " (no baseline yet)"))
                continue
            detail += f", baseline {_fmt(b)} → ratio {_fmt(value / b)}×"
            value = value / b if value is not None else None
        severity, threshold = rule.severity_of(value)
        results.append(Result(group, value, severity, threshold, detail=detail))
    if rule.no_data == "alert":
        seen = {r.group for r in results}
        for group in sorted(known_groups(cur, rule, end - rule.known_window_ms, end) - seen):
            results.append(Result(group, None, "critical", None, no_data=True,
                                  detail=f"no data for {rule.window_ms // 60_000} min (had data in the last "
                                         f"{rule.known_window_ms // 3_600_000} h)"))
    return results


def evaluate_budget(store, rule: Rule, at_ms: int, pricing) -> list[Result]:
    from ..pricing.reports import budget_status

    status = budget_status(store, pricing, rule.monthly_budget, at_ms)
    value = status[rule.measure]
    severity, threshold = rule.severity_of(value)
    detail = (f"spent {status['spent']:.2f} {status['currency']} of {rule.monthly_budget:g} ({_fmt(status['spent_pct'])} %), "
              f"month-end forecast {status['forecast']:.2f} ({_fmt(status['forecast_pct'])} %)")
    return [Result("", value, severity, threshold, detail=detail)]


def evaluate(store, rule: Rule, at_ms: int, pricing=None) -> list[Result]:
    """Every group's Result for `rule` at `at_ms` (RuleError when the rule cannot run, saying why)."""
    if rule.kind == "budget":
        return evaluate_budget(store, rule, at_ms, pricing)
    if rule.kind == "slo":
        from .slo import burn_results
        return burn_results(store.cursor(), rule.slo, at_ms)
    return evaluate_threshold(store.cursor(), rule, at_ms)


def _fmt(v) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
