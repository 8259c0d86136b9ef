"""`aoai-monitor demo-data`: a realistic week of Azure OpenAI traffic, through the production path.

The generator writes RAW Azure records (RequestResponse with stringified properties, ticks and masked
IPs; Audit; AzureOpenAIRequestUsage; APIM GatewayLogs with request/response bodies; GatewayLlmLogs) as
storage-archive NDJSON blobs and feeds them to `normalize_payload`, so the demo exercises exactly what
production ingests. Metric points (PT1M, every metric in schema.METRICS) are aggregated from the same
generated requests, so requests and tokens per deployment and minute match the logs.

Scenario: three accounts in eastus and swedencentral over two subscriptions, an APIM instance in front
of the eastus production account, diurnal and weekly load, a 429 burst on the PTU deployment
(utilization ≥ 100 %), a latency incident on one deployment and content-filter hits (all four
categories, input and output side). Deterministic for a given seed and end time.
"""

from __future__ import annotations

import math
import random
import sys
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

import click
import orjson

from . import schema
from .normalize import metric_document, normalize_payload
from .normalize.common import TICKS_AT_UNIX_EPOCH
from .store import DEFAULT_PATH, Store

MINUTE_MS = 60_000
BATCH_DOCS = 50_000
CATEGORIES = schema.CONTENT_FILTER_CATEGORIES
API_VERSION = "2024-10-21"
API_NAME = f"Azure OpenAI API version {API_VERSION}"
SEVERITIES = ("low", "medium", "high")


@dataclass(frozen=True)
class Account:
    name: str
    subscription: str
    group: str
    region: str
    region_display: str
    kind: str
    caller_prefix: str  # first three octets; Azure masks the last one
    utc_offset: int  # hours, for the diurnal curve

    @property
    def resource_id(self) -> str:
        return (f"/SUBSCRIPTIONS/{self.subscription}/RESOURCEGROUPS/{self.group}/PROVIDERS/"
                f"MICROSOFT.COGNITIVESERVICES/ACCOUNTS/{self.name}").upper()


@dataclass(frozen=True)
class Deployment:
    account: Account
    name: str
    model: str
    version: str
    sku: str
    peak_rpm: float  # requests per minute at the weekday peak, scale 1
    prompt_tokens: int  # median
    completion_tokens: int  # median (0 for embeddings)
    base_ms: float  # latency floor
    ms_per_token: float
    apim: bool = False
    ptu: int = 0

    @property
    def chat(self) -> bool:
        return self.completion_tokens > 0

    @property
    def operation(self) -> str:
        return "ChatCompletions_Create" if self.chat else "Embeddings_Create"


