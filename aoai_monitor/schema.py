"""The single source of every stored field: name, type, description and origin.

The DuckDB DDL (store/), the Elasticsearch mappings (later) and `aoai-monitor fields` all derive from
the tables below. Field names are the dotted ECS paths of Elastic's "Azure OpenAI" integration; fields
Elastic does not have are marked with origin "aoai" (our additions) and documented here.

Types are Elasticsearch mapping types; `duckdb_type()` maps them to columns. In the store every field is
a column named by its dotted path, so SQL refers to it quoted: SELECT "azure.open_ai.category" FROM logs.
Anything a record carries that is not declared here is kept in the JSON column `extra` (flat dotted keys).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SCHEMA_VERSION = 1

ELASTIC = "elastic"
AOAI = "aoai"
ECS = "ecs"


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    description: str
    origin: str = ELASTIC


# ---------------------------------------------------------------------------------------------------
# Fields shared by logs and metrics documents (resource identity, cloud, data stream).
# ---------------------------------------------------------------------------------------------------
_COMMON = [
    Field("@timestamp", "date", "Event time (UTC, millisecond precision).", ECS),
    Field("azure.resource.id", "keyword", "ARM resource id. Logs: lower-cased (as Elastic's shared pipeline). Metrics: as Azure Monitor returns it."),
    Field("azure.resource.group", "keyword", "Resource group (lower-cased in logs)."),
    Field("azure.resource.name", "keyword", "Resource name (lower-cased in logs)."),
    Field("azure.resource.provider", "keyword", "Resource provider and type, e.g. microsoft.cognitiveservices/accounts."),
    Field("azure.resource.namespace", "keyword", "Event Hubs namespace (authorization-rule resource ids only)."),
    Field("azure.resource.authorization_rule", "keyword", "Authorization rule (authorization-rule resource ids only)."),
    Field("azure.resource.tags", "flattened", "Azure resource tags (metrics input; tag name → value)."),
    Field("azure.subscription_id", "keyword", "Subscription id (lower-cased)."),
    Field("cloud.provider", "keyword", "Always 'azure'.", ECS),
    Field("cloud.account.id", "keyword", "Subscription id (lower-cased), as Elastic's newer shared pipeline sets it.", ECS),
    Field("cloud.region", "keyword", "Azure region of the resource (metrics).", ECS),
    Field("data_stream.type", "constant_keyword", "logs or metrics.", ECS),
    Field("data_stream.dataset", "constant_keyword", "azure_openai.logs, azure.open_ai (metrics) or azure.platformlogs (other categories).", ECS),
    Field("data_stream.namespace", "constant_keyword", "Data stream namespace (default 'default').", ECS),
    Field("event.ingested", "date", "When aoai-monitor stored the document.", ECS),
]

# ---------------------------------------------------------------------------------------------------
# Logs: Audit, RequestResponse, GatewayLogs (Elastic), plus GatewayLlmLogs, AzureOpenAIRequestUsage
# and any other category (kept generically).
# ---------------------------------------------------------------------------------------------------
_P = "azure.open_ai.properties."
_REQ = _P + "backend_request_body."
_RESP = _P + "backend_response_body."
_ERR = _RESP + "error."
_CFR = _ERR + "innererror.content_filter_result."
CONTENT_FILTER_CATEGORIES = ("self_harm", "sexual", "hate", "violence")

_LOGS = [
    Field("event.original", "keyword", "The raw Azure record, exactly as received (Elastic always keeps it).", ECS),
    Field("event.duration", "long", "Request duration in nanoseconds. Elastic multiplies durationMs by 1e6 and keeps negative values (elastic/integrations #9987); aoai-monitor recomputes it from requestTime/responseTime ticks when durationMs is negative or missing.", ECS),
    Field("event.outcome", "keyword", "success / failure. Elastic sets it for GatewayLogs only (from resultType); aoai-monitor also sets it for RequestResponse, GatewayLlmLogs and AzureOpenAIRequestUsage from the HTTP status.", ECS),
    Field("error.message", "text", "Why part of the record could not be decoded (the document is still stored).", ECS),
    Field("log.level", "keyword", "APIM Level (e.g. '4') or the record's level, as a string.", ECS),
    Field("http.request.method", "keyword", "Client-side HTTP method (APIM).", ECS),
    Field("http.response.status_code", "long", "Client-side HTTP status (APIM).", ECS),
    Field("url.original", "keyword", "Full request URL (APIM).", ECS),
    Field("url.scheme", "keyword", "URL scheme (APIM).", ECS),
    Field("url.domain", "keyword", "URL host (APIM).", ECS),
    Field("url.port", "long", "URL port when explicit (APIM).", ECS),
    Field("url.path", "keyword", "URL path (APIM).", ECS),
    Field("url.query", "keyword", "URL query string (APIM).", ECS),
    Field("source.ip", "ip", "Caller IP when it is a valid address (GatewayLogs).", ECS),
    Field("source.address", "keyword", "Caller address when it is not a valid IP (GatewayLogs).", ECS),
    Field("tags", "keyword", "Tags (array).", ECS),
    # Top-level record keys, snake-cased under azure.open_ai (Elastic's rule).
    Field("azure.open_ai.category", "keyword", "Log category (Audit, RequestResponse, GatewayLogs, GatewayLlmLogs, AzureOpenAIRequestUsage, …)."),
    Field("azure.open_ai.operation_name", "keyword", "Operation, e.g. ChatCompletions_Create, ListKey, Microsoft.ApiManagement/GatewayLogs."),
    Field("azure.open_ai.asset_identity", "keyword", "Asset identity (Audit)."),
    Field("azure.open_ai.tenant", "keyword", "The record's Tenant key (a region-like string)."),
    Field("azure.open_ai.caller_ip_address", "keyword", "Caller IP as Azure sends it (last octet masked for Azure OpenAI)."),
    Field("azure.open_ai.correlation_id", "keyword", "Per-request correlation id; joins GatewayLogs and GatewayLlmLogs."),
    Field("azure.open_ai.deployment_version", "keyword", "APIM gateway deployment version."),
    Field("azure.open_ai.is_request_success", "boolean", "APIM request success flag."),
    Field("azure.open_ai.sku", "keyword", "APIM SKU."),
    Field("azure.open_ai.truncated", "long", "APIM truncated flag."),
    Field("azure.open_ai.location", "keyword", "Region of the service that wrote the record."),
    Field("azure.open_ai.result_signature", "keyword", "HTTP status as a string (RequestResponse)."),
    Field("azure.open_ai.result_type", "keyword", "resultType where Elastic keeps it (not GatewayLogs, whose value becomes event.outcome)."),
    Field("azure.open_ai.result_description", "keyword", "resultDescription, when present."),
    Field("azure.open_ai.event", "keyword", "Event type, e.g. ShoeboxCallResult."),
    Field("azure.open_ai.enqueue_time", "keyword", "EnqueueTime as written in storage archives (no time zone)."),
    # RequestResponse / Audit properties.
    Field(_P + "object_id", "keyword", "Entra object id of the caller (empty values are dropped, as Elastic does)."),
    Field(_P + "api_name", "keyword", "API name and version, e.g. 'Azure OpenAI API version 2024-08-01-preview'."),
    Field(_P + "model_deployment_name", "keyword", "Deployment name (RequestResponse)."),
    Field(_P + "model_name", "keyword", "Model name (RequestResponse)."),
    Field(_P + "model_version", "keyword", "Model version (RequestResponse)."),
    Field(_P + "stream_type", "keyword", "Streaming / Non-Streaming."),
    Field(_P + "request_length", "double", "Request size in bytes (APIM requestSize is renamed to this)."),
    Field(_P + "request_time", "long", "Request time in .NET ticks (100 ns since 0001-01-01), as Azure sends it."),
    Field(_P + "response_length", "double", "Response size in bytes (APIM responseSize is renamed to this)."),
    Field(_P + "response_time", "long", "Response time in .NET ticks."),
    # GatewayLogs properties.
    Field(_P + "api_id", "keyword", "APIM API id."),
    Field(_P + "api_revision", "keyword", "APIM API revision."),
    Field(_P + "backend_method", "keyword", "Backend HTTP method."),
    Field(_P + "backend_protocol", "keyword", "Backend protocol."),
    Field(_P + "backend_response_code", "long", "Backend HTTP status."),
    Field(_P + "backend_time", "long", "Backend time in ms."),
    Field(_P + "backend_url", "keyword", "Backend URL (names the Azure OpenAI deployment)."),
    Field(_P + "cache", "keyword", "APIM cache use."),
    Field(_P + "client_protocol", "keyword", "Client protocol."),
    Field(_P + "client_tls_version", "keyword", "Client TLS version."),
    Field(_P + "client_tls_cipher_suite", "keyword", "Client TLS cipher suite."),
    Field(_P + "operation_id", "keyword", "APIM operation id."),
    Field(_P + "apim_subscription_id", "keyword", "APIM subscription (caller key) id, when logged.", AOAI),
    Field(_P + "product_id", "keyword", "APIM product id, when logged.", AOAI),
    Field(_P + "user_id", "keyword", "APIM user id, when logged.", AOAI),
    Field(_REQ + "model", "keyword", "Model/deployment named in the request body."),
    Field(_REQ + "messages", "flattened", "Prompt messages [{role, content}] (untrusted text)."),
    Field(_REQ + "stream", "boolean", "Whether the request asked for streaming."),
    Field(_RESP + "id", "keyword", "Completion id."),
    Field(_RESP + "model", "keyword", "Model that answered."),
    Field(_RESP + "object", "keyword", "Response object type."),
    Field(_RESP + "created", "long", "Creation time (epoch seconds)."),
    Field(_RESP + "system_fingerprint", "keyword", "System fingerprint."),
    Field(_RESP + "choices", "flattened", "Completion choices with content_filter_results (untrusted text)."),
    Field(_RESP + "prompt_filter_results", "flattened", "Prompt content-filter results."),
    Field(_RESP + "usage.input_tokens", "long", "Prompt tokens (renamed from usage.prompt_tokens, as Elastic does)."),
    Field(_RESP + "usage.output_tokens", "long", "Completion tokens (renamed from usage.completion_tokens)."),
    Field(_RESP + "usage.total_tokens", "long", "Total tokens."),
    Field(_RESP + "content_filtered_categories", "flattened", "Output-side summary [{category_name, severity}] of filtered categories across choices."),
    Field(_RESP + "text", "keyword", "Response body that was not valid JSON (Elastic leaves such a string in the object field).", AOAI),
    Field(_REQ + "text", "keyword", "Request body that was not valid JSON (Elastic fails the whole document).", AOAI),
    Field(_ERR + "code", "keyword", "Error code, e.g. content_filter."),
    Field(_ERR + "message", "text", "Error message."),
    Field(_ERR + "param", "keyword", "Error parameter."),
    Field(_ERR + "status", "long", "Error status."),
    Field(_ERR + "innererror.code", "keyword", "Inner error code, e.g. ResponsibleAIPolicyViolation."),
    Field(_ERR + "innererror.content_filtered_categories", "flattened", "Input-side summary [{category_name, severity}] of filtered categories."),
    *[Field(_CFR + f"{c}.{k}", t, f"Prompt content-filter result: {c} {k}.") for c in CONTENT_FILTER_CATEGORIES
      for k, t in (("filtered", "boolean"), ("severity", "keyword"))],
    Field(_CFR + "jailbreak.filtered", "boolean", "Prompt jailbreak filtered."),
    Field(_CFR + "jailbreak.detected", "boolean", "Prompt jailbreak detected."),
    Field(_CFR + "profanity.filtered", "boolean", "Prompt profanity filtered."),
    Field(_CFR + "profanity.detected", "boolean", "Prompt profanity detected."),
    Field(_CFR + "custom_blocklists", "flattened", "Custom blocklist results."),
    # GatewayLlmLogs and AzureOpenAIRequestUsage properties (not in Elastic; same naming style).
    Field(_P + "request_id", "keyword", "Request id (GatewayLlmLogs).", AOAI),
    Field(_P + "api_version", "keyword", "API version (GatewayLlmLogs).", AOAI),
    Field(_P + "deployment_name", "keyword", "Deployment (GatewayLlmLogs / AzureOpenAIRequestUsage).", AOAI),
    Field(_P + "is_stream_completion", "boolean", "Streamed completion (GatewayLlmLogs).", AOAI),
    Field(_P + "prompt_tokens", "long", "Prompt tokens (GatewayLlmLogs / AzureOpenAIRequestUsage).", AOAI),
    Field(_P + "completion_tokens", "long", "Completion tokens (GatewayLlmLogs / AzureOpenAIRequestUsage).", AOAI),
    Field(_P + "total_tokens", "long", "Total tokens (GatewayLlmLogs / AzureOpenAIRequestUsage).", AOAI),
    Field(_P + "prompt_cached_tokens", "long", "Cached prompt tokens (GatewayLlmLogs).", AOAI),
    Field(_P + "region", "keyword", "Region (GatewayLlmLogs).", AOAI),
    Field(_P + "sequence_number", "long", "Row number of a GatewayLlmLogs request: 0 carries tokens, 1… carry message chunks.", AOAI),
    Field(_P + "request_messages", "flattened", "Prompt messages chunk (GatewayLlmLogs; untrusted text).", AOAI),
    Field(_P + "response_messages", "flattened", "Completion messages chunk (GatewayLlmLogs; untrusted text).", AOAI),
    # Generic documents for categories that are not Azure OpenAI / APIM ones.
    Field("azure.platformlogs.category", "keyword", "Category of a record from another Azure service (kept, not dropped).", AOAI),
    Field("azure.platformlogs.operation_name", "keyword", "Operation of a record from another Azure service.", AOAI),
    Field("azure.platformlogs.result_type", "keyword", "resultType of a record from another Azure service.", AOAI),
    Field("azure.platformlogs.properties", "flattened", "properties of a record from another Azure service.", AOAI),
    # Unified fields: one name for the same fact across categories, so dashboards, alerts and cost need
    # no per-category logic (Elastic's quota alert fails precisely because it lacks these).
    Field("aoai.deployment", "keyword", "Deployment name, from whichever field the category carries it in.", AOAI),
    Field("aoai.model", "keyword", "Model name (as the service reports it).", AOAI),
    Field("aoai.model_version", "keyword", "Model version.", AOAI),
    Field("aoai.operation", "keyword", "Operation, e.g. ChatCompletions_Create.", AOAI),
    Field("aoai.api_version", "keyword", "Azure OpenAI api-version of the request.", AOAI),
    Field("aoai.status_code", "long", "HTTP status of the request (RequestResponse resultSignature, APIM responseCode).", AOAI),
    Field("aoai.duration_ms", "double", "Request duration in ms, corrected from the ticks when durationMs is negative.", AOAI),
    Field("aoai.stream", "boolean", "Streaming request.", AOAI),
    Field("aoai.tokens.input", "long", "Input (prompt) tokens of the request, when the record carries them.", AOAI),
    Field("aoai.tokens.output", "long", "Output (completion) tokens.", AOAI),
    Field("aoai.tokens.total", "long", "Total tokens.", AOAI),
    Field("aoai.tokens.cached", "long", "Cached input tokens.", AOAI),
    Field("aoai.content_filter.filtered", "boolean", "The request or its completion was blocked by the content filter.", AOAI),
    Field("aoai.content_filter.input", "keyword", "Filtered prompt categories as 'category:severity' (array).", AOAI),
    Field("aoai.content_filter.output", "keyword", "Filtered completion categories as 'category:severity' (array).", AOAI),
    Field("aoai.repairs", "keyword", "Known Azure quirks repaired in this record (array), e.g. single_quotes, negative_duration.", AOAI),
    Field("aoai.source", "keyword", "Where the record came from, e.g. file:PT1H.json, eventhub:hub/0.", AOAI),
]

# ---------------------------------------------------------------------------------------------------
# Metrics: the Azure OpenAI metric catalogue. Each metric becomes azure.open_ai.<field>.<aggregation>.
# Elastic's nine keep Elastic's names (including its renames); the rest are named by snake-casing the
# Azure name without the "AzureOpenAI" prefix. The Azure Monitor input requests exactly this list.
# ---------------------------------------------------------------------------------------------------
AGG_SUFFIX = {"Total": "total", "Average": "avg", "Minimum": "min", "Maximum": "max", "Count": "count"}


@dataclass(frozen=True)
class Metric:
    azure_name: str
    field: str  # base of azure.open_ai.<field>.<suffix>
    unit: str
    aggregations: tuple[str, ...]  # the ones Azure supports for it (Total/Average/Minimum/Maximum)
    dimensions: tuple[str, ...]
    description: str
    diagnostic_export: bool = True
    ptu_only: bool = False
    elastic: bool = False

    @property
    def primary(self) -> str:
        """Elastic stores only the primary aggregation; we store every supported one."""
        return "Total" if "Total" in self.aggregations else "Average"


_A = ("ApiName", "OperationName", "Region", "StreamType", "ModelDeploymentName", "ModelName", "ModelVersion")
_MDN = ("Region", "ModelDeploymentName", "ModelName", "ModelVersion")
_TOK = ("ApiName", "ModelDeploymentName", "FeatureName", "UsageChannel", "Region", "ModelVersion")
_T = ("Total",)
_AVG = ("Average", "Minimum", "Maximum")
_LEGACY = ("ApiName", "OperationName", "Region", "RatelimitKey")
_MODELS = ("ApiName", "OperationName", "Region", "StreamType", "ModelDeploymentName", "ModelName", "ModelVersion")
_MODELS_TOK = ("ApiName", "Region", "ModelDeploymentName", "ModelName", "ModelVersion")

METRICS: tuple[Metric, ...] = (
    Metric("AzureOpenAIRequests", "requests", "Count", _T, _A + ("StatusCode", "IsSpillover", "ServiceTierRequest", "ServiceTierResponse"), "Calls to the Azure OpenAI API; split by StatusCode for errors and 429 throttling.", elastic=True),
    Metric("AzureOpenAIAvailabilityRate", "availability_rate", "Percent", _AVG, _A, "(Total − server errors) / Total, percent 0–100.", diagnostic_export=False),
    Metric("AzureOpenAITimeToResponse", "time_to_response", "MilliSeconds", _AVG, _A + ("StatusCode",), "Time to first response as measured by the API gateway (ms).", elastic=True),
    Metric("AzureOpenAINormalizedTTFTInMS", "normalized_ttft_in_ms", "MilliSeconds", _AVG, _MDN, "Normalized time to first byte (ms per token)."),
    Metric("AzureOpenAITTLTInMS", "ttlt_in_ms", "MilliSeconds", _AVG, _MDN, "Time to last byte (ms)."),
    Metric("AzureOpenAINormalizedTBTInMS", "normalized_tbt_in_ms", "MilliSeconds", _AVG, _MDN, "Time between tokens (ms), streaming."),
    Metric("AzureOpenAITokenPerSecond", "token_per_second", "Count", _AVG, _MDN, "Generation speed (tokens/s)."),
    Metric("ProcessedPromptTokens", "processed_prompt_tokens", "Count", _T, _TOK, "Input tokens processed.", elastic=True),
    Metric("GeneratedTokens", "generated_tokens", "Count", _T, _TOK, "Output tokens generated.", elastic=True),
    Metric("TokenTransaction", "token_transaction", "Count", _T, _TOK, "Prompt + generated tokens.", elastic=True),
    Metric("ActiveTokens", "active_tokens", "Count", ("Total", "Average", "Minimum", "Maximum"), _MDN, "Total minus cached tokens (PTU).", ptu_only=True, elastic=True),
    Metric("AzureOpenAIContextTokensCacheMatchRate", "context_tokens_cache_match_rate", "Percent", _AVG, _MDN, "Prompt-token cache match rate, percent 0–100 (PTU).", diagnostic_export=False, ptu_only=True, elastic=True),
    Metric("AzureOpenAIProvisionedManagedUtilizationV2", "provisioned_managed_utilization_v2", "Percent", _AVG, ("Region", "StreamType", "ModelDeploymentName", "ModelName", "ModelVersion"), "PTUs consumed / PTUs deployed × 100; at ≥ 100 calls get 429 (PTU). Percent 0–100, as Azure sends it.", diagnostic_export=False, ptu_only=True, elastic=True),
    Metric("AudioPromptTokens", "audio_prompt_tokens", "Count", _T, ("ModelDeploymentName", "ModelName", "ModelVersion", "Region"), "Audio input tokens."),
    Metric("AudioCompletionTokens", "audio_completion_tokens", "Count", _T, ("ModelDeploymentName", "ModelName", "ModelVersion", "Region"), "Audio output tokens."),
    Metric("RealtimeUsageTime", "realtime_usage_time", "Count", _T, ("Region", "ModelDeploymentName"), "Realtime API seconds used."),
    Metric("FineTunedTrainingHours", "fine_tuned_training_hours", "Count", _T, ("ApiName", "ModelDeploymentName", "FeatureName", "UsageChannel", "Region"), "Fine-tuning training hours.", elastic=True),
    Metric("RAITotalRequests", "raitotal_requests", "Count", _T, ("Region", "ModelDeploymentName", "ModelName", "ModelVersion", "ApiName"), "Volume sent for safety check."),
    Metric("RAIHarmfulRequests", "raiharmful_requests", "Count", _T, ("Region", "ModelDeploymentName", "ModelName", "ModelVersion", "ApiName", "TextType", "Category", "Severity"), "Harmful volume detected."),
    Metric("RAIRejectedRequests", "rairejected_requests", "Count", _T, ("Region", "ModelDeploymentName", "ModelName", "ModelVersion", "ApiName", "TextType", "Category"), "Volume blocked by the content filter."),
    Metric("RAISystemEvent", "raisystem_event", "Count", ("Average",), ("Region", "EventType"), "Safety system events."),
    Metric("ModelRequests", "model_requests", "Count", _T, _MODELS + ("StatusCode", "IsSpillover", "ServiceTierRequest", "ServiceTierResponse"), "Requests (Models family, Foundry accounts)."),
    Metric("ModelAvailabilityRate", "model_availability_rate", "Percent", _AVG, _MDN, "Availability (Models family)."),
    Metric("TimeToResponse", "model_time_to_response", "MilliSeconds", _AVG, _MODELS + ("StatusCode",), "Time to response (Models family)."),
    Metric("NormalizedTimeToFirstToken", "normalized_time_to_first_token", "MilliSeconds", _AVG, _MODELS, "Normalized TTFT (Models family)."),
    Metric("NormalizedTimeBetweenTokens", "normalized_time_between_tokens", "MilliSeconds", _AVG, _MODELS, "Time between tokens (Models family)."),
    Metric("TimeToLastByte", "time_to_last_byte", "MilliSeconds", _AVG, _MODELS, "Time to last byte (Models family)."),
    Metric("TokensPerSecond", "tokens_per_second", "Count", _AVG, _MODELS, "Tokens per second (Models family)."),
    Metric("InputTokens", "input_tokens", "Count", _T, _MODELS_TOK, "Input tokens (Models family; has ModelName)."),
    Metric("OutputTokens", "output_tokens", "Count", _T, _MODELS_TOK, "Output tokens (Models family)."),
    Metric("TotalTokens", "total_tokens", "Count", _T, _MODELS_TOK, "Total tokens (Models family)."),
    Metric("ProvisionedUtilization", "provisioned_utilization", "Percent", _AVG, _MDN, "Provisioned utilization (Models family), percent 0–100.", diagnostic_export=False, ptu_only=True),
)
METRICS_BY_AZURE_NAME = {m.azure_name.lower(): m for m in METRICS}

DIMENSIONS = (
    "ApiName", "OperationName", "Region", "StreamType", "ModelDeploymentName", "ModelName", "ModelVersion",
    "StatusCode", "FeatureName", "UsageChannel", "IsSpillover", "ServiceTierRequest", "ServiceTierResponse",
    "TextType", "Category", "Severity", "EventType", "RatelimitKey", "ContextLength",
)


def manage_property_name(name: str) -> str:
    """Metricbeat's azure managePropertyName rule (see elastic-integration.md 3.3), for metric and dimension names."""
    s = name.replace(" ", "_").replace("/", "_per_").replace("\\", "_").replace("_%_", "_pct_")
    s = s.replace(":", "_").replace("_-_", "_")
    s = _UPPER_RULE.sub(lambda m: m.group(0)[0] + "_" + m.group(0)[1].lower() + m.group(0)[2], s)
    parts = []
    for part in s.split("."):
        if part.startswith("_"):
            part = part[1:]
        if part.endswith("_"):
            part = part[:-1]
        parts.append(part)
    return "_".join(parts).lower()


