"""The Cost dashboard's data: rows for the web UI and `aoai-monitor cost` (no rendering here).

Everything starts from `hourly_costs`: per hour and deployment, the cost from the best token source
present (gateway > request_usage > span > metrics), so a request seen by APIM and by the service is
counted once, and deployments with no per-request tokens are priced from the token metrics. APIM rows
for one request (GatewayLogs + GatewayLlmLogs) are deduplicated by correlation id.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal

from . import Pricing
from .engine import TOKEN_SOURCES, price_tokens
from .prices import Unpriced
from .skus import sku as parse_sku

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

_LOG_HOURS = """
WITH t AS (
  SELECT *, CASE "azure.open_ai.category" WHEN 'GatewayLogs' THEN 0 WHEN 'GatewayLlmLogs' THEN 1 ELSE 2 END AS _rank
  FROM logs
  WHERE "@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT)
    AND ("aoai.tokens.input" IS NOT NULL OR "aoai.tokens.output" IS NOT NULL)
  QUALIFY "azure.open_ai.correlation_id" IS NULL
       OR row_number() OVER (PARTITION BY "azure.open_ai.correlation_id" ORDER BY _rank) = 1
)
SELECT epoch_ms(date_trunc('hour', "@timestamp")) AS hour, coalesce("aoai.deployment", '(unknown)') AS deployment,
       coalesce("aoai.cost.token_source",
                CASE WHEN "azure.open_ai.category" IN ('GatewayLogs', 'GatewayLlmLogs') THEN 'gateway' ELSE 'request_usage' END) AS source,
       coalesce("aoai.cost.price_model", "aoai.model", '(unknown)') AS model, "aoai.cost.sku" AS sku,
       count(*) AS requests, coalesce(sum("aoai.tokens.input"), 0) AS input_tokens,
       coalesce(sum("aoai.tokens.output"), 0) AS output_tokens, coalesce(sum("aoai.tokens.cached"), 0) AS cached_tokens,
       coalesce(sum("aoai.cost.total"), 0) AS cost, coalesce(sum("aoai.cost.payg"), 0) AS payg,
       count(*) FILTER (WHERE "aoai.cost.total" IS NULL) AS unpriced
FROM t GROUP BY ALL
"""

_METRIC_HOURS = """
SELECT epoch_ms(date_trunc('hour', "@timestamp")) AS hour, "azure.dimensions.model_deployment_name" AS deployment,
       lower(any_value("azure.resource.name")) AS account, any_value("azure.dimensions.model_name") AS model,
       any_value("azure.dimensions.model_version") AS version,
       lower(any_value(coalesce("azure.dimensions.region", "cloud.region"))) AS region,
       coalesce(sum("azure.open_ai.processed_prompt_tokens.total"), 0) AS input_tokens,
       coalesce(sum("azure.open_ai.generated_tokens.total"), 0) AS output_tokens
FROM metrics
WHERE "@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT)
  AND "azure.metric_name" IN ('ProcessedPromptTokens', 'GeneratedTokens')
  AND "azure.dimensions.model_deployment_name" IS NOT NULL
