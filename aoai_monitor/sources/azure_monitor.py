"""Azure Monitor platform metrics of every Azure OpenAI account → metric documents in the store.

Why it is shaped this way (azure.md sections 7, 10 and 14):
- Calls: the batch API (`metrics:getBatch`, MetricsClient) takes ≤ 50 resources of one subscription and region
  and ≤ 20 metric names, and every metric in a call must support every requested aggregation; the dimension
  filter (`Dim eq '*'`) must name only dimensions each metric has. So metrics are grouped by (aggregation set,
  dimension set) and each group costs ceil(resources/50) calls per region and cycle, instead of one call per
  resource and group (Elastic, ARM). Where the batch host is unavailable, the same groups go per resource to ARM.
- Windows: aligned to the grain and ending `ingestion_delay` before now; each cycle starts `lookback` before the
  last committed end, so late points are picked up and nothing is skipped. Azure reports Total = 0 for minutes
  it has not ingested yet, indistinguishable from "no traffic": such all-zero points are not stored, so the late
  real value lands under the same deterministic id later (a stored 0 would block it). Sums are unaffected.
- State (the committed window end per resource) is written in the same store commit as the documents, so a
  restart resumes exactly after the last complete window.
- Throttling: SDK retries are off; every attempt goes through one place that paces calls, honours
  Retry-After on 429/503/529, backs off on 5xx and counts what it did (shown by `aoai-monitor status`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Awaitable, Callable, Iterable

from .. import schema
from ..normalize.metrics import metric_document
from ..store import parse_duration
from .azure_credentials import (AzureConfigError, AzureEndpoints, async_credential, describe_auth_error,
                                resolve_endpoints, ssl_context)

log = logging.getLogger("aoai_monitor.sources.azure_monitor")

METRIC_NAMESPACE = "Microsoft.CognitiveServices/accounts"
OPENAI_KINDS = frozenset({"openai", "aiservices"})
ARM_RESOURCES_API = "2021-04-01"
MAX_BATCH_RESOURCES = 50
MAX_METRICS_PER_CALL = 20
MAX_TOP = 100_000
THROTTLE_STATUSES = frozenset({429, 503, 529})
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
# A batch host that answers these (or cannot be reached) is treated as absent: use per-resource ARM calls.
NO_BATCH_STATUSES = frozenset({404, 405, 501})
_GRAINS = {"PT1M": 60, "PT5M": 300, "PT15M": 900, "PT30M": 1800, "PT1H": 3600}
_AGG_ATTR = {"Total": "total", "Average": "average", "Minimum": "minimum", "Maximum": "maximum", "Count": "count"}


class AzureMonitorError(RuntimeError):
    """A collection failure whose message says what to do."""


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------

def _seconds(value: Any, key: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return parse_duration(str(value))
    except ValueError:
        raise AzureConfigError(f"{key}: {value!r} is not a duration; use e.g. 300s, 5m, 1h") from None


def _plain(value: Any) -> Any:
    """The text of a config value even when the loader wrapped it in a redacting str subclass."""
    return str.__str__(value) if isinstance(value, str) else value


def _list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    return [str(v) for v in ([value] if isinstance(value, str) else value)]


@dataclass
class MonitorSettings:
    """One `[[inputs.azure_monitor]]` section (Elastic's setting names plus ours)."""
    name: str
    raw: dict  # credential settings, read only by azure_credentials
    endpoints: AzureEndpoints
    subscriptions: list[str]
    resource_ids: list[str]
    resource_groups: list[str]
    period: float = 300.0
    refresh_list_interval: float = 600.0
    timegrain: str = "PT1M"
    ingestion_delay: float = 300.0
    lookback: float = 600.0
    max_catchup: float = 86400.0
    max_query_span: float = 6 * 3600.0
    metrics: tuple[schema.Metric, ...] = schema.METRICS
    batch: str = "auto"  # auto: batch, per-resource where batch is unavailable; always; never
    top: int = 1000
    max_concurrency: int = 4
    max_calls_per_second: float = 20.0
    max_retries: int = 5
    max_retry_wait: float = 60.0
    namespace: str = "default"
    ca_bundle: str | None = None

    @property
    def grain_s(self) -> int:
        return _GRAINS[self.timegrain]

    @classmethod
    def from_config(cls, config: dict) -> "MonitorSettings":
        cfg = {k: _plain(v) for k, v in config.items()}
        ids = _list(cfg.get("resource_ids") or cfg.get("resource_id"))
        subs = _list(cfg.get("subscription_id") or cfg.get("subscription_ids"))
        for rid in ids:
            parts = [p for p in rid.split("/") if p]
            if len(parts) < 8 or parts[0].lower() != "subscriptions":
                raise AzureConfigError(f"resource_ids: {rid!r} is not an ARM resource id "
                                       "(/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.CognitiveServices/accounts/<name>)")
            if parts[1].lower() not in {s.lower() for s in subs}:
                subs.append(parts[1])
        if not subs:
            raise AzureConfigError("set subscription_id (the subscription whose Azure OpenAI accounts to monitor) "
                                   "or resource_ids")
        grain = str(cfg.get("timegrain", "PT1M")).upper()
        if grain not in _GRAINS:
            raise AzureConfigError(f"timegrain {grain!r} unsupported; use one of {', '.join(_GRAINS)}")
        wanted = _list(cfg.get("metrics"))
        metrics = schema.METRICS
        if wanted:
            unknown = [m for m in wanted if m.lower() not in schema.METRICS_BY_AZURE_NAME]
            if unknown:
                raise AzureConfigError(f"metrics: unknown {unknown}; `aoai-monitor fields --table metrics` lists them")
            metrics = tuple(schema.METRICS_BY_AZURE_NAME[m.lower()] for m in wanted)
        batch = str(cfg.get("batch", "auto")).lower()
        batch = {"true": "always", "false": "never"}.get(batch, batch)
        if batch not in ("auto", "always", "never"):
            raise AzureConfigError("batch must be auto, always (true) or never (false)")
        s = cls(name=str(cfg.get("name") or "azure_monitor"), raw=cfg, endpoints=resolve_endpoints(cfg),
                subscriptions=subs, resource_ids=ids, resource_groups=_list(cfg.get("resource_groups")),
                metrics=metrics, batch=batch, timegrain=grain, ca_bundle=cfg.get("ca_bundle") or None,
                namespace=str(cfg.get("namespace") or "default"))
        for key in ("period", "refresh_list_interval", "ingestion_delay", "lookback", "max_catchup",
                    "max_query_span", "max_retry_wait"):
            if key in cfg:
                setattr(s, key, _seconds(cfg[key], key))
        for key, typ in (("top", int), ("max_concurrency", int), ("max_retries", int), ("max_calls_per_second", float)):
            if key in cfg:
                setattr(s, key, typ(cfg[key]))
        if s.period < s.grain_s or s.max_query_span < s.grain_s:
            raise AzureConfigError(f"period and max_query_span must be at least the time grain ({s.grain_s:.0f}s)")
        return s


# --------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class QueryGroup:
    """Metrics one call can ask together: same aggregations (getBatch rule) and same dimensions (filter)."""
    metrics: tuple[str, ...]
    aggregations: tuple[str, ...]
    dimensions: tuple[str, ...]

    @property
    def filter(self) -> str:
        return " and ".join(f"{d} eq '*'" for d in self.dimensions)


def plan_groups(metrics: Iterable[schema.Metric]) -> list[QueryGroup]:
    """Split each metric's aggregations into additive (Total) and statistical (Average/Min/Max) parts, so a metric
    with both (ActiveTokens) rides along in two groups without an extra call; chunk groups to ≤ 20 names."""
    buckets: dict[tuple, list[str]] = {}
    for m in metrics:
        dims = tuple(sorted(m.dimensions))
        for part in (("Total", "Count"), ("Average", "Minimum", "Maximum")):
            aggs = tuple(a for a in part if a in m.aggregations)
            if aggs:
                buckets.setdefault((aggs, dims), []).append(m.azure_name)
    groups = []
    for (aggs, dims), names in sorted(buckets.items()):
        for i in range(0, len(names), MAX_METRICS_PER_CALL):
            groups.append(QueryGroup(tuple(names[i:i + MAX_METRICS_PER_CALL]), aggs, dims))
    return groups


@dataclass(frozen=True)
class Account:
    id: str  # as ARM returns it
    name: str
    kind: str
    location: str
    subscription_id: str
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return self.id.lower()


def floor_to(ts: float, step: float) -> float:
    return math.floor(ts / step) * step


def planned_calls(accounts: Iterable[Account], groups: int) -> int:
    """The batch bound: Σ over (subscription, region) of ceil(resources / 50) × groups."""
    per = Counter((a.subscription_id.lower(), a.location.lower()) for a in accounts)
    return sum(math.ceil(n / MAX_BATCH_RESOURCES) * groups for n in per.values())


# --------------------------------------------------------------------------------------------------
# Cycle statistics
# --------------------------------------------------------------------------------------------------

@dataclass
class CycleStats:
    started_ms: int = 0
    calls: Counter = field(default_factory=Counter)  # HTTP attempts by kind: batch, arm_metrics, arm_list
    throttled: int = 0
    server_errors: int = 0
    retries: int = 0
    retry_wait_s: float = 0.0
    failed_chunks: int = 0
    top_raised: int = 0
    points: int = 0
    skipped_zero_points: int = 0
    stored: int = 0
    duplicates: int = 0
    resources: int = 0
    planned_batch_calls: int = 0
    window_end_ms: int | None = None
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def snapshot(self) -> dict:
        return {"started_ms": self.started_ms, "api_calls": sum(self.calls.values()), "calls_by_kind": dict(self.calls),
                "planned_batch_calls": self.planned_batch_calls, "throttled": self.throttled,
                "server_errors": self.server_errors, "retries": self.retries,
                "retry_wait_s": round(self.retry_wait_s, 2), "failed_chunks": self.failed_chunks,
                "top_raised": self.top_raised, "points": self.points, "skipped_zero_points": self.skipped_zero_points,
                "stored": self.stored, "duplicates": self.duplicates, "resources": self.resources,
                "window_end_ms": self.window_end_ms, "errors": self.errors[:10], "duration_s": round(self.duration_s, 3)}


class _NoBatch(Exception):
    """The regional batch host is not there (sovereign or private cloud without getBatch)."""


def _retry_after(response) -> float | None:
    if response is None:
        return None
    headers = response.headers
    for key, scale in (("retry-after-ms", 0.001), ("x-ms-retry-after-ms", 0.001), ("Retry-After", 1.0)):
        value = headers.get(key)
        if not value:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            try:
                return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
            except (TypeError, ValueError):
                continue
    return None


# --------------------------------------------------------------------------------------------------
# The collector
# --------------------------------------------------------------------------------------------------

class AzureMonitorCollector:
    """Discovers accounts, plans calls, fetches with the real SDK clients and commits documents + state.

    `clock` (epoch seconds) and `sleep` exist so a simulated day runs in minutes against the stand-in.
    """

    def __init__(self, settings: MonitorSettings, store, status: dict | None = None, *,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], Awaitable] = asyncio.sleep,
                 on_progress: Callable[[str], None] | None = None):
        self.s = settings
        self.store = store
        self.status = status if status is not None else {}
        self.clock = clock
        self.sleep = sleep
        self.on_progress = on_progress or (lambda text: None)
        self.groups = plan_groups(settings.metrics)
        self.accounts: list[Account] = []
        self.warnings: list[str] = []
        self._listed_at: float | None = None
        self._no_batch_until: dict[str, float] = {}
        self._top: dict[QueryGroup, int] = {}
        self._sem = asyncio.Semaphore(max(1, settings.max_concurrency))
        self._pace_lock = asyncio.Lock()
        self._next_slot = 0.0
        self._stats = CycleStats()
        self._session = None
        self._credential = None
        self._metrics_clients: dict[str, Any] = {}
        self._arm_clients: dict[str, Any] = {}
        self._arm = None
        self.cycles = 0

    # --- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> "AzureMonitorCollector":
        import aiohttp
        from azure.core import AsyncPipelineClient
        from azure.core.pipeline.policies import AsyncBearerTokenCredentialPolicy, UserAgentPolicy

        # One TLS context and one connection pool for every client (the aiohttp transport would otherwise
        # build a new SSL context per request when given a CA path, defeating connection reuse).
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context(self.s.ca_bundle),
                                                                             limit=max(8, self.s.max_concurrency * 2)))
        self._credential = async_credential(self.s.raw, self.s.endpoints, self._transport())
        self._arm = AsyncPipelineClient(base_url=self.s.endpoints.arm_endpoint, transport=self._transport(), policies=[
            UserAgentPolicy(sdk_moniker="aoai-monitor"),
            AsyncBearerTokenCredentialPolicy(self._credential, self.s.endpoints.arm_scope)])
        return self

    async def __aexit__(self, *exc) -> None:
        for client in [*self._metrics_clients.values(), *self._arm_clients.values(), self._arm]:
            if client is not None:
                await client.close()
        if self._credential is not None:
            await self._credential.close()
        if self._session is not None:
            await self._session.close()

    def _transport(self):
        from azure.core.pipeline.transport import AioHttpTransport

        return AioHttpTransport(session=self._session, session_owner=False)

    def _metrics_client(self, region: str):
        from azure.monitor.querymetrics.aio import MetricsClient

        if region not in self._metrics_clients:
            self._metrics_clients[region] = MetricsClient(
                self.s.endpoints.metrics_endpoint(region), self._credential, audience=self.s.endpoints.metrics_audience,
                transport=self._transport(), retry_total=0)
        return self._metrics_clients[region]

    def _arm_metrics_client(self, subscription: str):
        from azure.mgmt.monitor.aio import MonitorManagementClient

        if subscription not in self._arm_clients:
            self._arm_clients[subscription] = MonitorManagementClient(
                self._credential, subscription, base_url=self.s.endpoints.arm_endpoint,
                credential_scopes=[self.s.endpoints.arm_scope], transport=self._transport(), retry_total=0)
        return self._arm_clients[subscription]

    # --- calls: pacing, retries, counting ----------------------------------------------------------

    async def _pace(self) -> None:
        if self.s.max_calls_per_second <= 0:
            return
        async with self._pace_lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self.s.max_calls_per_second
        if slot > now:
            await asyncio.sleep(slot - now)

    async def _call(self, kind: str, make: Callable[[], Awaitable], what: str):
        from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError, ServiceRequestError,
                                           ServiceResponseError)

        stats = self._stats
        for attempt in range(self.s.max_retries + 1):
            await self._pace()
            async with self._sem:
                stats.calls[kind] += 1
                try:
                    return await make()
                except ClientAuthenticationError as exc:
                    raise AzureMonitorError(f"{what}: {describe_auth_error(exc, self.s.endpoints)}") from None
                except HttpResponseError as exc:
                    status = exc.status_code or 0
                    if status in THROTTLE_STATUSES:
                        stats.throttled += 1
                    elif status >= 500:
                        stats.server_errors += 1
                    if kind == "batch" and status in NO_BATCH_STATUSES:
                        raise _NoBatch(f"HTTP {status}") from None
                    if status in (401, 403):
                        raise AzureMonitorError(f"{what}: {describe_auth_error(exc, self.s.endpoints, self._sub_of(what))}") from None
                    if status not in RETRY_STATUSES or attempt == self.s.max_retries:
                        raise AzureMonitorError(f"{what}: HTTP {status} {_first_line(exc.message)} "
                                                f"(gave up after {attempt + 1} attempt(s); the window is retried next cycle)") from None
                    wait = _retry_after(exc.response)
                except (ServiceRequestError, ServiceResponseError) as exc:
                    text = str(exc)
                    if "CERTIFICATE_VERIFY_FAILED" in text:
                        raise AzureMonitorError(f"{what}: TLS certificate not trusted — set ca_bundle to the PEM "
                                                "file of the CA that signed the endpoint's certificate") from None
                    if kind == "batch" and isinstance(exc, ServiceRequestError) and attempt >= 1:
                        raise _NoBatch(_first_line(text)) from None
                    if attempt == self.s.max_retries:
                        raise AzureMonitorError(f"{what}: cannot reach the endpoint ({_first_line(text)}); check "
                                                "the network, proxy and endpoint settings") from None
                    wait = None
            if wait is None:
                wait = min(self.s.max_retry_wait, 0.5 * 2 ** attempt) * (0.5 + random.random() / 2)
            wait = min(wait, self.s.max_retry_wait)
            stats.retries += 1
            stats.retry_wait_s += wait
            await self.sleep(wait)
        raise AssertionError("unreachable")

    @staticmethod
    def _sub_of(what: str) -> str | None:
        parts = what.split("/")
        return parts[parts.index("subscriptions") + 1] if "subscriptions" in parts else None

    # --- discovery ---------------------------------------------------------------------------------

    async def discover(self) -> list[Account]:
        """Every OpenAI / AIServices account in the configured scope (tags kept); keeps the old list on failure."""
        from azure.core.rest import HttpRequest

        found: dict[str, Account] = {}
        scopes = []
        for sub in self.s.subscriptions:
            if self.s.resource_groups and not self.s.resource_ids:
                scopes += [f"/subscriptions/{sub}/resourceGroups/{rg}" for rg in self.s.resource_groups]
            else:
                scopes.append(f"/subscriptions/{sub}")
        for scope in scopes:
            url = f"{self.s.endpoints.arm_endpoint}{scope}/resources"
            params = {"$filter": f"resourceType eq '{METRIC_NAMESPACE}'", "api-version": ARM_RESOURCES_API}
            while url:
                request = HttpRequest("GET", url, params=params)

                async def send(request=request):
                    response = await self._arm.send_request(request)
                    await response.read()
                    response.raise_for_status()
                    return response.json()

                page = await self._call("arm_list", send, f"list accounts in {scope}")
                for item in page.get("value", []):
                    if str(item.get("kind", "")).lower() not in OPENAI_KINDS:
                        continue
                    rid = item["id"]
                    sub = rid.split("/")[2]
                    found[rid.lower()] = Account(rid, item.get("name", rid.rsplit("/", 1)[-1]), item.get("kind", ""),
                                                 str(item.get("location", "")).replace(" ", "").lower(), sub,
                                                 tuple(sorted((item.get("tags") or {}).items())))
                url, params = page.get("nextLink"), None
        warnings = []
        if self.s.resource_ids:
            wanted = {r.lower(): r for r in self.s.resource_ids}
            missing = [r for k, r in wanted.items() if k not in found]
            if missing:
                warnings.append(f"not found or not an Azure OpenAI (kind OpenAI/AIServices) account visible to the "
                                f"app: {', '.join(missing)} — check the ids and the app's role assignments")
            found = {k: v for k, v in found.items() if k in wanted}
        if not found:
            warnings.append("no Azure OpenAI accounts found in the configured scope: check subscription_id, "
                            "resource_groups / resource_ids and that the app has Monitoring Reader there")
        self.warnings = warnings
        self.accounts = sorted(found.values(), key=lambda a: a.key)
        self._listed_at = self.clock()
        return self.accounts

    # --- one cycle ---------------------------------------------------------------------------------

    def _state_key(self, account: Account) -> str:
        return f"azure_monitor/{self.s.name}/window/{account.key}"

    def window_end(self, now: float) -> float:
        return floor_to(now - self.s.ingestion_delay, self.s.grain_s)

    async def run_cycle(self, since: float | None = None) -> dict:
        """Collect every complete window since the last one committed; returns the cycle's statistics."""
        self._stats = stats = CycleStats(started_ms=int(self.clock() * 1000))
        t0 = time.monotonic()
        try:
            if self._listed_at is None or self.clock() - self._listed_at >= self.s.refresh_list_interval:
                self.on_progress("listing Azure OpenAI accounts")
                try:
                    await self.discover()
                except AzureMonitorError as exc:
                    if self._listed_at is None:
                        raise
                    stats.errors.append(f"resource list refresh failed, using the previous list: {exc}")
            stats.resources = len(self.accounts)
            stats.planned_batch_calls = planned_calls(self.accounts, len(self.groups))
            end = self.window_end(self.clock())
            stats.window_end_ms = int(end * 1000)
            state = await asyncio.to_thread(self.store.state_items, f"azure_monitor/{self.s.name}/window/")
            work = self._plan(end, state, since)
            total = len(work)
            done = 0

            async def run(item):
                nonlocal done
                await self._collect_chunk(*item)
                done += 1
                self.on_progress(f"{done}/{total} chunk(s), {sum(stats.calls.values())} API call(s), "
                                 f"{stats.stored} new point(s)")

            # Spans of one chunk must commit in order (state moves forward); chunks run concurrently.
            chains: dict[tuple, list] = {}
            for item in work:
                chains.setdefault(item[0], []).append(item)

            async def chain(items):
                for item in items:
                    if not await self._guarded(run, item):
                        break

            await asyncio.gather(*(chain(items) for items in chains.values()))
        finally:
            stats.duration_s = time.monotonic() - t0
            self.cycles += 1
            self._publish(stats)
        return stats.snapshot()

    async def _guarded(self, run, item) -> bool:
        try:
            await run(item)
            return True
        except AzureMonitorError as exc:
            self._stats.failed_chunks += 1
            self._stats.errors.append(str(exc))
            log.warning("azure_monitor %s: %s", self.s.name, exc)
            return False

    def _plan(self, end: float, state: dict, since: float | None) -> list[tuple]:
        """(chunk key, accounts, start, end) per ≤ 50 accounts of one subscription+region+start, per span."""
        grain = self.s.grain_s
        first = since if since is not None else self.s.period
        catchup = max(self.s.max_catchup, since or 0)
        by_start: dict[tuple, list[Account]] = {}
        for acc in self.accounts:
            saved = state.get(self._state_key(acc))
            if isinstance(saved, dict) and saved.get("end"):
                start = saved["end"] / 1000 - self.s.lookback
            else:
                start = end - first
            start = floor_to(max(start, end - catchup), grain)
            if start >= end:
                continue
            by_start.setdefault((acc.subscription_id.lower(), acc.location, start), []).append(acc)
        work = []
        for (sub, region, start), accs in sorted(by_start.items()):
            for i in range(0, len(accs), MAX_BATCH_RESOURCES):
                chunk = tuple(accs[i:i + MAX_BATCH_RESOURCES])
                key = (sub, region, start, i)
                t = start
                while t < end:
                    span_end = min(end, t + floor_to(self.s.max_query_span, grain))
                    work.append((key, chunk, t, span_end))
                    t = span_end
        return work

    async def _collect_chunk(self, key: tuple, chunk: tuple[Account, ...], start: float, end: float) -> None:
        region = chunk[0].location
        use_batch = self.s.batch == "always" or (
            self.s.batch == "auto" and self._no_batch_until.get(region, 0) <= self.clock())
        results = None
        if use_batch:
            try:
                results = await _all(self._batch_group(g, chunk, start, end) for g in self.groups)
            except _NoBatch as exc:
                if self.s.batch == "always":
                    raise AzureMonitorError(f"batch metrics endpoint {self.s.endpoints.metrics_endpoint(region)} "
                                            f"unavailable ({exc}); set metrics_endpoint, or batch = \"auto\"") from None
                self._no_batch_until[region] = self.clock() + self.s.refresh_list_interval
                self._stats.errors.append(f"batch endpoint for {region} unavailable ({exc}): per-resource ARM queries")
        if results is None:
            results = await _all(self._arm_group(g, acc, start, end) for g in self.groups for acc in chunk)
        points: dict[tuple, dict] = {}
        for group_points in results:
            for rid, metric, dims, ts_ms, values in group_points:
                if not start * 1000 <= ts_ms < end * 1000:
                    continue
                k = (rid.lower(), metric.lower(), tuple(sorted((d.lower(), v) for d, v in dims.items())), ts_ms)
                entry = points.setdefault(k, {"rid": rid, "metric": metric, "dims": dims, "ts": ts_ms, "values": {}})
                entry["values"].update(values)
        docs = self._documents(chunk, points.values())
        state = {self._state_key(acc): {"end": int(end * 1000)} for acc in chunk}
        result = await asyncio.to_thread(self.store.commit, metrics=docs, state=state)
        self._stats.stored += result.stored.get("metrics", 0)
        self._stats.duplicates += result.duplicates.get("metrics", 0)

    def _documents(self, chunk: tuple[Account, ...], points: Iterable[dict]) -> list[dict]:
        accounts = {a.key: a for a in chunk}
        docs = []
        period_ms = int(self.s.period * 1000)
        for p in points:
            self._stats.points += 1
            values = p["values"]
            # Total 0 with nothing else = "no data yet" as often as "no traffic": storing it would block the
            # real value that arrives later under the same id.
            if not any(v for a, v in values.items() if a in ("Total", "Count")) and not any(
                    a in values for a in ("Average", "Minimum", "Maximum")):
                self._stats.skipped_zero_points += 1
                continue
            acc = accounts.get(p["rid"].lower())
            metric = schema.METRICS_BY_AZURE_NAME.get(p["metric"].lower())
            doc = metric_document(resource_id=acc.id if acc else p["rid"],
                                  metric_name=metric.azure_name if metric else p["metric"],
                                  timestamp_ms=p["ts"], timegrain=self.s.timegrain, dimensions=p["dims"],
                                  values=values, source="azure_monitor", period_ms=period_ms,
                                  region=acc.location if acc else None, kind=acc.kind if acc else None,
                                  tags=dict(acc.tags) if acc and acc.tags else None)
            doc["data_stream.namespace"] = self.s.namespace
            docs.append(doc)
        return docs

    # --- fetching ----------------------------------------------------------------------------------

    def _top_for(self, group: QueryGroup) -> int:
        return self._top.get(group, self.s.top)

    def _saturated(self, group: QueryGroup, top: int, series_counts: Iterable[int]) -> bool:
        """Azure silently truncates at `top` series per metric and resource: raise it and ask again.
        `top` is the value the call used (another chunk may have raised the group's since)."""
        if top < MAX_TOP and any(n >= top for n in series_counts):
            self._top[group] = max(self._top_for(group), min(MAX_TOP, top * 10))
            self._stats.top_raised += 1
            return True
        return False

    async def _batch_group(self, group: QueryGroup, chunk: tuple[Account, ...], start: float, end: float) -> list:
        client = self._metrics_client(chunk[0].location)
        span = (_dt(start), _dt(end))
        while True:
            top = self._top_for(group)
            results = await self._call("batch", lambda: client.query_resources(
                resource_ids=[a.id for a in chunk], metric_namespace=METRIC_NAMESPACE, metric_names=list(group.metrics),
                timespan=span, granularity=timedelta(seconds=self.s.grain_s), aggregations=list(group.aggregations),
                max_results=top, filter=group.filter),
                f"getBatch {chunk[0].location} /subscriptions/{chunk[0].subscription_id} ({len(chunk)} resources, "
                f"{len(group.metrics)} metrics)")
            metrics = [m for r in results for m in r.metrics]
            if not self._saturated(group, top, (len(m.timeseries) for m in metrics)):
                break
        out = []
        for m in metrics:
            rid = _resource_of(m.id)
            for series in m.timeseries:
                dims = dict(series.metadata_values or {})
                for point in series.data:
                    values = {a: getattr(point, _AGG_ATTR[a]) for a in group.aggregations
                              if getattr(point, _AGG_ATTR[a]) is not None}
                    if values:
                        out.append((rid, m.name, dims, int(point.timestamp.timestamp() * 1000), values))
        return out

    async def _arm_group(self, group: QueryGroup, acc: Account, start: float, end: float) -> list:
        client = self._arm_metrics_client(acc.subscription_id)
        timespan = f"{_iso(start)}/{_iso(end)}"
        interval = self.s.timegrain
        while True:
            top = self._top_for(group)
            response = await self._call("arm_metrics", lambda: client.metrics.list(
                acc.id, timespan=timespan, interval=interval, metricnames=",".join(group.metrics),
                aggregation=",".join(group.aggregations), top=top, filter=group.filter,
                metricnamespace=METRIC_NAMESPACE), f"ARM metrics {acc.id}")
            if not self._saturated(group, top, (len(m.timeseries or []) for m in response.value)):
                break
        out = []
        for m in response.value:
            for series in m.timeseries or []:
                dims = {md.name.value: md.value for md in (series.metadatavalues or [])}
                for point in series.data or []:
                    values = {a: getattr(point, _AGG_ATTR[a]) for a in group.aggregations
                              if getattr(point, _AGG_ATTR[a]) is not None}
                    if values:
                        out.append((acc.id, m.name.value, dims, int(point.time_stamp.timestamp() * 1000), values))
        return out

    # --- status ------------------------------------------------------------------------------------

    def _publish(self, stats: CycleStats) -> None:
        snap = stats.snapshot()
        self.status.update({
            "input": self.s.name, "type": "azure_monitor", "cycles": self.cycles, "resources": len(self.accounts),
            "regions": sorted({a.location for a in self.accounts}), "groups": len(self.groups),
            "last_cycle": snap, "warnings": list(self.warnings),
            "error": "; ".join(stats.errors[:3]) or None,
            "api_calls_total": self.status.get("api_calls_total", 0) + snap["api_calls"],
        })
        try:
            self.store.commit(state={f"azure_monitor/{self.s.name}/last_cycle": snap})
        except Exception as exc:  # status is informative; the data commit already reported its own failures
            log.warning("azure_monitor %s: cannot record cycle status: %s", self.s.name, exc)

    def seconds_until_next_cycle(self) -> float:
        now = self.clock()
        return max(1.0, floor_to(now, self.s.period) + self.s.period - now)