_UPPER_RULE = re.compile(r"[^A-Z_\W][A-Z][^A-Z]")

DIMENSION_FIELDS = {d: "azure.dimensions." + manage_property_name(d) for d in DIMENSIONS}


def metric_field_names(metric: Metric) -> list[str]:
    return [f"azure.open_ai.{metric.field}.{AGG_SUFFIX[a]}" for a in metric.aggregations]


def _metric_fields() -> list[Field]:
    out = []
    for m in METRICS:
        for agg in m.aggregations:
            suffix = AGG_SUFFIX[agg]
            # Elastic maps totals of counts as long and averages as float; keep that for the mappings.
            es_type = "long" if (suffix == "total" and m.unit == "Count" and m.field != "fine_tuned_training_hours") else "double"
            out.append(Field(f"azure.open_ai.{m.field}.{suffix}", es_type,
                             f"{m.azure_name} ({agg}, {m.unit}). {m.description}",
                             ELASTIC if (m.elastic and agg == m.primary) else AOAI))
    return out


_METRICS = [
    Field("azure.namespace", "keyword", "Metric namespace, Microsoft.CognitiveServices/accounts."),
    Field("azure.timegrain", "keyword", "Time grain of the point, e.g. PT1M."),
    Field("azure.resource.type", "keyword", "Resource type, e.g. Microsoft.CognitiveServices/accounts."),
    Field("azure.resource.kind", "keyword", "Account kind (OpenAI, AIServices).", AOAI),
    *[Field(f, "keyword", f"Metric dimension {d}.") for d, f in DIMENSION_FIELDS.items()],
    Field("azure.dimensions.fingerprint", "keyword", "SHA-1 (base64) of the dimensions, like Elastic's fingerprint processor. Elastic declares but never fills it; aoai-monitor fills it."),
    Field("azure.metric_name", "keyword", "Azure metric name of the point (one metric per document).", AOAI),
    Field("metricset.name", "keyword", "Always 'monitor'.", ECS),
    Field("metricset.period", "long", "Collection period in ms.", ECS),
    Field("event.module", "keyword", "Always 'azure'.", ECS),
    Field("event.dataset", "keyword", "azure.open_ai.", ECS),
    Field("service.type", "keyword", "Always 'azure'.", ECS),
    Field("aoai.source", "keyword", "azure_monitor (API) or the diagnostic-settings export it came from.", AOAI),
    *_metric_fields(),
]