SUB_PROD = "3F2B8C1D-6A4E-4F0B-9C7D-2E5A1B8F9D40"
SUB_DEV = "8C9D0E1F-2A3B-4C5D-8E6F-7A8B9C0D1E2F"
EASTUS = Account("contoso-aoai-eastus", SUB_PROD, "rg-ai-prod", "eastus", "East US", "AIServices", "20.236.11", -5)
SWEDEN = Account("contoso-aoai-swedencentral", SUB_PROD, "rg-ai-eu", "swedencentral", "Sweden Central", "OpenAI", "51.12.73", 1)
DEV = Account("fabrikam-aoai-dev", SUB_DEV, "rg-ai-dev", "eastus", "East US", "OpenAI", "40.76.4", -5)
ACCOUNTS = (EASTUS, SWEDEN, DEV)
DEPLOYMENTS = (
    Deployment(EASTUS, "gpt-4o", "gpt-4o", "2024-11-20", "GlobalStandard", 3.0, 900, 260, 450, 14, apim=True),
    Deployment(EASTUS, "gpt-4o-ptu", "gpt-4o", "2024-08-06", "ProvisionedManaged", 2.6, 1400, 320, 300, 9, apim=True, ptu=100),
    Deployment(EASTUS, "text-embedding-3-large", "text-embedding-3-large", "1", "Standard", 3.0, 350, 0, 60, 0),
    Deployment(SWEDEN, "gpt-4o-mini", "gpt-4o-mini", "2024-07-18", "DataZoneStandard", 4.0, 700, 220, 250, 7),
    Deployment(SWEDEN, "o3-mini", "o3-mini", "2025-01-31", "GlobalStandard", 0.9, 1200, 900, 1800, 11),
    Deployment(SWEDEN, "gpt-4o", "gpt-4o", "2024-11-20", "GlobalStandard", 1.2, 800, 240, 480, 15),
    Deployment(DEV, "gpt-4o-mini", "gpt-4o-mini", "2024-07-18", "DataZoneStandard", 0.8, 600, 200, 260, 7),
    Deployment(DEV, "o3-mini", "o3-mini", "2025-01-31", "GlobalStandard", 0.3, 1000, 800, 1900, 11),
)
LATENCY_INCIDENT = 3  # sweden gpt-4o-mini
PTU = 1
APIM_ID = (f"/SUBSCRIPTIONS/{SUB_PROD}/RESOURCEGROUPS/RG-AI-PROD/PROVIDERS/MICROSOFT.APIMANAGEMENT/SERVICE/CONTOSO-APIM").upper()
APIM_HOST = "contoso-apim.azure-api.net"
APIM_PRODUCTS = (("support-bot", "sub-support-prod"), ("code-assist", "sub-engineering"), ("doc-summarizer", "sub-knowledge"))
CLIENT_IPS = ("89.160.20.156", "81.2.69.144", "175.16.199.7", "216.160.83.61", "67.43.156.12")
PROMPTS = (
    ("You are a helpful support agent for Contoso Bikes.", "My order #{n} has not arrived yet, can you check the status?"),
    ("You are a helpful support agent for Contoso Bikes.", "How do I reset the gear shifter on model E-{n}?"),
    ("You are a senior Python reviewer.", "Why does my asyncio task never finish? Attempt {n}."),
    ("You are a senior Python reviewer.", "Refactor this function to avoid the N+1 query in invoice {n}."),
    ("Summarize documents in three bullet points.", "Summarize the Q{q} incident report for the payments team."),
    ("Summarize documents in three bullet points.", "Summarize meeting notes {n} for the steering committee."),
)
ANSWERS = ("I checked your order: it ships tomorrow and arrives within 2 business days.",
           "Hold the shifter button for five seconds until the LED blinks twice, then release.",
           "The task awaits a future nobody resolves; add a timeout and cancel it on shutdown.",
           "Load the line items with a single select_related call instead of one query per row.",
           "- Root cause: expired certificate\n- Impact: 37 minutes\n- Follow-up: automate renewal",
           "- Budget approved\n- Launch moved to May\n- Owners assigned for the pilot")
FILTERED_PROMPTS = {c: f"[demo] a prompt the {c} filter blocks" for c in CATEGORIES}
RAI_EVENTS = ("BlocklistUpdated", "ContentFilterPolicyUpdated")


# --- small helpers ------------------------------------------------------------------------------------

