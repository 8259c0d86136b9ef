"""Generated Azure OpenAI traffic with injected incidents, for the alerting tests and bench/bench_anomaly.py.

Documents carry the unified fields alerts use (aoai.deployment, aoai.status_code, aoai.duration_ms,
aoai.tokens.*, aoai.content_filter.filtered) plus PTU utilization and time-to-response metric points, with
a diurnal and weekly load curve. Each Incident says which (deployment, measure) it disturbs and when, which
is what the anomaly bench uses as labels. Deterministic for a seed.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from dataclasses import dataclass

from ..demo import poisson
from ..normalize import metric_document

MINUTE_MS = 60_000
SUB = "5a0b8f3e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


@dataclass(frozen=True)
class SimDeployment:
    name: str
    model: str
    resource: str
    peak_rpm: float
    base_ms: float
    prompt: int
    completion: int
    ptu: bool = False

    @property
    def resource_id(self) -> str:
        return f"/subscriptions/{SUB}/resourcegroups/rg-ai/providers/microsoft.cognitiveservices/accounts/{self.resource}"


DEPLOYMENTS = (
    SimDeployment("gpt-4o", "gpt-4o", "aoai-east", 12, 500, 900, 250),
    SimDeployment("gpt-4o-mini", "gpt-4o-mini", "aoai-east", 8, 250, 700, 200),
    SimDeployment("gpt-4o-ptu", "gpt-4o", "aoai-ptu", 6, 300, 1200, 300, ptu=True),
    SimDeployment("embed", "text-embedding-3-large", "aoai-west", 6, 60, 300, 0),
)

# kind → the anomaly measures it disturbs (the bench's labels)
KINDS = {
    "latency": ("latency_ms",),  # durations × factor
    "throttle": ("error_rate", "request_rate", "tokens"),  # traffic at factor × capacity: the excess gets 429
    "errors": ("error_rate",),  # share `factor` of requests answer 5xx
    "slow_burn": (),  # share `factor` of 5xx: too small to see per bucket, but burns an SLO's budget
    "outage": ("request_rate",),  # the deployment's resource sends nothing at all
    "tokens": ("tokens",),  # prompt tokens per request × factor (a runaway context)
    "traffic": ("request_rate", "tokens"),  # request rate × factor
    "content_filter": (),  # share `factor` of requests blocked by the content filter
}


@dataclass(frozen=True)
class Incident:
    kind: str
    deployment: str
    start_ms: int
    end_ms: int
    factor: float = 1.0

    def active(self, dep: SimDeployment, ms: int) -> bool:
        return self.start_ms <= ms < self.end_ms and (
            dep.name == self.deployment or (self.kind == "outage" and dep.resource == _resource_of(self.deployment)))


def _resource_of(name: str) -> str:
    return next((d.resource for d in DEPLOYMENTS if d.name == name), "")


def load(ms: int) -> float:
    """Relative load: business hours (UTC) on weekdays, a third of that at weekends, a night floor."""
    hour = (ms / 3_600_000) % 24
    day = max(0.0, math.sin(math.pi * (hour - 7) / 12)) if 7 <= hour <= 19 else 0.0
    weekend = time.gmtime(ms // 1000).tm_wday >= 5
    return (0.15 + 0.85 * day) * (0.35 if weekend else 1.0)


def generate(start_ms: int, end_ms: int, incidents: tuple[Incident, ...] = (), seed: int = 1, scale: float = 1.0,
             deployments: tuple[SimDeployment, ...] = DEPLOYMENTS) -> tuple[list[dict], list[dict]]:
    """(log documents, metric documents) for [start, end) at whole minutes."""
    rng = random.Random(seed)
    logs, metrics = [], []
    for minute in range(start_ms // MINUTE_MS * MINUTE_MS, end_ms, MINUTE_MS):
        lf = load(minute)
        for dep in deployments:
            active = {i.kind: i for i in incidents if i.active(dep, minute)}
            if "outage" in active:
                continue
            rate = dep.peak_rpm * scale * lf * (active["traffic"].factor if "traffic" in active else 1.0)
            capacity = dep.peak_rpm * scale / 0.4  # normal peaks use 40 % of the PTUs
            if "throttle" in active:
                rate = capacity * active["throttle"].factor
            n = poisson(rng, rate)
            served = min(n, int(capacity)) if dep.ptu or "throttle" in active else n
            durations = []
            for k in range(n):
                doc = _request(rng, dep, minute + rng.randrange(MINUTE_MS), active, throttled=k >= served)
                logs.append(doc)
                if doc["aoai.status_code"] == 200:
                    durations.append(doc["aoai.duration_ms"])
            if dep.ptu:
                util = 100.0 if "throttle" in active else min(100.0, 100.0 * n / capacity)
                metrics.append(_metric(dep, "AzureOpenAIProvisionedManagedUtilizationV2", minute, {"Average": util}))
            if durations:
                avg = sum(durations) / len(durations)
                metrics.append(_metric(dep, "AzureOpenAITimeToResponse", minute, {"Average": avg}, {"StatusCode": "200"}))
    return logs, metrics


def _request(rng: random.Random, dep: SimDeployment, ts: int, active: dict, throttled: bool) -> dict:
    prompt = max(8, int(rng.lognormvariate(math.log(dep.prompt), 0.5)))
    completion = max(1, int(rng.lognormvariate(math.log(dep.completion), 0.4))) if dep.completion else 0
    if "tokens" in active:
        prompt = int(prompt * active["tokens"].factor)
    status, filtered = 200, False
    err = sum(active[k].factor for k in ("errors", "slow_burn") if k in active)
    if throttled:
        status = 429
    elif err and rng.random() < err:
        status = rng.choice((500, 503))
    elif rng.random() < 0.001:
        status = rng.choice((429, 500))
    elif dep.completion and rng.random() < (active["content_filter"].factor if "content_filter" in active else 0.01):
        status, filtered = 400, True
    duration = dep.base_ms + completion * 8 * rng.uniform(0.7, 1.3) + rng.expovariate(1 / 60)
    if "latency" in active and status == 200:
        duration *= active["latency"].factor
    if status != 200:
        duration = rng.uniform(10, 40) if status == 429 else rng.uniform(100, 600)
        completion = 0
    doc = {"id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "@timestamp": ts,
           "azure.resource.id": dep.resource_id, "azure.resource.name": dep.resource,
           "azure.resource.group": "rg-ai", "azure.subscription_id": SUB, "cloud.provider": "azure",
           "data_stream.type": "logs", "data_stream.dataset": "azure_openai.logs",
           "azure.open_ai.category": "RequestResponse", "aoai.deployment": dep.name, "aoai.model": dep.model,
           "aoai.operation": "ChatCompletions_Create" if dep.completion else "Embeddings_Create",
           "aoai.status_code": status, "aoai.duration_ms": round(duration, 1),
           "event.outcome": "success" if status < 400 else "failure", "aoai.content_filter.filtered": filtered}
    if status == 200 or filtered:
        doc.update({"aoai.tokens.input": prompt, "aoai.tokens.output": completion, "aoai.tokens.total": prompt + completion})
    return doc


def _metric(dep: SimDeployment, name: str, ts: int, values: dict, extra: dict | None = None) -> dict:
    return metric_document(resource_id=dep.resource_id, metric_name=name, timestamp_ms=ts, timegrain="PT1M",
                           dimensions={"ModelDeploymentName": dep.name, "ModelName": dep.model, "Region": "East US",
                                       **(extra or {})},
                           values=values, source="simulate", period_ms=60_000, region="eastus", kind="OpenAI")


def load_into(store, logs: list[dict], metrics: list[dict], batch: int = 100_000) -> None:
    """Commit generated documents in batches."""
    for i in range(0, max(len(logs), len(metrics)), batch):
        store.commit(logs=logs[i:i + batch], metrics=metrics[i:i + batch])