_DEAD_LETTERS = [
    Field("received_at", "date", "When the record was rejected.", AOAI),
    Field("source", "keyword", "Where it came from (file path and line, eventhub/partition/offset, blob and offset).", AOAI),
    Field("reason", "keyword", "Why it could not be normalized.", AOAI),
    Field("raw", "keyword", "The raw bytes, decoded as UTF-8 with replacement.", AOAI),
]


def _dedupe(fields: list[Field]) -> tuple[Field, ...]:
    seen: dict[str, Field] = {}
    for f in fields:
        seen.setdefault(f.name, f)
    return tuple(seen.values())


TABLES: dict[str, tuple[Field, ...]] = {
    "logs": _dedupe(_COMMON + _LOGS),
    "metrics": _dedupe(_COMMON + _METRICS),
    "dead_letters": tuple(_DEAD_LETTERS),
}

_DUCKDB_TYPES = {
    "keyword": "VARCHAR", "constant_keyword": "VARCHAR", "text": "VARCHAR", "ip": "VARCHAR",
    "long": "BIGINT", "double": "DOUBLE", "float": "DOUBLE", "boolean": "BOOLEAN", "date": "TIMESTAMP",
    "flattened": "JSON", "object": "JSON",
}
# Fields that hold several values (ECS arrays of keywords).
ARRAY_FIELDS = {"tags", "aoai.content_filter.input", "aoai.content_filter.output", "aoai.repairs"}


