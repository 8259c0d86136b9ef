"""Built-in rule templates (`aoai-monitor alerts init` writes them into the config as [[alerts.rules]]).

Corrected versions of Elastic's three templates and more (docs/alerts.md "Templates" says why each
threshold): PTU utilization compared as the 0–100 percent Azure sends (Elastic multiplies by 100, so it
fires at 0.85 %); 429s counted on aoai.deployment / aoai.status_code, which every request log carries
(Elastic groups logs by azure.dimensions.*, which only metrics have, so it never fires); end-to-end
latency from logs kept apart from the metrics' time to first response.
"""

from __future__ import annotations

_REQUESTS = "aoai.status_code:*"

TEMPLATES: list[dict] = [
    {"id": "latency-p95-spike", "name": "End-to-end latency spike (p95)", "source": "logs",
     "filter": "aoai.status_code < 400", "agg": "p95(aoai.duration_ms)", "group_by": ["aoai.deployment"],
     "window": "10m", "compare_to": "7d", "min_count": 10, "op": ">=", "warning": 2.0, "critical": 3.0, "pending": 2,
     "runbook": "p95 request latency is several times the deployment's 7-day p95. Check Azure status for the region, "
                "prompt sizes (tokens) and max_tokens; move latency-sensitive traffic to another deployment or region."},
    {"id": "ttfr-spike", "name": "Time to first response spike (metrics)", "source": "metrics",
     "filter": "azure.open_ai.time_to_response.avg:* and azure.dimensions.status_code:200",
     "agg": "avg(azure.open_ai.time_to_response.avg)", "group_by": ["azure.dimensions.model_deployment_name"],
     "window": "10m", "compare_to": "7d", "op": ">=", "warning": 2.0, "critical": 3.0, "pending": 2,
     "runbook": "Azure's time to first response is several times its 7-day average: the service is slow before it "
                "streams. Check Azure status; for PTU deployments check utilization."},
    {"id": "ptu-utilization", "name": "Provisioned (PTU) utilization high", "source": "metrics",
     "filter": "azure.open_ai.provisioned_managed_utilization_v2.avg:*",
     "agg": "avg(azure.open_ai.provisioned_managed_utilization_v2.avg)",
     "group_by": ["azure.dimensions.model_deployment_name"], "window": "10m", "op": ">=", "warning": 80.0,
     "critical": 90.0, "pending": 2,
     "runbook": "PTU utilization near 100 % means requests get 429. Add PTUs, enable spillover to a standard "
                "deployment, or shift batch work off-peak."},
    {"id": "quota-429-rate", "name": "Throttling (HTTP 429) rate", "source": "logs", "filter": _REQUESTS,
     "agg": "ratio(aoai.status_code:429)", "group_by": ["aoai.deployment"], "window": "10m", "min_count": 20,
     "min_matches": 5,
     "op": ">=", "warning": 5.0, "critical": 20.0, "pending": 2,
     "runbook": "The deployment is out of TPM/RPM quota (or PTU capacity). Raise the quota, add a deployment or "
                "region behind a load balancer, and make clients honour retry-after."},
    {"id": "server-error-rate", "name": "Server error (5xx) rate", "source": "logs", "filter": _REQUESTS,
     "agg": "ratio(aoai.status_code >= 500)", "group_by": ["aoai.deployment"], "window": "10m", "min_count": 20,
     "min_matches": 3,
     "op": ">=", "warning": 2.0, "critical": 10.0, "pending": 2,
     "runbook": "Azure OpenAI answers 5xx. Check Azure status and the resource's health; fail over to another region."},
    {"id": "content-filter-surge", "name": "Content-filter surge", "source": "logs",
     "filter": "aoai.content_filter.filtered:*", "agg": "ratio(aoai.content_filter.filtered:true)",
     "group_by": ["aoai.deployment"], "window": "1h", "min_count": 30, "min_matches": 5, "op": ">=", "warning": 8.0, "critical": 20.0,
     "runbook": "Many prompts or completions are blocked. Look at aoai.content_filter.input/output in Discover: "
                "abuse, a jailbreak campaign or a changed prompt template."},
    {"id": "token-budget-daily", "name": "Daily token budget", "source": "logs", "filter": "aoai.tokens.total:*",
     "agg": "sum(aoai.tokens.total)", "group_by": ["aoai.deployment"], "window": "24h", "every": "5m", "op": ">=",
     "warning": 50_000_000.0, "critical": 100_000_000.0,
     "runbook": "A deployment used more tokens in 24 h than budgeted: find the caller (Cost page, top callers) and "
                "check for runaway loops or missing max_tokens. Set warning/critical to your budget."},
    {"id": "cost-budget", "kind": "budget", "name": "Monthly cost budget", "monthly_budget": 1000.0,
     "measure": "forecast_pct", "every": "15m", "op": ">=", "warning": 90.0, "critical": 100.0,
     "runbook": "Month-end cost forecast passes the budget: see the Cost page (by deployment and caller). "
                "Set monthly_budget to yours."},
    {"id": "no-logs", "name": "No logs from a resource", "source": "logs", "group_by": ["azure.resource.name"],
     "window": "30m", "known_window": "24h", "no_data": "alert",
     "runbook": "A resource that sent logs in the last 24 h sent none for 30 min: check its diagnostic settings, "
                "the Event Hub / storage export and `aoai-monitor status`; or the resource is down or unused."},
]


def template_ids() -> list[str]:
    return [t["id"] for t in TEMPLATES]


def to_toml(templates: list[dict], notify: list[str] | None = None) -> str:
    """[[alerts.rules]] blocks for a config file."""
    out = []
    for t in templates:
        out.append("[[alerts.rules]]")
        for key, value in {**t, **({"notify": notify} if notify else {})}.items():
            out.append(f"{key} = {_toml(value)}")
        out.append("")
    return "\n".join(out)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