GROUP BY 1, 2
"""


def hourly_costs(store, pricing: Pricing, since_ms: int, until_ms: int) -> list[dict]:
    """Per hour × deployment (× model/SKU): requests, tokens, cost, payg, unpriced and the token source used."""
    cur = store.cursor()
    cols = ["hour", "deployment", "source", "model", "sku", "requests", "input_tokens", "output_tokens",
            "cached_tokens", "cost", "payg", "unpriced"]
    rows = [dict(zip(cols, r)) for r in cur.execute(_LOG_HOURS, [since_ms, until_ms]).fetchall()]
    for r in rows:
        r["unpriced_reason"] = None
    rows += metric_costs(store, pricing, since_ms, until_ms)
    best: dict[tuple, int] = {}
    for r in rows:
        key = (r["hour"], r["deployment"])
        best[key] = min(best.get(key, 99), TOKEN_SOURCES.index(r["source"]))
    return [r for r in rows if TOKEN_SOURCES.index(r["source"]) == best[(r["hour"], r["deployment"])]]


def metric_costs(store, pricing: Pricing, since_ms: int, until_ms: int) -> list[dict]:
    """Cost from ProcessedPromptTokens/GeneratedTokens by deployment and hour (token source 'metrics').

    Metrics do not split cached tokens, so prompt tokens are priced at the uncached rate (an upper bound).
    """
    catalogue = pricing.catalogue(store)
    out = []
    for hour, dep, account, model, version, region, tin, tout in store.cursor().execute(
            _METRIC_HOURS, [since_ms, until_ms]).fetchall():
        entry = catalogue.resolve(dep, account)
        if entry is not None and entry.model and entry.source in ("config", "arm"):
            model, version = entry.model, entry.version
        region = (entry.region if entry is not None and entry.region else None) or region
        sku_name = (entry.sku if entry is not None and entry.sku else None) or pricing.default_sku
        row = {"hour": hour, "deployment": dep, "source": "metrics", "model": model or "(unknown)", "sku": sku_name,
               "requests": 0, "input_tokens": int(tin), "output_tokens": int(tout), "cached_tokens": 0,
               "cost": 0.0, "payg": 0.0, "unpriced": 0, "unpriced_reason": None}
        try:
            if not model or not sku_name:
                raise Unpriced(f"deployment {dep!r}: model or SKU unknown; add it to [[pricing.deployments]]")
            month = datetime.fromtimestamp(hour / 1000, timezone.utc).strftime("%Y-%m")
            cost, row["model"] = price_tokens(model, version, sku_name, region, month, pricing.prices, int(tin), int(tout))
            row["payg"] = float(cost)
            row["cost"] = 0.0 if parse_sku(sku_name).provisioned else float(cost)
        except Unpriced as exc:
            row["unpriced"], row["unpriced_reason"] = 1, str(exc)
        out.append(row)
    return out


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d")


def daily_by(rows: list[dict], key: str) -> list[dict]:
    """Hourly rows → per day and `key` (deployment or model): cost, payg, tokens, requests, unpriced, sources."""
    acc: dict[tuple, dict] = {}
    for r in rows:
        k = (_day(r["hour"]), r[key])
        a = acc.setdefault(k, {"day": k[0], key: k[1], "cost": 0.0, "payg": 0.0, "input_tokens": 0, "output_tokens": 0,
                               "cached_tokens": 0, "requests": 0, "unpriced": 0, "sources": set()})
        for f in ("cost", "payg", "input_tokens", "output_tokens", "cached_tokens", "requests", "unpriced"):
            a[f] += r[f]
        a["sources"].add(r["source"])
    out = sorted(acc.values(), key=lambda a: (a["day"], -a["cost"]))
    for a in out:
        a["sources"] = ",".join(sorted(a["sources"], key=TOKEN_SOURCES.index))
    return out


def totals_by(rows: list[dict], key: str) -> list[dict]:
    """Hourly rows → per `key` over the whole range, most expensive first."""
    acc: dict[str, dict] = {}
    for r in daily_by(rows, key):
        a = acc.setdefault(r[key], {key: r[key], "cost": 0.0, "payg": 0.0, "input_tokens": 0, "output_tokens": 0,
                                    "requests": 0, "unpriced": 0})
        for f in ("cost", "payg", "input_tokens", "output_tokens", "requests", "unpriced"):
            a[f] += r[f]
    return sorted(acc.values(), key=lambda a: -a["cost"])


def top_callers(store, since_ms: int, until_ms: int, limit: int = 10) -> list[dict]:
    """Who spends, where APIM names the caller (subscription key, user or product), most expensive first."""
    sql = """
        SELECT coalesce("azure.open_ai.properties.apim_subscription_id", "azure.open_ai.properties.user_id",
                        "azure.open_ai.properties.product_id") AS caller,
               count(*) AS requests, coalesce(sum("aoai.cost.total"), 0) AS cost,
               coalesce(sum("aoai.tokens.total"), 0) AS tokens, count(*) FILTER (WHERE "aoai.cost.total" IS NULL) AS unpriced
        FROM logs
        WHERE "@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT)
          AND "azure.open_ai.category" IN ('GatewayLogs', 'GatewayLlmLogs') AND "aoai.tokens.input" IS NOT NULL
          AND caller IS NOT NULL
        GROUP BY 1 ORDER BY cost DESC, requests DESC LIMIT ?"""
    cols = ["caller", "requests", "cost", "tokens", "unpriced"]
    return [dict(zip(cols, r)) for r in store.cursor().execute(sql, [since_ms, until_ms, limit]).fetchall()]


def unpriced_reasons(store, pricing: Pricing, since_ms: int, until_ms: int) -> list[dict]:
    """Why requests have tokens but no cost, with counts (the visible 'unpriced' number)."""
    sql = """
        SELECT coalesce("aoai.cost.unpriced_reason", 'not priced yet: run `aoai-monitor reprice`') AS reason,
               count(*) AS requests
        FROM logs
        WHERE "@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT)
          AND ("aoai.tokens.input" IS NOT NULL OR "aoai.tokens.output" IS NOT NULL) AND "aoai.cost.total" IS NULL
        GROUP BY 1 ORDER BY 2 DESC, 1"""
    rows = [{"reason": r, "requests": n, "source": "logs"} for r, n in store.cursor().execute(sql, [since_ms, until_ms]).fetchall()]
    metric = defaultdict(int)
    for r in metric_costs(store, pricing, since_ms, until_ms):
        if r["unpriced_reason"]:
            metric[r["unpriced_reason"]] += 1
    # Most deployment-hours first, then by reason: metric_costs' rows come in no fixed order, and the
    # page and `aoai-monitor cost` must list the same reasons the same way every time.
    rows += [{"reason": k, "requests": 0, "deployment_hours": v, "source": "metrics"}
             for k, v in sorted(metric.items(), key=lambda kv: (-kv[1], kv[0]))]
    return rows


def ptu_vs_payg(store, pricing: Pricing, since_ms: int, until_ms: int, rows: list[dict] | None = None) -> list[dict]:
    """Per provisioned deployment and day: PTU capacity cost (PTUs × hourly rate × hours) against what its
    tokens would cost on pay-as-you-go, with utilization from the PTU metric."""
    rows = hourly_costs(store, pricing, since_ms, until_ms) if rows is None else rows
    payg = defaultdict(float)
    for r in rows:
        payg[(r["deployment"], _day(r["hour"]))] += r["payg"]
    util = {(d, day): (avg, mx) for d, day, avg, mx in store.cursor().execute("""
        SELECT "azure.dimensions.model_deployment_name", strftime(date_trunc('day', "@timestamp"), '%Y-%m-%d'),
               avg("azure.open_ai.provisioned_managed_utilization_v2.avg"), max("azure.open_ai.provisioned_managed_utilization_v2.max")
        FROM metrics
        WHERE "@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT)
          AND "azure.metric_name" = 'AzureOpenAIProvisionedManagedUtilizationV2'
        GROUP BY 1, 2""", [since_ms, until_ms]).fetchall()}
    out = []
    for dep in pricing.catalogue(store).provisioned():
        s = parse_sku(dep.sku)
        start = max(since_ms, _ms(dep.start) if dep.start else since_ms)
        day = start - start % DAY_MS
        while day < until_ms:
            lo, hi = max(day, start), min(day + DAY_MS, until_ms)
            name = _day(day)
            row = {"day": name, "deployment": dep.name, "sku": s.name, "ptus": dep.ptus, "hours": (hi - lo) / HOUR_MS,
                   "ptu_cost": None, "payg_equivalent": payg.get((dep.name, name), 0.0),
                   "utilization_avg": util.get((dep.name, name), (None, None))[0],
                   "utilization_max": util.get((dep.name, name), (None, None))[1], "ptu_pct_of_payg": None,
                   "unpriced_reason": None}
            try:
                if not dep.ptus:
                    raise Unpriced(f"PTU count unknown for {dep.name}: set ptus in [[pricing.deployments]] or record the ARM deployments")
                rate = pricing.prices.ptu_hourly(s, dep.region, name[:7])
                row["ptu_cost"] = float(rate * dep.ptus * Decimal(str(row["hours"])))
                if row["payg_equivalent"]:
                    row["ptu_pct_of_payg"] = 100 * row["ptu_cost"] / row["payg_equivalent"]
            except Unpriced as exc:
                row["unpriced_reason"] = str(exc)
            out.append(row)
            day += DAY_MS
    return out


def break_even(ptu_rows: list[dict]) -> list[dict]:
    """Per deployment, over the days with traffic: 'at current volume, PTU costs X % of pay-as-you-go'."""
    acc: dict[str, dict] = {}
    for r in ptu_rows:
        if r["ptu_cost"] is None or not r["payg_equivalent"]:
            continue
        a = acc.setdefault(r["deployment"], {"deployment": r["deployment"], "ptu_cost": 0.0, "payg_equivalent": 0.0, "days": 0})
        a["ptu_cost"] += r["ptu_cost"]
        a["payg_equivalent"] += r["payg_equivalent"]
        a["days"] += 1
    for a in acc.values():
        pct = 100 * a["ptu_cost"] / a["payg_equivalent"]
        a["ptu_pct_of_payg"] = pct
        if pct > 100:
            verdict = f"pay-as-you-go would be cheaper; PTU breaks even at {pct / 100:.1f}× today's token volume"
        else:
            verdict = f"PTU saves {100 - pct:.0f} % against pay-as-you-go"
        a["statement"] = (f"{a['deployment']}: at current volume, PTU costs {pct:.0f} % of pay-as-you-go "
                          f"over {a['days']} day(s) with traffic ({verdict}).")
    return list(acc.values())


def forecast(store, pricing: Pricing, now_ms: int, lookback_days: int = 7) -> dict:
    """Month to date and a month-end forecast: token run-rate of the last days plus PTU hours to come."""
    now = datetime.fromtimestamp(now_ms / 1000, timezone.utc)
    month_start = int(datetime(now.year, now.month, 1, tzinfo=timezone.utc).timestamp() * 1000)
    month_end = month_start + calendar.monthrange(now.year, now.month)[1] * DAY_MS
    mtd_rows = hourly_costs(store, pricing, month_start, now_ms)
    tokens_mtd = sum(r["cost"] for r in mtd_rows)
    ptu_mtd = sum(r["ptu_cost"] or 0 for r in ptu_vs_payg(store, pricing, month_start, now_ms, mtd_rows))
    lo = max(month_start, now_ms - lookback_days * DAY_MS)
    recent = sum(r["cost"] for r in mtd_rows if r["hour"] >= lo)
    rate_per_ms = recent / (now_ms - lo) if now_ms > lo else 0.0
    ptu_rest = sum(r["ptu_cost"] or 0 for r in ptu_vs_payg(store, pricing, now_ms, month_end, []))
    spent = tokens_mtd + ptu_mtd
    return {"month": now.strftime("%Y-%m"), "currency": pricing.prices.currency, "spent": spent,
            "tokens_spent": tokens_mtd, "ptu_spent": ptu_mtd, "daily_token_run_rate": rate_per_ms * DAY_MS,
            "forecast": spent + rate_per_ms * (month_end - now_ms) + ptu_rest}


def budget_status(store, pricing: Pricing, monthly_budget: float, now_ms: int) -> dict:
    """For budget alerts: spent and forecast against a monthly budget (state ok / forecast_over / over)."""
    f = forecast(store, pricing, now_ms)
    state = "over" if f["spent"] > monthly_budget else "forecast_over" if f["forecast"] > monthly_budget else "ok"
    return {**f, "budget": monthly_budget, "spent_pct": 100 * f["spent"] / monthly_budget if monthly_budget else None,
            "forecast_pct": 100 * f["forecast"] / monthly_budget if monthly_budget else None, "state": state}


def summary(store, pricing: Pricing, since_ms: int, until_ms: int) -> dict:
    """Everything the Cost dashboard shows, in one call."""
    rows = hourly_costs(store, pricing, since_ms, until_ms)
    ptu = ptu_vs_payg(store, pricing, since_ms, until_ms, rows)
    by_source = defaultdict(float)
    for r in rows:
        by_source[r["source"]] += r["cost"]
    reasons = unpriced_reasons(store, pricing, since_ms, until_ms)
    return {
        "currency": pricing.prices.currency,
        "total": sum(r["cost"] for r in rows) + sum(p["ptu_cost"] or 0 for p in ptu),
        "token_cost": sum(r["cost"] for r in rows),
        "ptu_cost": sum(p["ptu_cost"] or 0 for p in ptu),
        "by_source": dict(by_source),
        "unpriced_requests": sum(r["requests"] for r in reasons),
        "unpriced_deployment_hours": sum(r.get("deployment_hours", 0) for r in reasons),
        "unpriced_reasons": reasons,
        "daily_by_deployment": daily_by(rows, "deployment"),
        "by_model": totals_by(rows, "model"),
        "top_callers": top_callers(store, since_ms, until_ms),
        "ptu_vs_payg": ptu,
        "break_even": break_even(ptu),
        "forecast": forecast(store, pricing, until_ms),
    }


def _ms(iso: str) -> int:
    d = datetime.fromisoformat(str(iso).replace("Z", "+00:00"))
    return int((d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp() * 1000)


__all__ = ["hourly_costs", "metric_costs", "daily_by", "totals_by", "top_callers", "unpriced_reasons", "ptu_vs_payg",
           "break_even", "forecast", "budget_status", "summary"]