def duckdb_type(f: Field, table: str) -> str:
    if f.name in ARRAY_FIELDS:
        return "VARCHAR[]"
    if table == "metrics" and f.name.startswith("azure.open_ai."):
        return "DOUBLE"  # Azure may send fractional totals in exports; the Elastic mapping keeps long.
    return _DUCKDB_TYPES[f.type]


def columns(table: str) -> list[str]:
    return [f.name for f in TABLES[table]]


# ---------------------------------------------------------------------------------------------------
# App traces (issue #6, owner: instrumentation). Spans and GenAI client metrics that applications send
# to the OTLP receiver (sources/otlp.py). Span attributes keep their OpenTelemetry names as columns when
# declared here (gen_ai.*, server.*) and go to `extra` otherwise; the aoai.* fields use the same names as
# in logs, so one query compares app side and service side. The link to service logs is made at query
# time (query/traces.py, docs/instrumentation.md "Correlation").
# ---------------------------------------------------------------------------------------------------
_OTEL = AOAI  # OpenTelemetry names: not in Elastic's integration, so origin "aoai-monitor" in the field reference

_SPANS = [
    Field("@timestamp", "date", "Span start (UTC, millisecond precision).", ECS),
    Field("event.duration", "long", "Span duration in nanoseconds.", ECS),
    Field("event.outcome", "keyword", "success / failure (from the span status and HTTP status).", ECS),
    Field("event.ingested", "date", "When aoai-monitor stored the span.", ECS),
    Field("trace.id", "keyword", "Trace id (32 hex digits).", ECS),
    Field("span.id", "keyword", "Span id (16 hex digits).", ECS),
    Field("parent.id", "keyword", "Parent span id, empty for a root span.", ECS),
    Field("span.name", "keyword", "Span name, e.g. 'chat gpt-4o'.", _OTEL),
    Field("span.kind", "keyword", "internal, server, client, producer or consumer.", _OTEL),
    Field("span.status.code", "keyword", "unset, ok or error.", _OTEL),
    Field("span.status.message", "text", "Status description (errors).", _OTEL),
    Field("span.events", "flattened", "Span events [{name, time (epoch ms), attributes}], e.g. exceptions.", _OTEL),
    Field("service.name", "keyword", "Resource attribute service.name of the sending application.", ECS),
    Field("service.version", "keyword", "Resource attribute service.version.", ECS),
    Field("service.namespace", "keyword", "Resource attribute service.namespace.", _OTEL),
    Field("service.instance.id", "keyword", "Resource attribute service.instance.id.", _OTEL),
    Field("deployment.environment", "keyword", "Resource attribute deployment.environment(.name).", _OTEL),
    Field("host.name", "keyword", "Resource attribute host.name.", ECS),
    Field("resource.attributes", "flattened", "The other resource attributes (flat dotted keys).", _OTEL),
    Field("otel.scope.name", "keyword", "Instrumentation scope that made the span.", _OTEL),
    Field("otel.scope.version", "keyword", "Instrumentation scope version.", _OTEL),
    Field("gen_ai.operation.name", "keyword", "chat, embeddings, text_completion …", _OTEL),
    Field("gen_ai.provider.name", "keyword", "azure.ai.openai for Azure OpenAI (openai-v2 spans say openai; see aoai.provider).", _OTEL),
    Field("gen_ai.request.model", "keyword", "Model the client asked for: the deployment name on Azure OpenAI.", _OTEL),
    Field("gen_ai.response.model", "keyword", "Model that answered, with version (e.g. gpt-4o-2024-08-06).", _OTEL),
    Field("gen_ai.response.id", "keyword", "Completion id (chatcmpl-…, resp_…); joins APIM backend_response_body.id.", _OTEL),
    Field("gen_ai.response.finish_reasons", "flattened", "Finish reasons of the choices (array).", _OTEL),
    Field("gen_ai.request.max_tokens", "long", "max_tokens / max_output_tokens requested.", _OTEL),
    Field("gen_ai.request.temperature", "double", "Temperature requested.", _OTEL),
    Field("gen_ai.request.top_p", "double", "top_p requested.", _OTEL),
    Field("gen_ai.usage.input_tokens", "long", "Input tokens reported by the service.", _OTEL),
    Field("gen_ai.usage.output_tokens", "long", "Output tokens reported by the service (or counted, see aoai.tokens.estimated).", _OTEL),
    Field("gen_ai.usage.cache_read.input_tokens", "long", "Cached input tokens.", _OTEL),
    Field("gen_ai.usage.reasoning.output_tokens", "long", "Reasoning output tokens.", _OTEL),
    Field("server.address", "keyword", "Host of the Azure OpenAI endpoint.", _OTEL),
    Field("server.port", "long", "Port, when not 443.", _OTEL),
    Field("error.type", "keyword", "Error class or HTTP status of a failed call.", _OTEL),
    Field("http.response.status_code", "long", "HTTP status of the call.", ECS),
    Field("azure.service.request.id", "keyword", "Request id the service returned (apim-request-id, else x-request-id).", _OTEL),
    Field("aoai.provider", "keyword", "azure.ai.openai when the endpoint is Azure, whatever gen_ai.provider.name says.", AOAI),
    Field("aoai.deployment", "keyword", "Deployment name (same field as in logs).", AOAI),
    Field("aoai.model", "keyword", "Model that answered (same field as in logs).", AOAI),
    Field("aoai.operation", "keyword", "ChatCompletions_Create, Responses_Create or Embeddings_Create (the service-log operation names).", AOAI),
    Field("aoai.api_version", "keyword", "api-version the client used.", AOAI),
    Field("aoai.status_code", "long", "HTTP status (same field as in logs).", AOAI),
    Field("aoai.duration_ms", "double", "App-side latency in ms (span duration); beside the service log's aoai.duration_ms.", AOAI),
    Field("aoai.ttft_ms", "double", "Time to first token in ms (streamed calls): from the call to the first content chunk.", AOAI),
    Field("aoai.stream", "boolean", "Streamed call.", AOAI),
    Field("aoai.tokens.input", "long", "Input tokens (same field as in logs).", AOAI),
    Field("aoai.tokens.output", "long", "Output tokens.", AOAI),
    Field("aoai.tokens.total", "long", "Total tokens.", AOAI),
    Field("aoai.tokens.cached", "long", "Cached input tokens.", AOAI),
    Field("aoai.tokens.estimated", "boolean", "Output tokens were counted from stream chunks because the service sent no usage.", AOAI),
    Field("aoai.cost", "double", "Cost of the call in USD from the pricing component (absent when unpriced).", AOAI),
    Field("aoai.request_id", "keyword", "x-request-id response header.", AOAI),
    Field("aoai.apim_request_id", "keyword", "apim-request-id response header.", AOAI),
    Field("aoai.region", "keyword", "x-ms-region response header (region that served the call).", AOAI),
    Field("aoai.content_filter.filtered", "boolean", "The call was blocked or cut by the content filter.", AOAI),
    Field("aoai.source", "keyword", "otlp:<remote address> of the sender.", AOAI),
]

