"""Metric points → metric documents shaped like Elastic's azure.open_ai metrics data stream.

Two producers share `metric_document`: AllMetrics records exported by diagnostic settings (arriving on
the same Event Hub or archive as the logs) and the Azure Monitor metrics API input. One document per
resource, metric, dimension set and timestamp (Metricbeat groups several metrics per document; keeping
one metric per document lets each collection cycle write its metrics independently without id clashes).
"""

from __future__ import annotations

from ..schema import AGG_SUFFIX, DIMENSION_FIELDS, METRICS_BY_AZURE_NAME, manage_property_name
from .common import fingerprint, key_id, parse_resource_id, parse_time_ms

METRICS_DATASET = "azure.open_ai"
GENERIC_METRICS_DATASET = "azure.monitor"
_RECORD_AGGS = {"total": "Total", "average": "Average", "minimum": "Minimum", "maximum": "Maximum", "count": "Count"}


class MetricError(ValueError):
    pass


def is_azure_metrics_record(record: dict) -> bool:
    return "metricName" in record and any(k in record for k in _RECORD_AGGS)


def normalize_azure_metrics_record(record: dict, source: str = "") -> dict:
    """A diagnostic-settings AllMetrics record ({count,total,minimum,maximum,average,metricName,timeGrain})."""
    ts = parse_time_ms(record.get("time"))
    if ts is None:
        from .records import RecordError
        raise RecordError("metrics record has no valid time")
    name = record.get("metricName")
    if not isinstance(name, str) or not name:
        from .records import RecordError
        raise RecordError("metrics record has no metricName")
    values = {}
    for key, agg in _RECORD_AGGS.items():
        v = record.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            values[agg] = v
        elif isinstance(v, str):
            try:
                values[agg] = float(v)
            except ValueError:
                pass
    rid = record.get("resourceId") if isinstance(record.get("resourceId"), str) else ""
    grain = record.get("timeGrain") if isinstance(record.get("timeGrain"), str) else "PT1M"
    return metric_document(resource_id=rid, metric_name=name, timestamp_ms=ts, timegrain=grain,
                           dimensions={}, values=values, source=source or "diagnostic_settings")


def metric_document(*, resource_id: str, metric_name: str, timestamp_ms: int, timegrain: str,
                    dimensions: dict[str, str], values: dict[str, float], source: str,
                    period_ms: int | None = None, region: str | None = None, kind: str | None = None,
                    tags: dict[str, str] | None = None) -> dict:
    """Build one metric document. `dimensions` use Azure's names (any case); `values` map Azure aggregation
    names (Total, Average, Minimum, Maximum, Count) to numbers. Resource fields are lower-cased so
    metrics and logs filter and join on the same values (Elastic keeps metrics camel-cased)."""
    doc: dict = {"@timestamp": timestamp_ms, "cloud.provider": "azure", "data_stream.type": "metrics",
                 "azure.timegrain": timegrain, "metricset.name": "monitor", "event.module": "azure",
                 "service.type": "azure", "azure.metric_name": metric_name, "aoai.source": source}
    if resource_id:
        doc.update(parse_resource_id(resource_id))
    provider = doc.get("azure.resource.provider", "")
    openai = provider == "microsoft.cognitiveservices/accounts" or not resource_id
    dataset = METRICS_DATASET if openai else GENERIC_METRICS_DATASET
    doc["data_stream.dataset"] = doc["event.dataset"] = dataset
    if provider:
        doc["azure.namespace"] = "Microsoft.CognitiveServices/accounts" if openai else provider
        doc["azure.resource.type"] = doc["azure.namespace"]
    if period_ms:
        doc["metricset.period"] = period_ms
    if region:
        doc["cloud.region"] = region
    if kind:
        doc["azure.resource.kind"] = kind
    if tags:
        doc["azure.resource.tags"] = tags
    dims = {}
    for name, value in dimensions.items():
        if value is None:
            continue
        field = DIMENSION_FIELDS.get(_canonical_dimension(name)) or "azure.dimensions." + manage_property_name(name)
        dims[field] = str(value)
    doc.update(dims)
    if dims:
        doc["azure.dimensions.fingerprint"] = fingerprint(dims)
    metric = METRICS_BY_AZURE_NAME.get(metric_name.lower())
    base = metric.field if (metric and openai) else manage_property_name(metric_name)
    prefix = "azure.open_ai." if openai else "azure.metrics."
    if not values:
        raise MetricError(f"metric point {metric_name} has no values")
    for agg, value in values.items():
        suffix = AGG_SUFFIX.get(agg) or AGG_SUFFIX.get(agg.capitalize())
        if suffix is None or value is None:
            continue
        doc[f"{prefix}{base}.{suffix}"] = value
    doc["id"] = key_id(doc.get("azure.resource.id", ""), metric_name.lower(), timegrain,
                       sorted(dims.items()), timestamp_ms)
    return doc


_DIM_CANON = {d.lower(): d for d in DIMENSION_FIELDS}


def _canonical_dimension(name: str) -> str:
    """ARM returns dimension names lower-cased (modeldeploymentname): map back to the canonical name."""
    return _DIM_CANON.get(name.lower(), name)
