"""Anomaly detection on request rate, tokens, latency and error rate per deployment.

Baseline: per deployment and measure, the median of the same seasonal slot in the training history
(hour of day × day of week once ≥ 6 weeks of that slot exist, else hour of day × weekday/weekend, else
hour of day), with a robust spread (1.4826 × MAD) floored by the measure's sampling noise (Poisson for
counts, binomial for the error rate, 10 % for latency and tokens) so quiet, low-volume slots do not turn
every fluctuation into an anomaly. Score = (value − median) / spread; a bucket is anomalous when the
score passes the sensitivity's limit in the measure's direction. Trained from the store, kept in the
state table, scored bucket by bucket into the `anomalies` table (which charts overlay and rules count).
"""

from __future__ import annotations

import math
import statistics
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

from ..query.kql import KqlError, compile_kql
from .evaluate import table_columns
from .rules import RuleError, _ms

MEASURES = ("request_rate", "tokens", "latency_ms", "error_rate")
DIRECTION = {"request_rate": "both", "tokens": "above", "latency_ms": "above", "error_rate": "above"}
SENSITIVITY = {"low": 6.0, "medium": 4.5, "high": 3.0}
MODEL_KEY = "alerts.anomaly.model"
SCORED_KEY = "alerts.anomaly.scored_until"
_NS = uuid.UUID("0d6a3c39-5e0e-4b8a-b7a4-2f9a61f0c1de")
_KEYS = {"enabled", "bucket", "training", "retrain", "sensitivity", "filter", "min_requests", "delay"}


@dataclass
class AnomalyConfig:
    enabled: bool = True
    bucket_ms: int = 15 * 60_000
    training_ms: int = 28 * 86_400_000
    retrain_ms: int = 86_400_000
    sensitivity: str = "medium"
    filter: str = ""
    min_requests: int = 5  # latency and error rate are judged only on buckets with at least this many requests
    delay_ms: int = 0  # score a bucket this long after it ends (ingestion lag)

    @property
    def limit(self) -> float:
        return SENSITIVITY[self.sensitivity]


def parse_config(raw: dict | None) -> AnomalyConfig:
    raw = raw or {}
    unknown = set(raw) - _KEYS
    if unknown:
        raise RuleError(f"alerts.anomaly: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    cfg = AnomalyConfig(enabled=bool(raw.get("enabled", True)), filter=str(raw.get("filter", "")),
                        min_requests=int(raw.get("min_requests", 5)), sensitivity=raw.get("sensitivity", "medium"))
    if cfg.sensitivity not in SENSITIVITY:
        raise RuleError(f"alerts.anomaly.sensitivity = {cfg.sensitivity!r}: use low, medium or high")
    for key, attr in (("bucket", "bucket_ms"), ("training", "training_ms"), ("retrain", "retrain_ms"), ("delay", "delay_ms")):
        if key in raw:
            setattr(cfg, attr, _ms(raw[key], "alerts.anomaly", key))
    if 86_400_000 % cfg.bucket_ms:
        raise RuleError("alerts.anomaly.bucket must divide a day (e.g. 5m, 10m, 15m, 30m, 1h)")
    return cfg


def series(cur, cfg: AnomalyConfig, start_ms: int, end_ms: int) -> dict[tuple[str, str], dict[int, tuple[float | None, int]]]:
    """(deployment, measure) → bucket start → (value, requests). Buckets without requests are absent."""
    cols = table_columns(cur, "logs")
    where, params = "TRUE", []
    if cfg.filter.strip():
        try:
            where, params = compile_kql(cfg.filter, "logs", cols)
        except KqlError as exc:
            raise RuleError(f"alerts.anomaly.filter: {exc}") from None
    rows = cur.execute(
        'SELECT "aoai.deployment", epoch_ms("@timestamp") // ? * ? AS b, count(*), sum("aoai.tokens.total"), '
        'quantile_cont("aoai.duration_ms", 0.5) FILTER (WHERE "aoai.status_code" < 400), '
        'count(*) FILTER (WHERE "aoai.status_code" < 400 AND "aoai.duration_ms" IS NOT NULL), '
        'count(*) FILTER (WHERE "aoai.status_code" >= 500 OR "aoai.status_code" = 429) '
        'FROM logs WHERE "@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT) '
        f'AND "aoai.deployment" IS NOT NULL AND "aoai.status_code" IS NOT NULL AND ({where}) GROUP BY 1, 2',
        [cfg.bucket_ms, cfg.bucket_ms, start_ms, end_ms] + params).fetchall()
    out: dict = defaultdict(dict)
    for dep, b, n, tokens, p50, n_ok, errors in rows:
        out[(dep, "request_rate")][b] = (float(n), n)
        out[(dep, "tokens")][b] = (float(tokens or 0), n)
        out[(dep, "latency_ms")][b] = (p50, n_ok)
        out[(dep, "error_rate")][b] = (errors / n, n)
    return out