_APP_METRICS = [
    Field("@timestamp", "date", "Data point time (end of its interval).", ECS),
    Field("event.ingested", "date", "When aoai-monitor stored the point.", ECS),
    Field("metric.name", "keyword", "e.g. gen_ai.client.token.usage, gen_ai.client.operation.duration.", _OTEL),
    Field("metric.unit", "keyword", "Unit, e.g. {token} or s.", _OTEL),
    Field("metric.type", "keyword", "histogram, sum, gauge or exponential_histogram.", _OTEL),
    Field("metric.temporality", "keyword", "cumulative or delta.", _OTEL),
    Field("metric.start", "date", "Start of the point's interval.", _OTEL),
    Field("metric.value", "double", "Value of a sum or gauge point.", _OTEL),
    Field("metric.count", "long", "Histogram count.", _OTEL),
    Field("metric.sum", "double", "Histogram sum.", _OTEL),
    Field("metric.min", "double", "Histogram min.", _OTEL),
    Field("metric.max", "double", "Histogram max.", _OTEL),
    Field("metric.bucket_bounds", "flattened", "Histogram explicit bounds (array).", _OTEL),
    Field("metric.bucket_counts", "flattened", "Histogram bucket counts (array, one more than the bounds).", _OTEL),
    Field("service.name", "keyword", "Resource attribute service.name.", ECS),
    Field("service.version", "keyword", "Resource attribute service.version.", ECS),
    Field("otel.scope.name", "keyword", "Instrumentation scope.", _OTEL),
    Field("gen_ai.operation.name", "keyword", "Metric attribute.", _OTEL),
    Field("gen_ai.provider.name", "keyword", "Metric attribute.", _OTEL),
    Field("gen_ai.request.model", "keyword", "Metric attribute (deployment on Azure).", _OTEL),
    Field("gen_ai.response.model", "keyword", "Metric attribute.", _OTEL),
    Field("gen_ai.token.type", "keyword", "input or output (token usage).", _OTEL),
    Field("server.address", "keyword", "Metric attribute.", _OTEL),
    Field("error.type", "keyword", "Metric attribute (failed calls).", _OTEL),
    Field("aoai.source", "keyword", "otlp:<remote address> of the sender.", AOAI),
]