def _iso(ms: int, frac7: int) -> str:
    """Azure's time format: 7 fractional digits and Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{frac7:07d}Z"


def _ticks(ms: float) -> int:
    return TICKS_AT_UNIX_EPOCH + int(ms * 10_000)


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (normal approximation above 30); the demo and the alert simulator share it."""
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _load(dep: Deployment, minute_ms: int) -> float:
    """Relative load 0..1: business hours in the account's region, a third of that at weekends."""
    local = (minute_ms / 3_600_000 + dep.account.utc_offset) % 24
    weekday = time.gmtime(minute_ms // 1000 + dep.account.utc_offset * 3600).tm_wday
    day = max(0.0, math.sin(math.pi * (local - 7) / 12)) if 7 <= local <= 19 else 0.0
    return (0.1 + 0.9 * day) * (0.3 if weekday >= 5 else 1.0)


@dataclass
class _Plan:
    start_ms: int
    end_ms: int
    scale: float

    @property
    def minutes(self) -> int:
        return (self.end_ms - self.start_ms) // MINUTE_MS

    def at(self, fraction: float) -> int:
        return self.start_ms + int(self.minutes * fraction) * MINUTE_MS

    @property
    def latency_window(self) -> tuple[int, int]:
        s = self.at(0.45)
        return s, s + 100 * MINUTE_MS

    @property
    def burst_window(self) -> tuple[int, int]:
        s = self.at(0.72)
        return s, s + 90 * MINUTE_MS

    @property
    def ptu_capacity(self) -> float:
        """Requests per minute the 100 PTUs serve; normal peaks reach about 60 %."""
        return max(DEPLOYMENTS[PTU].peak_rpm * self.scale / 0.6, 2.0)

    def rate(self, i: int, dep: Deployment, minute_ms: int) -> float:
        if i == PTU and self.burst_window[0] <= minute_ms < self.burst_window[1]:
            return self.ptu_capacity * 1.6
        return dep.peak_rpm * self.scale * _load(dep, minute_ms)


def _records_per_request(dep: Deployment) -> float:
    """RequestResponse + AzureOpenAIRequestUsage; APIM adds GatewayLogs and two GatewayLlmLogs rows."""
    return 5.0 if dep.apim else 2.0


def estimate_records(days: float, scale: float) -> int:
    """Expected log records for a window (the rates are deterministic; only the draws are random)."""
    plan = _Plan(0, int(days * 1440) * MINUTE_MS, scale)
    total = 0.0
    for i, dep in enumerate(DEPLOYMENTS):
        per = _records_per_request(dep)
        total += sum(plan.rate(i, dep, m * MINUTE_MS) for m in range(0, plan.minutes, 5)) * 5 * per
    return int(total)


# --- per-minute aggregates for the metrics ---------------------------------------------------------------

class _Agg:
    __slots__ = ("requests", "ttr", "prompt", "completion", "cached", "ttft", "ttlt", "tbt", "tps", "harmful",
                 "rejected", "rai_total")

    def __init__(self):
        self.requests: dict = defaultdict(int)  # (stream, status) → n
        self.ttr: dict = {}  # status → [sum, min, max, n]
        self.prompt = self.completion = self.cached = self.rai_total = 0
        self.ttft, self.ttlt, self.tbt, self.tps = [], [], [], []
        self.harmful: dict = defaultdict(int)  # (text type, category, severity) → n
        self.rejected: dict = defaultdict(int)  # (text type, category) → n


def _stat(values: list[float]) -> dict:
    return {"Average": sum(values) / len(values), "Minimum": min(values), "Maximum": max(values)}


# --- the generator -----------------------------------------------------------------------------------------

class _Generator:
    def __init__(self, plan: _Plan, seed: int):
        self.plan = plan
        self.rng = random.Random(seed)
        self.aggs: dict[tuple[int, int], _Agg] = {}
        self.blobs: dict[tuple[str, str], list[bytes]] = defaultdict(list)  # (category, resource) → lines
        self.metric_docs: list[dict] = []
        # One forced content-filter hit per category and side, so every small run shows all eight.
        self.forced = [(side, cat) for side in ("input", "output") for cat in CATEGORIES]
        self.forced_from = plan.at(0.3)
        self.requests = 0

    def emit(self, category: str, resource: str, record: dict) -> None:
        self.blobs[(category, resource)].append(orjson.dumps(record))

    def minute(self, i: int, dep: Deployment, minute_ms: int) -> None:
        rng, plan = self.rng, self.plan
        rate = plan.rate(i, dep, minute_ms)
        n = poisson(rng, rate) if rate > 0 else 0
        if i == PTU:
            self._ptu_minute(minute_ms, n)
        if not n:
            return
        agg = self.aggs.setdefault((i, minute_ms), _Agg())
        served = n
        if i == PTU:
            served = min(n, int(plan.ptu_capacity))
        incident = i == LATENCY_INCIDENT and plan.latency_window[0] <= minute_ms < plan.latency_window[1]
        for k in range(n):
            self.request(dep, minute_ms + rng.randrange(MINUTE_MS), agg, throttled=k >= served, incident=incident)

    def _ptu_minute(self, minute_ms: int, n: int) -> None:
        """Utilization is emitted every minute (Azure reports idle PTUs as 0 %)."""
        dep, cap = DEPLOYMENTS[PTU], self.plan.ptu_capacity
        util = min(100.0 * n / cap, 100.0 + self.rng.uniform(0, 4)) if n else 0.0
        dims = {"Region": dep.account.region_display, "StreamType": "Non-Streaming", "ModelDeploymentName": dep.name,
                "ModelName": dep.model, "ModelVersion": dep.version}
        values = {"Average": util, "Minimum": util * 0.8, "Maximum": util}
        self.metric(dep, "AzureOpenAIProvisionedManagedUtilizationV2", minute_ms, dims, values)
        self.metric(dep, "ProvisionedUtilization", minute_ms, dims, values)

    def request(self, dep: Deployment, ts: int, agg: _Agg, throttled: bool, incident: bool) -> None:
        rng = self.rng
        self.requests += 1
        corr = _uuid(rng)
        stream = dep.chat and rng.random() < 0.35
        prompt = max(8, int(rng.lognormvariate(math.log(dep.prompt_tokens), 0.6)))
        completion = max(1, int(rng.lognormvariate(math.log(dep.completion_tokens), 0.5))) if dep.chat else 0
        cached = (prompt // 128) * 128 if dep.chat and prompt > 1024 and rng.random() < 0.4 else 0
        status, side, cat, severity = 200, None, None, None
        if throttled:
            status = 429
        elif incident and rng.random() < 0.04:
            status = 503
        elif rng.random() < 0.002:
            status = rng.choice((429, 500, 408))
        elif dep.chat:
            if self.forced and ts >= self.forced_from and dep.apim:
                side, cat = self.forced.pop(0)
            elif rng.random() < 0.012:
                side, cat = rng.choice(("input", "output")), rng.choice(CATEGORIES)
            if side:
                severity = rng.choice(("medium", "high"))
                if side == "input":
                    status = 400
        if status == 200:
            duration = dep.base_ms + completion * dep.ms_per_token * rng.uniform(0.7, 1.4) + rng.expovariate(1 / 80)
            if incident:
                duration *= rng.uniform(6, 10)
        elif status in (429, 400):
            duration = rng.uniform(8, 40) if status == 429 else rng.uniform(150, 500)
        else:
            duration = rng.uniform(2000, 30000) if incident or status == 408 else rng.uniform(50, 600)
        if status != 200:
            completion, cached = 0, 0
            if status != 400:
                prompt = 0
        duration = round(duration)
        stream_type = "Streaming" if stream else "Non-Streaming"
        # metrics aggregates (the same requests as the logs)
        key = (stream_type, str(status))
        agg.requests[key] += 1
        t = agg.ttr.get(key[1])
        ttfb = duration * (0.25 if stream else 1.0) if status == 200 else duration
        if t is None:
            agg.ttr[key[1]] = [ttfb, ttfb, ttfb, 1]
        else:
            t[0] += ttfb
            t[1] = min(t[1], ttfb)
            t[2] = max(t[2], ttfb)
            t[3] += 1
        if status in (200, 400):
            agg.prompt += prompt
            agg.completion += completion
            agg.cached += cached
        if status == 200 and dep.chat:
            agg.ttlt.append(duration)
            agg.ttft.append(ttfb / max(1, prompt / 1000))
            agg.tps.append(completion / max(0.05, duration / 1000))
            if stream:
                agg.tbt.append(max(1.0, (duration - ttfb) / max(1, completion)))
        if dep.chat and status in (200, 400):
            agg.rai_total += 1
            if side:
                text_type = "Prompt" if side == "input" else "Completion"
                agg.harmful[(text_type, cat, severity)] += 1
                agg.rejected[(text_type, cat)] += 1
        self.logs(dep, ts, corr, status, duration, prompt, completion, cached, stream, side, cat, severity)

    def logs(self, dep, ts, corr, status, duration, prompt, completion, cached, stream, side, cat, severity) -> None:
        rng, acc = self.rng, dep.account
        frac = rng.randrange(10_000_000)
        end_ms = ts + frac / 10_000 - (ts % 1000)
        start_ms = end_ms - duration
        ip = f"{acc.caller_prefix}.{'***' if rng.random() < 0.8 else '**'}"
        props = {"apiName": API_NAME, "requestTime": _ticks(start_ms), "requestLength": prompt * 4 + 90,
                 "responseTime": _ticks(end_ms), "responseLength": (completion * 4 + 420) if status == 200 else 180,
                 "objectId": "", "streamType": "Streaming" if stream else "Non-Streaming",
                 "modelDeploymentName": dep.name, "modelName": dep.model, "modelVersion": dep.version}
        when = _iso(ts, frac)
        enqueue = _iso(ts - rng.randrange(5, 60), frac)[:-1]  # archives add EnqueueTime without a zone
        self.emit("RequestResponse", acc.resource_id, {
            "EnqueueTime": enqueue, "callerIpAddress": ip, "category": "RequestResponse", "correlationId": corr,
            "durationMs": duration, "event": "ShoeboxCallResult", "location": acc.region,
            "operationName": dep.operation, "properties": orjson.dumps(props).decode(),
            "resourceId": acc.resource_id, "resultSignature": str(status), "time": when, "Tenant": acc.region})
        if status == 200:
            usage = {"apiName": API_NAME, "modelDeploymentName": dep.name, "modelName": dep.model,
                     "modelVersion": dep.version, "promptTokens": prompt, "completionTokens": completion,
                     "totalTokens": prompt + completion, "cachedTokens": cached}
            self.emit("AzureOpenAIRequestUsage", acc.resource_id, {
                "callerIpAddress": ip, "category": "AzureOpenAIRequestUsage", "correlationId": corr,
                "location": acc.region, "operationName": dep.operation, "properties": orjson.dumps(usage).decode(),
                "resourceId": acc.resource_id, "resultSignature": "200", "time": when, "Tenant": acc.region})
        if dep.apim:
            self.gateway(dep, ts, frac, corr, status, duration, prompt, completion, cached, stream, side, cat, severity)

    def gateway(self, dep, ts, frac, corr, status, duration, prompt, completion, cached, stream, side, cat, severity) -> None:
        rng = self.rng
        product, subscription = APIM_PRODUCTS[rng.randrange(len(APIM_PRODUCTS))]
        pi = rng.randrange(len(PROMPTS))
        system, user = PROMPTS[pi]
        user = FILTERED_PROMPTS[cat] if side == "input" else user.format(n=rng.randrange(1000, 9999), q=rng.randint(1, 4))
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        request_body = orjson.dumps({"model": dep.name, "messages": messages, "stream": stream, "max_tokens": 800}).decode()
        prompt_cf = {c: {"filtered": side == "input" and c == cat, "severity": severity if c == cat and side == "input" else "safe"}
                     for c in CATEGORIES}
        if status == 200:
            out_cf = {c: {"filtered": side == "output" and c == cat, "severity": severity if c == cat and side == "output" else "safe"}
                      for c in CATEGORIES}
            answer = "" if side == "output" else ANSWERS[pi]
            body = {"choices": [{"content_filter_results": {"custom_blocklists": [], **out_cf},
                                 "finish_reason": "content_filter" if side == "output" else "stop", "index": 0,
                                 "logprobs": None, "message": {"content": answer, "role": "assistant"}}],
                    "created": ts // 1000, "id": "chatcmpl-" + uuid.UUID(int=rng.getrandbits(128)).hex[:29],
                    "model": dep.model + "-" + dep.version, "object": "chat.completion",
                    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"custom_blocklists": [], **prompt_cf}}],
                    "system_fingerprint": "fp_" + format(rng.getrandbits(40), "010x"),
                    "usage": {"completion_tokens": completion, "prompt_tokens": prompt, "total_tokens": prompt + completion,
                              "prompt_tokens_details": {"cached_tokens": cached}}}
        elif status == 400:
            body = {"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
                                         "Please modify your prompt and retry.", "type": None, "param": "prompt",
                              "code": "content_filter", "status": 400,
                              "innererror": {"code": "ResponsibleAIPolicyViolation",
                                             "content_filter_result": {"custom_blocklists": [], **prompt_cf}}}}
        elif status == 429:
            body = {"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
                                                        f"version {API_VERSION} have exceeded call rate limit. Please retry after 2 seconds."}}
        else:
            body = {"error": {"code": "InternalServerError", "message": "The server had an error while processing your request."}}
        response_body = orjson.dumps(body).decode()
        path = f"/openai/deployments/{dep.name}/chat/completions?api-version={API_VERSION}"
        overhead = rng.randrange(3, 25)
        ok = status < 400
        self.emit("GatewayLogs", APIM_ID, {
            "DeploymentVersion": "0.47.21405.0", "Level": 4, "Sku": "Standard", "callerIpAddress": rng.choice(CLIENT_IPS),
            "category": "GatewayLogs", "correlationId": corr, "durationMs": duration + overhead, "isRequestSuccess": ok,
            "location": "East US", "operationName": "Microsoft.ApiManagement/GatewayLogs",
            "properties": {"apiId": "azure-openai-api", "apiRevision": "1", "backendMethod": "POST",
                           "backendProtocol": "HTTP/1.1", "backendRequestBody": request_body,
                           "backendResponseBody": response_body, "backendResponseCode": status, "backendTime": duration,
                           "backendUrl": f"https://{dep.account.name}.openai.azure.com{path}", "cache": "none",
                           "clientProtocol": "HTTP/1.1", "clientTlsVersion": "1.3", "method": "POST",
                           "operationId": "ChatCompletions_Create", "requestBody": request_body,
                           "requestSize": len(request_body) + 420, "responseBody": response_body, "responseCode": status,
                           "responseSize": len(response_body) + 380, "url": f"https://{APIM_HOST}{path}",
                           "productId": product, "apimSubscriptionId": subscription},
            "resourceId": APIM_ID, "resultType": "Succeeded" if ok else "Failed", "time": _iso(ts + overhead, frac),
            "truncated": 0})
        if status != 200:
            return
        base = {"correlationId": corr, "requestId": corr, "apiVersion": API_VERSION,
                "operationName": "ChatCompletions_Create", "deploymentName": dep.name, "modelName": dep.model,
                "isStreamCompletion": stream, "region": "East US"}
        when = _iso(ts + overhead, frac)
        self.emit("GatewayLlmLogs", APIM_ID, {
            "category": "GatewayLlmLogs", "operationName": "Microsoft.ApiManagement/GatewayLlmLogs", "resourceId": APIM_ID,
            "time": when, "properties": {**base, "sequenceNumber": 0, "promptTokens": prompt,
                                          "completionTokens": completion, "totalTokens": prompt + completion,
                                          "promptCachedTokens": cached}})
        self.emit("GatewayLlmLogs", APIM_ID, {
            "category": "GatewayLlmLogs", "operationName": "Microsoft.ApiManagement/GatewayLlmLogs", "resourceId": APIM_ID,
            "time": when, "properties": {**base, "sequenceNumber": 1, "requestMessages": orjson.dumps(messages).decode(),
                                          "responseMessages": orjson.dumps([body["choices"][0]["message"]]).decode()}})

    def audit(self, hour_ms: int) -> None:
        rng = self.rng
        for acc in ACCOUNTS:
            if rng.random() < 0.12:
                op = rng.choice(("ListKey", "ListKey", "RegenerateKey", "Deployments_CreateOrUpdate"))
                self.emit("Audit", acc.resource_id, {
                    "AssetIdentity": _uuid(rng), "Tenant": acc.region, "category": "Audit", "operationName": op,
                    "properties": {"objectId": _uuid(rng)}, "resourceId": acc.resource_id,
                    "time": _iso(hour_ms + rng.randrange(3_600_000), 0)})

    # --- metrics ---

    def metric(self, dep: Deployment, name: str, ts: int, dims: dict, values: dict, account: Account | None = None) -> None:
        metric = schema.METRICS_BY_AZURE_NAME[name.lower()]
        dims = {k: v for k, v in dims.items() if k in metric.dimensions}
        values = {k: v for k, v in values.items() if k in metric.aggregations}
        acc = account or dep.account
        self.metric_docs.append(metric_document(
            resource_id=acc.resource_id, metric_name=name, timestamp_ms=ts, timegrain="PT1M", dimensions=dims,
            values=values, source="demo", period_ms=60_000, region=acc.region, kind=acc.kind))

    def flush_metrics(self, upto_ms: int) -> None:
        """Metric documents for every finished minute before `upto_ms`."""
        done = [k for k in self.aggs if k[1] < upto_ms]
        for key in sorted(done):
            i, ts = key
            self.minute_metrics(DEPLOYMENTS[i], ts, self.aggs.pop(key))

    def minute_metrics(self, dep: Deployment, ts: int, agg: _Agg) -> None:
        """Requests and tokens for every active minute (they must add up to the logs); the detail metrics
        (latency, availability, safety, the Models family) for every fifth minute, to keep the default week
        inside its time budget."""
        acc = dep.account
        common = {"Region": acc.region_display, "ModelDeploymentName": dep.name, "ModelName": dep.model,
                  "ModelVersion": dep.version, "ApiName": API_NAME, "OperationName": dep.operation}
        for (stream, status), n in agg.requests.items():
            dims = {**common, "StreamType": stream, "StatusCode": status, "IsSpillover": "false"}
            self.metric(dep, "AzureOpenAIRequests", ts, dims, {"Total": n})
        if agg.prompt or agg.completion:
            for name, value in (("ProcessedPromptTokens", agg.prompt), ("GeneratedTokens", agg.completion),
                                ("TokenTransaction", agg.prompt + agg.completion)):
                self.metric(dep, name, ts, common, {"Total": value})
        for (text_type, cat, sev), n in agg.harmful.items():  # content-filter hits, as in the logs
            self.metric(dep, "RAIHarmfulRequests", ts, {**common, "TextType": text_type, "Category": cat, "Severity": sev},
                        {"Total": n})
        for (text_type, cat), n in agg.rejected.items():
            self.metric(dep, "RAIRejectedRequests", ts, {**common, "TextType": text_type, "Category": cat}, {"Total": n})
        if dep.ptu and (agg.prompt or agg.completion):
            active = agg.prompt + agg.completion - agg.cached
            self.metric(dep, "ActiveTokens", ts, common, {"Total": active, "Average": active, "Minimum": active, "Maximum": active})
        if (ts // MINUTE_MS) % 5 == 0:
            self.detail_metrics(dep, ts, agg, common)

    def detail_metrics(self, dep: Deployment, ts: int, agg: _Agg, common: dict) -> None:
        models = dep.account.kind == "AIServices"  # the Models family is emitted for Foundry accounts
        if models:
            for (stream, status), n in agg.requests.items():
                self.metric(dep, "ModelRequests", ts, {**common, "StreamType": stream, "StatusCode": status}, {"Total": n})
            if agg.prompt or agg.completion:
                for name, value in (("InputTokens", agg.prompt), ("OutputTokens", agg.completion),
                                    ("TotalTokens", agg.prompt + agg.completion)):
                    self.metric(dep, name, ts, common, {"Total": value})
        for status, s in agg.ttr.items():
            dims = {**common, "StatusCode": status}
            ttr = {"Average": s[0] / s[3], "Minimum": s[1], "Maximum": s[2]}
            self.metric(dep, "AzureOpenAITimeToResponse", ts, dims, ttr)
            if models:
                self.metric(dep, "TimeToResponse", ts, dims, ttr)
        total = sum(agg.requests.values())
        server_errors = sum(n for (_, s), n in agg.requests.items() if int(s) >= 500)
        avail = 100.0 * (total - server_errors) / total
        avail_values = {"Average": avail, "Minimum": avail, "Maximum": avail}
        self.metric(dep, "AzureOpenAIAvailabilityRate", ts, {**common, "StreamType": "Non-Streaming"}, avail_values)
        if agg.ttlt:
            for name, values in (("AzureOpenAINormalizedTTFTInMS", agg.ttft), ("AzureOpenAITTLTInMS", agg.ttlt),
                                 ("AzureOpenAITokenPerSecond", agg.tps), ("AzureOpenAINormalizedTBTInMS", agg.tbt)):
                if values:
                    self.metric(dep, name, ts, common, _stat(values))
            if models:
                model_dims = {**common, "StreamType": "Non-Streaming"}
                self.metric(dep, "ModelAvailabilityRate", ts, common, avail_values)
                for name, values in (("NormalizedTimeToFirstToken", agg.ttft), ("TimeToLastByte", agg.ttlt),
                                     ("TokensPerSecond", agg.tps), ("NormalizedTimeBetweenTokens", agg.tbt)):
                    if values:
                        self.metric(dep, name, ts, model_dims, _stat(values))
        if agg.rai_total:
            self.metric(dep, "RAITotalRequests", ts, common, {"Total": agg.rai_total})
        if dep.ptu and agg.prompt:
            rate = 100.0 * agg.cached / agg.prompt
            self.metric(dep, "AzureOpenAIContextTokensCacheMatchRate", ts, common,
                        {"Average": rate, "Minimum": rate, "Maximum": rate})

    def sparse_metrics(self, hour_ms: int) -> None:
        """Metrics with no request logs behind them: realtime audio sessions, a fine-tuning job, safety events."""
        rng, plan = self.rng, self.plan
        realtime = Deployment(SWEDEN, "gpt-4o-realtime", "gpt-4o-realtime-preview", "2024-12-17", "GlobalStandard",
                              0, 0, 0, 0, 0)
        if _load(realtime, hour_ms) > 0.3:
            ts = hour_ms + rng.randrange(60) * MINUTE_MS
            dims = {"Region": SWEDEN.region_display, "ModelDeploymentName": realtime.name, "ModelName": realtime.model,
                    "ModelVersion": realtime.version}
            seconds = rng.randint(30, 600)
            self.metric(realtime, "RealtimeUsageTime", ts, dims, {"Total": seconds})
            self.metric(realtime, "AudioPromptTokens", ts, dims, {"Total": seconds * 10})
            self.metric(realtime, "AudioCompletionTokens", ts, dims, {"Total": seconds * 20})
        job_start = plan.at(0.2) - plan.at(0.2) % 3_600_000
        if job_start <= hour_ms < job_start + 3 * 3_600_000:
            ft = Deployment(DEV, "gpt-4o-mini-ft", "gpt-4o-mini", "2024-07-18", "Standard", 0, 0, 0, 0, 0)
            for m in range(0, 60, 5):
                self.metric(ft, "FineTunedTrainingHours", hour_ms + m * MINUTE_MS,
                            {"Region": DEV.region_display, "ModelDeploymentName": ft.name, "ApiName": API_NAME},
                            {"Total": 5 / 60})
        if hour_ms % (6 * 3_600_000) == 0:
            for acc in ACCOUNTS:
                self.metric(DEPLOYMENTS[0], "RAISystemEvent", hour_ms, {"Region": acc.region_display,
                                                                        "EventType": rng.choice(RAI_EVENTS)},
                            {"Average": 1}, account=acc)


def generate_demo(store: Store, end: datetime | None = None, days: float = 7, seed: int = 7, scale: float = 1.0,
                  progress: bool = True, records: int | None = None) -> dict:
    """Generate `days` of traffic ending at `end` (default now) into `store`; returns a summary.

    `records` sets the scale so that about that many log records are generated.
    """
    end_dt = end or datetime.now(timezone.utc)
    if end_dt.tzinfo is None:
        end_dt = end_dt.replace(tzinfo=timezone.utc)
    end_ms = int(end_dt.timestamp() * 1000) // MINUTE_MS * MINUTE_MS
    if records:
        scale = scale * records / max(1, estimate_records(days, scale))
    start_ms = end_ms - int(days * 1440) * MINUTE_MS
    plan = _Plan(start_ms, end_ms, scale)
    gen = _Generator(plan, seed)
    started = time.perf_counter()
    totals = {"logs": 0, "metrics": 0, "dead": 0}
    hours = math.ceil(plan.minutes / 60)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("[bold]demo"), BarColumn(), TextColumn("{task.completed}/{task.total} h"),
                   TextColumn("{task.fields[logs]:,} logs · {task.fields[metrics]:,} metrics"), TimeElapsedColumn(),
                   disable=not progress, transient=True)

    def commit(batch: tuple[list, list, list]) -> None:
        result = store.commit(logs=batch[0], metrics=batch[1], rejects=batch[2])
        totals["logs"] += result.stored.get("logs", 0)
        totals["metrics"] += result.stored.get("metrics", 0)
        totals["dead"] += result.dead_lettered

    # DuckDB inserts release the GIL: commit the previous batch on a thread while the next is generated.
    with bar, ThreadPoolExecutor(max_workers=1) as pool:
        task = bar.add_task("demo", total=hours, logs=0, metrics=0)
        pending = None
        logs, rejects = [], []
        for h in range(hours):
            hour_ms = start_ms + h * 3_600_000
            gen.audit(hour_ms)
            gen.sparse_metrics(hour_ms)
            for m in range(60):
                minute_ms = hour_ms + m * MINUTE_MS
                if minute_ms >= end_ms:
                    break
                for i, dep in enumerate(DEPLOYMENTS):
                    gen.minute(i, dep, minute_ms)
            gen.flush_metrics(hour_ms + 3_600_000)
            stamp = time.strftime("y=%Y/m=%m/d=%d/h=%H/m=00", time.gmtime(hour_ms // 1000))
            for (category, resource), lines in gen.blobs.items():
                source = f"demo:insights-logs-{category.lower()}/resourceId={resource}/{stamp}/PT1H.json"
                out = normalize_payload(b"\n".join(lines), source)
                logs += out.logs
                rejects += out.rejects
            gen.blobs.clear()
            if len(logs) + len(gen.metric_docs) >= BATCH_DOCS or h == hours - 1:
                if pending:
                    pending.result()
                pending = pool.submit(commit, (logs, gen.metric_docs, rejects))
                logs, rejects, gen.metric_docs = [], [], []
            bar.update(task, advance=1, logs=totals["logs"], metrics=totals["metrics"])
        if pending:
            pending.result()
    stored, dead = totals, totals["dead"]
    return {"start": datetime.fromtimestamp(start_ms / 1000, timezone.utc).isoformat(),
            "end": datetime.fromtimestamp(end_ms / 1000, timezone.utc).isoformat(),
            "requests": gen.requests, "logs": stored["logs"], "metrics": stored["metrics"], "dead_lettered": dead,
            "scale": scale, "seconds": round(time.perf_counter() - started, 2)}


@click.command("demo-data")
@click.option("--store", "store_path", default=DEFAULT_PATH, show_default=True, envvar="AOAI_MONITOR_STORE",
              help="DuckDB store file to fill (created if missing).")
@click.option("--days", type=click.FloatRange(min=1 / 24, max=93), default=7, show_default=True, help="Length of the window.")
@click.option("--seed", type=int, default=7, show_default=True, help="Same seed and end time give the same documents.")
@click.option("--scale", type=click.FloatRange(min=0.001, max=100), default=1.0, show_default=True,
              help="Traffic multiplier (1.0 ≈ 200k log records per week).")
@click.option("--records", type=click.IntRange(min=100), default=None, help="Aim for about this many log records instead of --scale.")
@click.option("--end", type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]), default=None,
              help="End of the window in UTC (default: now).")
def demo_data(store_path: str, days: float, seed: int, scale: float, records: int | None, end: datetime | None) -> None:
    """Fill a store with a realistic week of Azure OpenAI logs and metrics (three accounts, APIM, incidents)."""
    from .store import StoreError

    try:
        store = Store(store_path)
    except StoreError as exc:
        click.echo(click.style("error: ", fg="red", bold=True) + str(exc), err=True)
        sys.exit(2)
    with store:
        summary = generate_demo(store, end=end, days=days, seed=seed, scale=scale, records=records,
                                progress=sys.stderr.isatty())
    click.echo(f"{summary['requests']:,} requests from {summary['start']} to {summary['end']}: "
               f"{summary['logs']:,} logs and {summary['metrics']:,} metrics stored in {summary['seconds']} s → {store_path}")
    click.echo(f"  try: aoai-monitor summary --store {store_path}")