async def _all(coros: Iterable[Awaitable]) -> list:
    """All results, or the first failure with the sibling calls cancelled (no calls wasted in an outage)."""
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(c) for c in coros]
    except BaseExceptionGroup as eg:
        errors = list(eg.exceptions)
        raise next((e for e in errors if isinstance(e, _NoBatch)), errors[0]) from None
    return [t.result() for t in tasks]


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0][:300] if (text or "").strip() else ""


def _resource_of(metric_id: str) -> str:
    """MetricsQueryResult has no resource id: it is the prefix of each metric's id."""
    low = metric_id.lower()
    i = low.find("/providers/microsoft.insights/metrics/")
    return metric_id[:i] if i >= 0 else metric_id


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def _iso(ts: float) -> str:
    return _dt(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------------
# Entry points: the service and the CLI
# --------------------------------------------------------------------------------------------------

async def _wait(stop_event, seconds: float) -> None:
    if isinstance(stop_event, asyncio.Event):
        try:
            await asyncio.wait_for(stop_event.wait(), seconds)
        except asyncio.TimeoutError:
            pass
    else:  # a threading.Event
        deadline = time.monotonic() + seconds
        while not stop_event.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(min(0.5, deadline - time.monotonic()))


async def run_azure_monitor_input(config: dict, store, status: dict, stop_event,
                                  on_cycle: Callable[[dict], None] | None = None) -> None:
    """One `[[inputs.azure_monitor]]` section, until stop_event is set (called by the service)."""
    settings = MonitorSettings.from_config(config)
    async with AzureMonitorCollector(settings, store, status) as collector:
        while not stop_event.is_set():
            try:
                await collector.run_cycle()
            except AzureMonitorError as exc:
                status["error"] = str(exc)
                log.warning("azure_monitor %s: %s", settings.name, exc)
            if on_cycle:
                on_cycle(status)
            await _wait(stop_event, collector.seconds_until_next_cycle())


async def run_input(service, section: dict) -> None:
    """service.COMPONENTS adapter: every section concurrently; each cycle also feeds the service's
    per-input status row (`status:<name>:metrics`, shown by `aoai-monitor status`)."""
    async def one(config: dict) -> None:
        name = str(config.get("name") or "azure_monitor")
        row = service.status.get(name, "metrics")

        def on_cycle(status: dict) -> None:
            cycle = status.get("last_cycle") or {}
            row.add(cycle.get("stored", 0), 0)
            row.last_processed_ms = cycle.get("window_end_ms") or row.last_processed_ms
            row.checkpoint_ms = int(time.time() * 1000)
            row.error = status.get("error")

        try:
            await run_azure_monitor_input(config, service.store, {}, service.stopping, on_cycle)
        except AzureConfigError as exc:
            row.error = f"configuration: {exc}"
            log.error("azure_monitor %s: %s", name, exc)

    await asyncio.gather(*(one(c) for c in section.get("inputs", [])))


def _cli():
    import click

    @click.group("metrics")
    def metrics_group() -> None:
        """Azure Monitor platform metrics of Azure OpenAI accounts."""

    @metrics_group.command("collect")
    @click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                  help="TOML file with [[inputs.azure_monitor]] sections (and [store] path).")
    @click.option("--input", "input_name", default=None, help="Only the section with this name.")
    @click.option("--store", "store_path", default=None, envvar="AOAI_MONITOR_STORE", help="DuckDB store file.")
    @click.option("--once", is_flag=True, help="One cycle (catching up every complete window), then exit.")
    @click.option("--since", default=None, metavar="DURATION",
                  help="For accounts without saved state, start this far back (e.g. 1h, 2d; Azure keeps 93 days).")
    @click.option("--subscription-id", default=None, help="Without --config: the subscription to watch.")
    @click.option("--tenant-id", default=None)
    @click.option("--client-id", default=None, help="App registration; the secret comes from AZURE_CLIENT_SECRET. "
                  "Without it, DefaultAzureCredential (managed identity, Azure CLI …) is used.")
    @click.option("--resource-id", "resource_ids", multiple=True, help="Only these accounts (repeatable).")
    @click.option("--resource-group", "resource_groups", multiple=True, help="Only these resource groups (repeatable).")
    @click.option("--cloud", default=None, help="AzureCloud, AzureUSGovernment or AzureChinaCloud.")
    @click.option("--ca-bundle", default=None, help="PEM file of extra CAs to trust.")
    def collect(config_path, input_name, store_path, once, since, subscription_id, tenant_id, client_id,
                resource_ids, resource_groups, cloud, ca_bundle) -> None:
        """Collect Azure OpenAI platform metrics into the store (idempotent; resumes where it stopped)."""
        from ..cli import fail
        from ..store import DEFAULT_PATH, Store, StoreError

        sections: list[dict] = []
        if config_path:
            from ..config import ConfigError, load

            try:
                cfg = load(config_path, store_path=store_path)
            except ConfigError as exc:
                fail(str(exc))
            store_path = cfg.store_path
            sections = [s for s in cfg.azure_monitor if not input_name or s.get("name", "azure_monitor") == input_name]
            if not sections:
                fail(f"{config_path} has no [[inputs.azure_monitor]] section" + (f" named {input_name}" if input_name else ""))
        flags = {k: v for k, v in {"subscription_id": subscription_id, "tenant_id": tenant_id, "client_id": client_id,
                                   "resource_ids": list(resource_ids) or None,
                                   "resource_groups": list(resource_groups) or None, "cloud": cloud,
                                   "ca_bundle": ca_bundle}.items() if v}
        sections = [dict(s, **flags) for s in sections] or [flags]
        try:
            since_s = parse_duration(since) if since else None
            settings = [MonitorSettings.from_config(s) for s in sections]
            store = Store(store_path or DEFAULT_PATH)
        except (AzureConfigError, ValueError, StoreError) as exc:
            fail(str(exc))
        from rich.console import Console

        console = Console(stderr=True)
        failed = False
        with store, console.status("starting") as live:
            async def main() -> None:
                nonlocal failed
                for s in settings:
                    status: dict = {}
                    async with AzureMonitorCollector(s, store, status, on_progress=lambda t, n=s.name: live.update(
                            f"[bold]{n}[/]: {t}")) as collector:
                        while True:
                            try:
                                snap = await collector.run_cycle(since=since_s)
                            except AzureMonitorError as exc:
                                console.print(f"[red]error[/] {s.name}: {exc}")
                                failed = True
                                break
                            _report(console, s, collector, snap)
                            failed = failed or bool(snap["failed_chunks"])
                            if once:
                                break
                            wait = collector.seconds_until_next_cycle()
                            live.update(f"[bold]{s.name}[/]: next cycle in {wait:.0f}s (Ctrl-C stops)")
                            await asyncio.sleep(wait)

            try:
                asyncio.run(main())
            except KeyboardInterrupt:
                pass
        if failed:
            fail("some windows were not collected (see the errors above); they are retried on the next run")

    return metrics_group


def _report(console, settings: MonitorSettings, collector: AzureMonitorCollector, snap: dict) -> None:
    regions = len({a.location for a in collector.accounts})
    end = datetime.fromtimestamp(snap["window_end_ms"] / 1000, timezone.utc).strftime("%H:%M") if snap["window_end_ms"] else "-"
    console.print(f"{settings.name}: {snap['resources']} account(s) in {regions} region(s), window to {end}Z: "
                  f"{snap['api_calls']} API call(s) {snap['calls_by_kind']} (batch bound {snap['planned_batch_calls']}), "
                  f"{snap['throttled']} throttled, {snap['retries']} retried; {snap['stored']} point(s) stored, "
                  f"{snap['duplicates']} already stored, {snap['skipped_zero_points']} empty skipped")
    for warning in collector.warnings:
        console.print(f"[yellow]warning[/] {warning}")
    for error in snap["errors"]:
        console.print(f"[red]error[/] {error}")


metrics_cli = _cli()