TABLES["spans"] = tuple(_SPANS)
TABLES["app_metrics"] = tuple(_APP_METRICS)


# ---------------------------------------------------------------------------------------------------
# Cost (issue #5, owner: pricing). Set on log documents that carry tokens, at ingest (Store → pricing
# hook) and again by `aoai-monitor reprice`. How prices are resolved: docs/cost.md.
# ---------------------------------------------------------------------------------------------------
_COST = [
    Field("aoai.cost.input", "double", "Cost of the uncached input tokens, in aoai.cost.currency (0 on provisioned deployments).", AOAI),
    Field("aoai.cost.cached_input", "double", "Cost of the cached input tokens.", AOAI),
    Field("aoai.cost.output", "double", "Cost of the output tokens (reasoning tokens included).", AOAI),
    Field("aoai.cost.total", "double", "What the request cost: input + cached_input + output; 0 on provisioned (PTU) deployments, whose capacity is billed by the hour.", AOAI),
    Field("aoai.cost.payg", "double", "What the same tokens cost on pay-as-you-go (the matching Standard SKU for PTU deployments): the PTU comparison.", AOAI),
    Field("aoai.cost.currency", "keyword", "Currency of the cost fields (USD unless [pricing] currency says otherwise).", AOAI),
    Field("aoai.cost.sku", "keyword", "Deployment SKU the request was priced on, e.g. GlobalStandard, DataZoneStandard, Standard, GlobalBatch, GlobalProvisionedManaged.", AOAI),
    Field("aoai.cost.region", "keyword", "Region whose rate applied (when known).", AOAI),
    Field("aoai.cost.price_model", "keyword", "Price-table model id the request was priced as, e.g. gpt-4o-1120.", AOAI),
    Field("aoai.cost.price_version", "keyword", "Which prices priced it: price source and snapshot, rate month and an overrides digest.", AOAI),
    Field("aoai.cost.token_source", "keyword", "Where the tokens came from: gateway, request_usage, span (metrics-derived cost lives in reports).", AOAI),
    Field("aoai.cost.unpriced_reason", "keyword", "Why the request has tokens but no cost (and what to configure); never priced as 0.", AOAI),
    Field("aoai.cost.assumed", "keyword", "What pricing had to assume, e.g. 'sku GlobalStandard (default)'.", AOAI),
]
TABLES["logs"] = TABLES["logs"] + tuple(_COST)