def _slots(b: int) -> list[str]:
    t = time.gmtime(b // 1000)
    return [f"dh:{t.tm_wday}:{t.tm_hour}", f"wh:{int(t.tm_wday >= 5)}:{t.tm_hour}", f"h:{t.tm_hour}"]


_MIN_SAMPLES = {"dh": 6, "wh": 3, "h": 3}


def train(cur, cfg: AnomalyConfig, until_ms: int) -> dict:
    """The seasonal model from [until − training, until): per series and slot [median, MAD, median requests]."""
    until = until_ms // cfg.bucket_ms * cfg.bucket_ms
    start = until - cfg.training_ms
    data = series(cur, cfg, start, until)
    first_seen: dict[str, int] = {}
    for (dep, measure), points in data.items():
        if measure == "request_rate":
            first_seen[dep] = min(points)
    model: dict = {"trained_until": until, "bucket_ms": cfg.bucket_ms, "series": {}}
    for (dep, measure), points in data.items():
        samples: dict[str, list[tuple[float, int]]] = defaultdict(list)
        if measure in ("request_rate", "tokens"):  # counts: a bucket without requests is a real zero
            buckets = range(first_seen[dep], until, cfg.bucket_ms)
            values = ((b, points.get(b, (0.0, 0))) for b in buckets)
        else:
            values = ((b, p) for b, p in points.items() if p[0] is not None and p[1] >= cfg.min_requests)
        for b, (v, n) in values:
            for slot in _slots(b):
                samples[slot].append((v, n))
        slots = {}
        for slot, vs in samples.items():
            if len(vs) >= _MIN_SAMPLES[slot.split(":")[0]]:
                med = statistics.median(v for v, _ in vs)
                slots[slot] = [med, statistics.median(abs(v - med) for v, _ in vs), statistics.median(n for _, n in vs)]
        if measure == "error_rate":
            total = sum(n for _, n in points.values())
            slots["_p"] = sum(v * n for v, n in points.values()) / total if total else 0.0
        model["series"][f"{dep}|{measure}"] = slots
    return model


def _spread(measure: str, med: float, mad: float, n_med: float, n: int, p_all: float) -> float:
    """Robust spread of the slot, widened for buckets with fewer requests than the slot usually has, and
    floored by the measure's sampling noise."""
    robust = 1.4826 * mad
    if measure in ("latency_ms", "error_rate") and n < n_med:  # per-request statistics: noisier on fewer requests
        robust *= math.sqrt(n_med / max(n, 1))
    if measure == "request_rate":
        return max(robust, math.sqrt(max(med, 1.0)))  # Poisson
    if measure == "error_rate":
        p = max(med, p_all, 0.01)
        return max(robust, math.sqrt(p * (1 - p) / max(n, 1)))  # binomial
    if measure == "tokens":  # a sum over a Poisson number of requests of varying size
        return max(robust, 1.2 * med / math.sqrt(max(n_med, 1)), 1.0)
    return max(robust, 0.1 * med, 1.0)


def score(cur, cfg: AnomalyConfig, model: dict, start_ms: int, end_ms: int) -> list[dict]:
    """Anomalous buckets in [start, end) as `anomalies` documents."""
    bucket = model["bucket_ms"]
    start, end = start_ms // bucket * bucket, end_ms // bucket * bucket
    if end <= start:
        return []
    data = series(cur, cfg, start, end)
    out = []
    for key, slots in model["series"].items():
        dep, measure = key.rsplit("|", 1)
        points = data.get((dep, measure), {})
        for b in range(start, end, bucket):
            value, n = points.get(b, (0.0, 0) if measure in ("request_rate", "tokens") else (None, 0))
            if value is None or (measure in ("latency_ms", "error_rate") and n < cfg.min_requests):
                continue
            stats = next((slots[s] for s in _slots(b) if s in slots), None)
            if stats is None:
                continue
            med, mad, n_med = stats
            spread = _spread(measure, med, mad, n_med, n, slots.get("_p", 0.0))
            z = (value - med) / spread
            direction = "above" if z > 0 else "below"
            if abs(z) < cfg.limit or (DIRECTION[measure] != "both" and direction != DIRECTION[measure]):
                continue
            out.append({"id": str(uuid.uuid5(_NS, f"{key}|{b}")), "@timestamp": b, "aoai.deployment": dep,
                        "anomaly.metric": measure, "anomaly.bucket_ms": bucket, "anomaly.value": value,
                        "anomaly.expected": med, "anomaly.lower": max(0.0, med - cfg.limit * spread),
                        "anomaly.upper": med + cfg.limit * spread, "anomaly.score": round(z, 3),
                        "anomaly.direction": direction})
    return out


def step(store, cfg: AnomalyConfig, now_ms: int) -> int:
    """Retrain when due, score the buckets completed since the last call; returns the anomalies stored."""
    cur = store.cursor()
    model = store.get_state(MODEL_KEY)
    if not model or model.get("bucket_ms") != cfg.bucket_ms or now_ms - model["trained_until"] >= cfg.retrain_ms:
        model = train(cur, cfg, now_ms)
        store.commit(state={MODEL_KEY: model})
    end = (now_ms - cfg.delay_ms) // cfg.bucket_ms * cfg.bucket_ms
    start = store.get_state(SCORED_KEY) or (end - cfg.bucket_ms)
    start = max(start, end - 7 * 86_400_000)  # after a long downtime score one week, not everything
    if end <= start:
        return 0
    docs = score(cur, cfg, model, start, end)
    result = store.commit(anomalies=docs, state={SCORED_KEY: end})
    return result.stored.get("anomalies", 0)