# ---------------------------------------------------------------------------------------------------
# Alerts (issue #7, owner: alerting). `alerts` is the history of alert state changes (one row per change of
# a rule's group: pending, firing, severity change, recovered, ok); the current state lives in the state
# table (key alerts.current.*), committed with the row. `anomalies` holds the scored anomalous buckets that
# charts overlay and anomaly rules count. See docs/alerts.md.
# ---------------------------------------------------------------------------------------------------
_ALERTS = [
    Field("@timestamp", "date", "Evaluation time at which the state changed.", ECS),
    Field("event.ingested", "date", "When aoai-monitor stored the row.", ECS),
    Field("alert.rule.id", "keyword", "Rule id (from [[alerts.rules]], a template, an SLO or the UI).", AOAI),
    Field("alert.rule.name", "keyword", "Rule title.", AOAI),
    Field("alert.rule.kind", "keyword", "threshold, slo, anomaly or budget.", AOAI),
    Field("alert.group", "keyword", "The group the state belongs to, e.g. 'aoai.deployment=gpt-4o' ('' for an ungrouped rule).", AOAI),
    Field("alert.state", "keyword", "New state: ok, pending, firing or recovered.", AOAI),
    Field("alert.previous_state", "keyword", "State before this change.", AOAI),
    Field("alert.severity", "keyword", "warning or critical while pending/firing; empty otherwise.", AOAI),
    Field("alert.value", "double", "The evaluated value (empty when there was no data).", AOAI),
    Field("alert.threshold", "double", "The threshold the value crossed (or recovered below).", AOAI),
    Field("alert.message", "text", "What happened and what to do (the notification text).", AOAI),
    Field("alert.no_data", "boolean", "The change was caused by missing data.", AOAI),
    Field("alert.notify", "keyword", "Notification outcome: sent, failed, silenced, catch-up (summarised later) or none.", AOAI),
    Field("alert.targets", "flattened", "Targets notified (names; never URLs).", AOAI),
]

_ANOMALIES = [
    Field("@timestamp", "date", "Start of the scored bucket.", ECS),
    Field("event.ingested", "date", "When aoai-monitor stored the row.", ECS),
    Field("aoai.deployment", "keyword", "Deployment the series belongs to.", AOAI),
    Field("anomaly.metric", "keyword", "request_rate, tokens, latency_ms or error_rate.", AOAI),
    Field("anomaly.bucket_ms", "long", "Bucket length in ms.", AOAI),
    Field("anomaly.value", "double", "Observed value of the bucket.", AOAI),
    Field("anomaly.expected", "double", "Seasonal baseline (median of the hour-of-day/day-of-week slot).", AOAI),
    Field("anomaly.lower", "double", "Lower edge of the normal band at the configured sensitivity.", AOAI),
    Field("anomaly.upper", "double", "Upper edge of the normal band.", AOAI),
    Field("anomaly.score", "double", "Robust z-score: (value − expected) / spread.", AOAI),
    Field("anomaly.direction", "keyword", "above or below the band.", AOAI),
]
TABLES["alerts"] = tuple(_ALERTS)
TABLES["anomalies"] = tuple(_ANOMALIES)
