"""Local HTTPS stand-in for Microsoft Entra ID, Azure Resource Manager and the Azure Monitor
metrics APIs (per-resource ARM metrics and the regional ``metrics:getBatch`` data plane).

TEST-ONLY.  One threaded HTTPS server on ``127.0.0.1:<ephemeral port>`` (TLS certificate issued by a
``trustme`` CA) plays all three services; the real Azure SDK clients talk to it unpatched.

Addressing (``base = https://127.0.0.1:<port>``)
-------------------------------------------------
* Entra authority host: ``base`` (``server.authority``).  Token: ``POST /{tenant}/oauth2/v2.0/token``;
  OpenID discovery (what MSAL fetches when ``disable_instance_discovery=True``):
  ``GET /{tenant}/v2.0/.well-known/openid-configuration``.  ``GET /common/discovery/instance`` is
  answered too (logged as kind ``instance_discovery``) so a test can assert it is *not* called.
* ARM: ``base`` (``server.arm_endpoint``).  Resource listing, single resource, accounts list,
  deployments, ``{resourceId}/providers/Microsoft.Insights/{metrics,metricDefinitions,metricNamespaces}``.
* Batch metrics, one "regional host" per region as a path prefix:
  ``base/regions/{region}`` (``server.metrics_endpoint_template`` =
  ``"https://127.0.0.1:<port>/regions/{region}"``, ``server.metrics_endpoint("eastus")``), batch call
  ``POST base/regions/{region}/subscriptions/{sub}/metrics:getBatch``.  ``MetricsClient`` keeps the
  path prefix of its ``endpoint`` (checked: the generated client formats ``"{endpoint}"`` + the
  operation path), so no per-region ports are needed.  The region in the path is the region the
  "host" serves: every resource in the body must be located there (400 otherwise).

Client configuration (no environment variables needed)
------------------------------------------------------
* ``ClientSecretCredential(server.tenant_id, server.client_id, server.client_secret,
  authority=server.authority, disable_instance_discovery=True, connection_verify=server.ca_bundle_path)``
  (sync and ``azure.identity.aio``).  Without ``disable_instance_discovery`` MSAL would ask the public
  cloud's instance-discovery endpoint.
* ``MetricsClient(server.metrics_endpoint(region), cred, audience=server.metrics_audience,
  connection_verify=server.ca_bundle_path)``.
* ``MonitorManagementClient(cred, sub, base_url=server.arm_endpoint,
  credential_scopes=[server.arm_scope], connection_verify=server.ca_bundle_path)``.
* azure-core transports accept ``connection_verify=<CA bundle path>``: requests passes it as
  ``verify``; the aiohttp transport builds ``ssl.create_default_context(cafile=path)`` *per request*
  (a new SSLContext object per call, so aiohttp cannot reuse pooled connections).  For async product
  code the clean way is one ``ssl.SSLContext`` built once from the configured CA path and one shared
  ``aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))`` handed to every client as
  ``transport=AioHttpTransport(session=session, session_owner=False)`` (see the tests).
* Audiences: ARM calls need a token for ``server.arm_audience`` (default
  ``https://management.azure.com``; ``https://management.core.windows.net`` also accepted), batch
  calls a token for ``server.metrics_audience`` (``https://metrics.monitor.azure.com``).  Wrong or
  missing token -> 401 ``InvalidAuthenticationTokenAudience`` / ``AuthenticationFailed``.  The access
  token is a (non-Microsoft) HMAC-signed JWT-shaped string whose payload carries ``aud``, ``appid``,
  ``tid`` and ``exp``.

Synthetic data
--------------
``SyntheticModel`` holds the resources (``Resource`` / ``Deployment``) and generates per-minute
metric samples from a seeded hash of (resource id, metric, full dimension assignment, minute), for
the metrics of azure.md section 7 (see ``METRICS``).  A query aggregates the "leaf" series over
the dimensions that are not split.  ``expected_value(resource_id, metric, dims, minute, aggregation)``
gives the value the server reports for any (split) series and minute; ``expected_bucket_value`` for a
multi-minute interval.

Fault injection and request log
-------------------------------
``server.inject(kind, status=429, times=2, retry_after=1)``, ``server.inject("batch", status=503,
probability=0.3, seed=7)``, ``status=500`` (ArgumentOutOfRange body as in elastic/beats#41790),
``status=529``, ``action="reset"`` (TCP reset), ``delay=`` (slow answer).  Every request is recorded
(``server.requests()``, ``server.counts()``, ``server.count("batch", region="eastus")``,
``server.reset_log()``).  Endpoint kinds: see ``KINDS``.

Run standalone: ``python -m tests.standins.azure_monitor [--port N] [--fleet N]``.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import collections
import dataclasses
import functools
import hashlib
import hmac
import http.server
import itertools
import json
import math
import os
import random
import re
import shutil
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import uuid
import weakref
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import trustme

__all__ = [
    "ACCOUNT_TYPE",
    "ARM_AUDIENCE",
    "METRICS_AUDIENCE",
    "METRIC_NAMESPACE",
    "DEFAULT_TENANT_ID",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_SUBSCRIPTION_ID",
    "SECOND_SUBSCRIPTION_ID",
    "DEFAULT_SEED",
    "KINDS",
    "METRICS",
    "MetricDef",
    "Deployment",
    "Resource",
    "SyntheticModel",
    "default_resources",
    "build_fleet",
    "expected_value",
    "expected_bucket_value",
    "leaf_samples",
    "FaultRule",
    "RequestRecord",
    "AzureMonitorStandin",
    "ARGUMENT_OUT_OF_RANGE_BODY",
]

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

ACCOUNT_TYPE = "Microsoft.CognitiveServices/accounts"
METRIC_NAMESPACE = "Microsoft.CognitiveServices/accounts"
ARM_AUDIENCE = "https://management.azure.com"
ARM_AUDIENCE_LEGACY = "https://management.core.windows.net"
METRICS_AUDIENCE = "https://metrics.monitor.azure.com"

DEFAULT_TENANT_ID = "72f0c0de-0000-4000-8000-00000000a11d"
DEFAULT_CLIENT_ID = "5e7a1d00-0000-4000-8000-0000000c11e7"
DEFAULT_CLIENT_SECRET = "standin-client-secret"
DEFAULT_SUBSCRIPTION_ID = "00000000-0000-4000-8000-0000000000a1"
SECOND_SUBSCRIPTION_ID = "00000000-0000-4000-8000-0000000000b2"
DEFAULT_SEED = 20240123

BATCH_API_VERSIONS = frozenset({"2023-10-01", "2024-02-01", "2023-05-01-preview"})
MAX_BATCH_RESOURCES = 50
MAX_METRIC_NAMES = 20
DEFAULT_TOP = 10

#: Endpoint kinds used in the request log, counters and fault rules.  A fault rule's ``kind`` may
#: also be ``"*"`` (everything), ``"arm"`` (every ``arm_*``) or ``"entra"`` (token + discovery).
KINDS = (
    "token",
    "openid",
    "instance_discovery",
    "batch",
    "arm_subscriptions",
    "arm_resources",
    "arm_accounts",
    "arm_resource",
    "arm_deployments",
    "arm_deployment",
    "arm_metrics",
    "arm_metric_definitions",
    "arm_metric_namespaces",
    "unknown",
)

GRAINS = {
    "PT1M": 1,
    "PT5M": 5,
    "PT15M": 15,
    "PT30M": 30,
    "PT1H": 60,
    "PT6H": 360,
    "PT12H": 720,
    "P1D": 1440,
}

REGION_DISPLAY = {
    "eastus": "East US",
    "eastus2": "East US 2",
    "westus": "West US",
    "westus2": "West US 2",
    "westus3": "West US 3",
    "centralus": "Central US",
    "northcentralus": "North Central US",
    "southcentralus": "South Central US",
    "canadaeast": "Canada East",
    "canadacentral": "Canada Central",
    "brazilsouth": "Brazil South",
    "westeurope": "West Europe",
    "northeurope": "North Europe",
    "swedencentral": "Sweden Central",
    "francecentral": "France Central",
    "germanywestcentral": "Germany West Central",
    "switzerlandnorth": "Switzerland North",
    "norwayeast": "Norway East",
    "polandcentral": "Poland Central",
    "spaincentral": "Spain Central",
    "italynorth": "Italy North",
    "uksouth": "UK South",
    "japaneast": "Japan East",
    "koreacentral": "Korea Central",
    "australiaeast": "Australia East",
    "southindia": "South India",
    "southeastasia": "Southeast Asia",
    "global": "Global",
}

ARGUMENT_OUT_OF_RANGE_BODY = {
    "error": {
        "additionalInfo": [
            {"type": "string", "info": "TraceId=00000000000000000000000000000000"},
            {"type": "string", "info": "ExceptionType=System.ArgumentOutOfRangeException"},
        ],
        "code": "InternalServerError",
        "message": "Detected Internal Error.",
    }
}


def region_display_name(location: str) -> str:
    loc = location.replace(" ", "").lower()
    return REGION_DISPLAY.get(loc, location)


def _norm_region(region: str) -> str:
    return region.replace(" ", "").lower()


# --------------------------------------------------------------------------------------------
# Metric catalogue (azure.md section 7)
# --------------------------------------------------------------------------------------------

MDN, MN, MV = "ModelDeploymentName", "ModelName", "ModelVersion"
_TOTAL = ("Total",)
_AMM = ("Average", "Minimum", "Maximum")


@dataclasses.dataclass(frozen=True)
class MetricDef:
    """One metric of the ``Microsoft.CognitiveServices/accounts`` namespace.

    ``aggregations`` lists the supported aggregation types, the first being the primary one.
    ``applies`` names the deployment filter (``all``, ``ptu``, ``chat``, ``audio``, ``realtime``,
    ``finetuned``, ``anthropic``, ``image``, ``none``); ``family`` decides which account kinds emit it.
    ``values`` = (low, high, decimals) of one sample; ``activity`` groups metrics that share the same
    per-minute activity and sample count; ``derived_from`` makes the samples the element-wise sum of
    other metrics' samples (TokenTransaction = prompt + generated).
    """

    name: str
    display: str
    unit: str
    aggregations: tuple[str, ...]
    dimensions: tuple[str, ...]
    family: str
    category: str
    values: tuple[float, float, int]
    applies: str = "all"
    activity: str | None = None
    derived_from: tuple[str, ...] = ()
    p_active: float = 0.85
    description: str = ""

    @property
    def primary_aggregation(self) -> str:
        return self.aggregations[0]

    @property
    def deployment_scoped(self) -> bool:
        return MDN in self.dimensions

    def dimension(self, name: str) -> str | None:
        low = name.lower()
        for d in self.dimensions:
            if d.lower() == low:
                return d
        return None


_REQ_DIMS = ("ApiName", "OperationName", "Region", "StreamType", MDN, MN, MV, "StatusCode",
             "IsSpillover", "ServiceTierRequest", "ServiceTierResponse")
_AVAIL_DIMS = ("ApiName", "OperationName", "Region", "StreamType", MDN, MN, MV)
_TTR_DIMS = ("ApiName", "OperationName", "Region", "StreamType", MDN, MN, MV, "StatusCode")
_LAT_DIMS = ("Region", MDN, MN, MV)
_TOKEN_DIMS = ("ApiName", MDN, "FeatureName", "UsageChannel", "Region", MV)
_PTU_DIMS = ("Region", MDN, MN, MV)
_UTIL_DIMS = ("Region", "StreamType", MDN, MN, MV)
_AUDIO_DIMS = (MDN, MN, MV, "Region")
_LEGACY_DIMS = ("ApiName", "OperationName", "Region", "RatelimitKey")
_LEGACY_DATA_DIMS = ("ApiName", "OperationName", "Region")
_MODELS_LAT_DIMS = ("ApiName", "OperationName", "Region", "StreamType", MDN, MN, MV)
_MODELS_TOKEN_DIMS = ("ApiName", "Region", MDN, MN, MV)

_C_REQ = "Azure OpenAI - HTTP Requests"
_C_LAT = "Azure OpenAI - Latency"
_C_USE = "Azure OpenAI - Usage"
_C_RAI = "Content Safety - Risks & Safety"
_C_LEG = "Cognitive Services - HTTP Requests"
_C_MOD = "Models - Usage"


def _m(*args: Any, **kw: Any) -> MetricDef:
    return MetricDef(*args, **kw)


_METRIC_LIST = [
    # 7.1 HTTP requests
    _m("AzureOpenAIRequests", "Azure OpenAI Requests", "Count", _TOTAL, _REQ_DIMS, "openai", _C_REQ,
       (1, 30, 0), activity="requests", description="Number of calls made to the Azure OpenAI API."),
    _m("AzureOpenAIAvailabilityRate", "Azure OpenAI AvailabilityRate", "Percent", _AMM, _AVAIL_DIMS,
       "openai", _C_REQ, (95, 100, 2), description="Availability percentage."),
    # 7.2 latency
    _m("AzureOpenAITimeToResponse", "Time to Response", "MilliSeconds", _AMM, _TTR_DIMS, "openai",
       _C_LAT, (150, 4000, 1), description="Time to first response as measured by the API gateway."),
    _m("AzureOpenAINormalizedTTFTInMS", "Normalized Time to First Byte", "MilliSeconds", _AMM,
       _LAT_DIMS, "openai", _C_LAT, (5, 80, 1), applies="chat"),
    _m("AzureOpenAITTLTInMS", "Time to Last Byte", "MilliSeconds", _AMM, _LAT_DIMS, "openai", _C_LAT,
       (300, 12000, 1), applies="chat"),
    _m("AzureOpenAINormalizedTBTInMS", "Time Between Token", "MilliSeconds", _AMM, _LAT_DIMS, "openai",
       _C_LAT, (5, 60, 1), applies="chat"),
    _m("AzureOpenAITokenPerSecond", "Tokens Per Second", "Count", _AMM, _LAT_DIMS, "openai", _C_LAT,
       (20, 180, 1), applies="chat"),
    # 7.3 usage
    _m("ProcessedPromptTokens", "Processed Prompt Tokens", "Count", _TOTAL, _TOKEN_DIMS, "openai",
       _C_USE, (50, 6000, 0), activity="tokens", description="Number of prompt tokens processed."),
    _m("GeneratedTokens", "Generated Completion Tokens", "Count", _TOTAL, _TOKEN_DIMS, "openai", _C_USE,
       (10, 1500, 0), activity="tokens", description="Number of generated tokens."),
    _m("TokenTransaction", "Processed Inference Tokens", "Count", _TOTAL, _TOKEN_DIMS, "openai", _C_USE,
       (0, 0, 0), activity="tokens", derived_from=("ProcessedPromptTokens", "GeneratedTokens"),
       description="Prompt plus generated tokens."),
    _m("ActiveTokens", "Active Tokens", "Count", ("Total", "Average", "Minimum", "Maximum"), _PTU_DIMS,
       "openai", _C_USE, (50, 6000, 0), applies="ptu"),
    _m("AzureOpenAIContextTokensCacheMatchRate", "Prompt Token Cache Match Rate", "Percent", _AMM,
       _PTU_DIMS, "openai", _C_USE, (0, 100, 2), applies="ptu"),
    _m("AzureOpenAIProvisionedManagedUtilizationV2", "Provisioned-managed Utilization V2", "Percent",
       _AMM, _UTIL_DIMS, "openai", _C_USE, (0, 100, 2), applies="ptu"),
    _m("AzureOpenAIProvisionedManagedUtilization", "Provisioned-managed Utilization", "Percent", _AMM,
       _UTIL_DIMS, "openai", _C_USE, (0, 100, 2), applies="ptu"),
    _m("AudioPromptTokens", "Audio Prompt Tokens", "Count", _TOTAL, _AUDIO_DIMS, "openai", _C_USE,
       (20, 800, 0), applies="audio"),
    _m("AudioCompletionTokens", "Audio Completion Tokens", "Count", _TOTAL, _AUDIO_DIMS, "openai",
       _C_USE, (20, 800, 0), applies="audio"),
    _m("RealtimeUsageTime", "Realtime API Seconds Used", "Count", _TOTAL, ("Region", MDN), "openai",
       _C_USE, (1, 60, 0), applies="realtime"),
    _m("FineTunedTrainingHours", "Processed FineTuned Training Hours", "Count", _TOTAL,
       ("ApiName", MDN, "FeatureName", "UsageChannel", "Region"), "openai", _C_USE, (1, 1, 0),
       applies="finetuned", p_active=0.05),
    # 7.4 content safety
    _m("RAITotalRequests", "Total Volume Sent For Safety Check", "Count", _TOTAL,
       ("Region", MDN, MN, MV, "ApiName"), "openai", _C_RAI, (1, 30, 0), applies="chat"),
    _m("RAIHarmfulRequests", "Harmful Volume Detected", "Count", _TOTAL,
       ("Region", MDN, MN, MV, "ApiName", "TextType", "Category", "Severity"), "openai", _C_RAI,
       (1, 5, 0), applies="chat", p_active=0.3),
    _m("RAIRejectedRequests", "Blocked Volume", "Count", _TOTAL,
       ("Region", MDN, MN, MV, "ApiName", "TextType", "Category"), "openai", _C_RAI, (1, 3, 0),
       applies="chat", p_active=0.2),
    _m("RAISystemEvent", "Safety System Event", "Count", ("Average",), ("Region", "EventType"), "openai",
       _C_RAI, (1, 5, 0), p_active=0.3),
    # 7.5 legacy Cognitive Services metrics
    _m("TotalCalls", "Total Calls", "Count", _TOTAL, _LEGACY_DIMS, "legacy", _C_LEG, (1, 40, 0)),
    _m("SuccessfulCalls", "Successful Calls", "Count", _TOTAL, _LEGACY_DIMS, "legacy", _C_LEG, (1, 40, 0)),
    _m("TotalErrors", "Total Errors", "Count", _TOTAL, _LEGACY_DIMS, "legacy", _C_LEG, (1, 3, 0),
       p_active=0.2),
    _m("ClientErrors", "Client Errors", "Count", _TOTAL, _LEGACY_DIMS, "legacy", _C_LEG, (1, 3, 0),
       p_active=0.2),
    _m("ServerErrors", "Server Errors", "Count", _TOTAL, _LEGACY_DIMS, "legacy", _C_LEG, (1, 2, 0),
       p_active=0.05),
    _m("BlockedCalls", "Blocked Calls", "Count", _TOTAL, _LEGACY_DIMS, "legacy", _C_LEG, (1, 3, 0),
       p_active=0.1),
    _m("Latency", "Latency", "MilliSeconds", ("Average",), _LEGACY_DIMS, "legacy", _C_LEG,
       (100, 3000, 1)),
    _m("DataIn", "Data In", "Bytes", _TOTAL, _LEGACY_DATA_DIMS, "legacy", _C_LEG, (500, 200000, 0)),
    _m("DataOut", "Data Out", "Bytes", _TOTAL, _LEGACY_DATA_DIMS, "legacy", _C_LEG, (200, 500000, 0)),
    _m("Ratelimit", "Ratelimit", "Count", _TOTAL, ("Region", "RatelimitKey"), "legacy", _C_LEG,
       (1, 100, 0)),
    _m("TotalTokenCalls", "Total Token Calls", "Count", _TOTAL, _LEGACY_DATA_DIMS, "legacy", _C_LEG,
       (1, 20, 0)),
    _m("SuccessRate", "AvailabilityRate", "Percent", _AMM, _LEGACY_DIMS, "legacy", _C_LEG, (95, 100, 2)),
    # 7.6 "Models" metrics (emitted here for kind AIServices only)
    _m("ModelRequests", "Model Requests", "Count", _TOTAL, _REQ_DIMS, "models", _C_MOD, (1, 30, 0)),
    _m("ModelAvailabilityRate", "Model Availability Rate", "Percent", _AMM, _LAT_DIMS, "models", _C_MOD,
       (95, 100, 2)),
    _m("TimeToResponse", "Time To Response", "MilliSeconds", _AMM, _TTR_DIMS, "models", _C_MOD,
       (150, 4000, 1)),
    _m("NormalizedTimeToFirstToken", "Normalized Time To First Token", "MilliSeconds", _AMM,
       _MODELS_LAT_DIMS, "models", _C_MOD, (5, 80, 1), applies="chat"),
    _m("NormalizedTimeBetweenTokens", "Normalized Time Between Tokens", "MilliSeconds", _AMM,
       _MODELS_LAT_DIMS, "models", _C_MOD, (5, 60, 1), applies="chat"),
    _m("TimeToLastByte", "Time To Last Byte", "MilliSeconds", _AMM, _MODELS_LAT_DIMS, "models", _C_MOD,
       (300, 12000, 1), applies="chat"),
    _m("TokensPerSecond", "Tokens Per Second", "Count", _AMM, _MODELS_LAT_DIMS, "models", _C_MOD,
       (20, 180, 1), applies="chat"),
    _m("InputTokens", "Input Tokens", "Count", _TOTAL, _MODELS_TOKEN_DIMS, "models", _C_MOD,
       (50, 6000, 0), activity="model_tokens"),
    _m("OutputTokens", "Output Tokens", "Count", _TOTAL, _MODELS_TOKEN_DIMS, "models", _C_MOD,
       (10, 1500, 0), activity="model_tokens"),
    _m("TotalTokens", "Total Tokens", "Count", _TOTAL, _MODELS_TOKEN_DIMS, "models", _C_MOD, (0, 0, 0),
       activity="model_tokens", derived_from=("InputTokens", "OutputTokens")),
    _m("ProvisionedUtilization", "Provisioned Utilization", "Percent", _AMM, _LAT_DIMS, "models",
       _C_MOD, (0, 100, 2), applies="ptu"),
    _m("AudioInputTokens", "Audio Input Tokens", "Count", _TOTAL, _AUDIO_DIMS, "models", _C_MOD,
       (20, 800, 0), applies="audio"),
    _m("AudioOutputTokens", "Audio Output Tokens", "Count", _TOTAL, _AUDIO_DIMS, "models", _C_MOD,
       (20, 800, 0), applies="audio"),
    _m("cacheReadInputTokens", "Cache Read Input Tokens", "Count", _TOTAL,
       _MODELS_TOKEN_DIMS + ("ContextLength",), "models", _C_MOD, (100, 5000, 0), applies="anthropic"),
    _m("ephemeral5mInputTokens", "Ephemeral 5m Input Tokens", "Count", _TOTAL,
       _MODELS_TOKEN_DIMS + ("ContextLength",), "models", _C_MOD, (100, 5000, 0), applies="anthropic"),
    _m("ephemeral1hInputTokens", "Ephemeral 1h Input Tokens", "Count", _TOTAL,
       _MODELS_TOKEN_DIMS + ("ContextLength",), "models", _C_MOD, (100, 5000, 0), applies="anthropic"),
    _m("GeneratedImages", "Generated Images", "Count", _TOTAL, _MODELS_TOKEN_DIMS, "models", _C_MOD,
       (1, 4, 0), applies="image"),
    _m("AnnotatedPages", "Annotated Pages", "Count", _TOTAL, _MODELS_TOKEN_DIMS, "models", _C_MOD,
       (1, 20, 0), applies="none"),
    _m("TotalPages", "Total Pages", "Count", _TOTAL, _MODELS_TOKEN_DIMS, "models", _C_MOD, (1, 20, 0),
       applies="none"),
]

#: name -> MetricDef (case-sensitive canonical names; lookups are case-insensitive).
METRICS: dict[str, MetricDef] = {m.name: m for m in _METRIC_LIST}
_METRICS_LOWER = {m.name.lower(): m for m in _METRIC_LIST}


def metric_def(name: str) -> MetricDef | None:
    return _METRICS_LOWER.get(name.lower())


# --------------------------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------------------------

PTU_SKUS = {"provisionedmanaged", "globalprovisionedmanaged", "datazoneprovisionedmanaged", "provisioned"}


@dataclasses.dataclass
class Deployment:
    name: str
    model: str
    version: str
    sku: str = "GlobalStandard"
    capacity: int = 100
    model_format: str = "OpenAI"
    traffic: float = 1.0  # 0 = idle (no samples at all); scales the per-minute activity probability
    fine_tuned: bool = False

    @property
    def is_ptu(self) -> bool:
        return self.sku.lower() in PTU_SKUS

    @property
    def is_embedding(self) -> bool:
        return "embedding" in self.model.lower()

    @property
    def is_image(self) -> bool:
        m = self.model.lower()
        return "dall-e" in m or "gpt-image" in m

    @property
    def is_realtime(self) -> bool:
        return "realtime" in self.model.lower()

    @property
    def is_audio(self) -> bool:
        m = self.model.lower()
        return "audio" in m or "realtime" in m

    @property
    def is_anthropic(self) -> bool:
        return self.model_format.lower() == "anthropic" or "claude" in self.model.lower()

    @property
    def is_chat(self) -> bool:
        return not (self.is_embedding or self.is_image)

    def applies(self, predicate: str) -> bool:
        return {
            "all": True,
            "none": False,
            "ptu": self.is_ptu,
            "chat": self.is_chat,
            "audio": self.is_audio,
            "realtime": self.is_realtime,
            "finetuned": self.fine_tuned,
            "anthropic": self.is_anthropic,
            "image": self.is_image,
        }[predicate]


@dataclasses.dataclass
class Resource:
    subscription_id: str
    resource_group: str
    name: str
    kind: str = "OpenAI"  # OpenAI | AIServices | anything else (legacy metrics only)
    location: str = "eastus"
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    deployments: list[Deployment] = dataclasses.field(default_factory=list)
    resource_type: str = ACCOUNT_TYPE
    sku: str = "S0"

    @property
    def id(self) -> str:
        provider, _, rtype = self.resource_type.partition("/")
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/{provider}/{rtype}/{self.name}")

    @property
    def is_account(self) -> bool:
        return self.resource_type.lower() == ACCOUNT_TYPE.lower()

    def emits_family(self, family: str) -> bool:
        if not self.is_account:
            return False
        kind = self.kind.lower()
        if family == "legacy":
            return True
        if family == "openai":
            return kind in ("openai", "aiservices")
        if family == "models":
            return kind == "aiservices"
        return False


def default_resources() -> list[Resource]:
    """The standard fleet: three OpenAI/AIServices accounts in eastus in subscription A, more
    elsewhere, a TextAnalytics account (legacy metrics only), a storage account (filtered out by the
    resourceType filter) and one account in subscription B."""
    sub, sub2 = DEFAULT_SUBSCRIPTION_ID, SECOND_SUBSCRIPTION_ID
    return [
        Resource(sub, "rg-aoai-prod", "aoai-prod-eastus", "OpenAI", "eastus",
                 {"env": "prod", "team": "search"}, [
                     Deployment("gpt-4o", "gpt-4o", "2024-11-20", "GlobalStandard", 450),
                     Deployment("gpt-4o-ptu", "gpt-4o", "2024-08-06", "ProvisionedManaged", 100),
                     Deployment("text-embedding-3-large", "text-embedding-3-large", "1", "Standard", 120),
                 ]),
        Resource(sub, "rg-aoai-prod", "aoai-prod-swedencentral", "OpenAI", "swedencentral",
                 {"env": "prod"}, [
                     Deployment("gpt-4o-mini", "gpt-4o-mini", "2024-07-18", "DataZoneStandard", 200),
                     Deployment("gpt-4o-realtime", "gpt-4o-realtime-preview", "2024-12-17",
                                "GlobalStandard", 6),
                 ]),
        Resource(sub, "rg-aoai-dev", "aoai-dev-eastus", "OpenAI", "eastus", {"env": "dev"}, [
            Deployment("gpt-35-turbo", "gpt-35-turbo", "0125", "Standard", 60, traffic=0.3),
            Deployment("idle-mini", "gpt-4o-mini", "2024-07-18", "GlobalStandard", 10, traffic=0.0),
        ]),
        Resource(sub, "rg-foundry", "foundry-hub-eastus", "AIServices", "eastus", {"env": "prod"}, [
            Deployment("gpt-4.1", "gpt-4.1", "2025-04-14", "GlobalStandard", 250),
            Deployment("Phi-4", "Phi-4", "7", "GlobalStandard", 1, model_format="Microsoft"),
        ]),
        Resource(sub, "rg-foundry", "lang-eastus", "TextAnalytics", "eastus", {}, []),
        Resource(sub, "rg-data", "stlogs0001", "StorageV2", "eastus", {}, [],
                 resource_type="Microsoft.Storage/storageAccounts", sku="Standard_LRS"),
        Resource(sub2, "rg-other", "aoai-other-westeurope", "OpenAI", "westeurope", {}, [
            Deployment("gpt-4o", "gpt-4o", "2024-11-20", "GlobalStandard", 100),
        ]),
    ]


def build_fleet(count: int, *, regions: Sequence[str] = ("eastus", "swedencentral"),
                subscription_id: str = DEFAULT_SUBSCRIPTION_ID, resource_group: str = "rg-fleet",
                name_prefix: str = "aoai-fleet", ptu_every: int = 5) -> list[Resource]:
    """``count`` OpenAI accounts spread round-robin over ``regions`` (for call-count tests)."""
    out = []
    for i in range(count):
        deps = [
            Deployment("gpt-4o", "gpt-4o", "2024-11-20", "GlobalStandard", 100),
            Deployment("emb", "text-embedding-3-small", "1", "Standard", 50, traffic=0.5),
        ]
        if ptu_every and i % ptu_every == 0:
            deps.append(Deployment("gpt-4o-ptu", "gpt-4o", "2024-08-06", "ProvisionedManaged", 50))
        out.append(Resource(subscription_id, resource_group, f"{name_prefix}-{i:04d}", "OpenAI",
                            regions[i % len(regions)], {"fleet": "yes"}, deps))
    return out


# --------------------------------------------------------------------------------------------
# Deterministic sample generation
# --------------------------------------------------------------------------------------------

def _api_names(dep: Deployment | None) -> list[str]:
    if dep is not None and dep.is_chat and not dep.is_realtime:
        return ["Azure OpenAI API version 2024-10-21", "Azure OpenAI API version 2025-04-01-preview"]
    return ["Azure OpenAI API version 2024-10-21"]


def _operation_names(dep: Deployment | None) -> list[str]:
    if dep is None:
        return ["ChatCompletions_Create"]
    if dep.is_embedding:
        return ["Embeddings_Create"]
    if dep.is_image:
        return ["ImageGenerations_Create"]
    if dep.is_realtime:
        return ["Realtime_Connect"]
    return ["ChatCompletions_Create"]


def dimension_values(resource: Resource, dep: Deployment | None, dim: str) -> list[str]:
    """The values a dimension takes for one deployment (or resource-level series)."""
    d = dim.lower()
    if d == "modeldeploymentname":
        return [dep.name] if dep else []
    if d == "modelname":
        return [dep.model] if dep else []
    if d == "modelversion":
        return [dep.version] if dep else []
    if d == "region":
        return [region_display_name(resource.location)]
    if d == "apiname":
        if not resource.emits_family("openai"):
            return [f"{resource.kind} API v3.1"]
        if dep is None:
            return _api_names(None)
        return _api_names(dep)
    if d == "operationname":
        if not resource.emits_family("openai"):
            return ["Analyze"]
        if dep is None:
            ops = sorted({op for x in resource.deployments for op in _operation_names(x)})
            return ops or ["ChatCompletions_Create"]
        return _operation_names(dep)
    if d == "streamtype":
        return ["Non-Streaming", "Streaming"] if dep is not None and dep.is_chat and not dep.is_realtime \
            else ["Non-Streaming"]
    if d == "statuscode":
        return ["200", "429", "500"]
    if d == "isspillover":
        return ["False", "True"] if dep is not None and dep.is_ptu else ["False"]
    if d in ("servicetierrequest", "servicetierresponse"):
        return ["default"]
    if d == "featurename":
        return ["Inference"]
    if d == "usagechannel":
        return ["API"]
    if d == "texttype":
        return ["Completion", "Prompt"]
    if d == "category":
        return ["Hate", "Violence"]
    if d == "severity":
        return ["Low", "Medium"]
    if d == "eventtype":
        return ["ModelResponse"]
    if d == "ratelimitkey":
        return [resource.name]
    if d == "contextlength":
        return ["LessThan200k", "MoreThan200k"]
    return ["unknown"]


_STATUS_P = {"200": 0.9, "429": 0.25, "500": 0.05}


def _leaf_key(dims: Mapping[str, str]) -> str:
    return "|".join(f"{k.lower()}={dims[k]}" for k in sorted(dims, key=str.lower))


def _digest_floats(key: str) -> list[float]:
    d = hashlib.blake2b(key.encode(), digest_size=32).digest()
    return [int.from_bytes(d[i:i + 4], "big") / 4294967296.0 for i in range(0, 32, 4)]


def _minute_epoch(minute: datetime | str | int) -> int:
    if isinstance(minute, int):
        return minute - minute % 60
    if isinstance(minute, str):
        minute = parse_time(minute)
    if minute.tzinfo is None:
        minute = minute.replace(tzinfo=timezone.utc)
    ts = int(minute.timestamp())
    return ts - ts % 60


def leaf_samples(seed: int, resource_id: str, metric: str, dims: Mapping[str, str],
                 minute: datetime | str | int, traffic: float = 1.0) -> list[float]:
    """Samples emitted in one minute by one fully-specified series (every dimension of ``metric``
    set in ``dims``).  Pure function of its arguments.  Empty list = no data in that minute."""
    md = metric_def(metric)
    if md is None:
        raise KeyError(metric)
    return list(_samples(seed, resource_id.lower(), md.name, _leaf_key(dims), _minute_epoch(minute),
                         float(traffic)))


@functools.lru_cache(maxsize=500_000)
def _samples(seed: int, rid: str, name: str, lk: str, m: int, traffic: float) -> tuple[float, ...]:
    md = METRICS[name]
    if md.derived_from:
        parts = [_samples(seed, rid, src, lk, m, traffic) for src in md.derived_from]
        return tuple(sum(vals) for vals in zip(*parts))
    act = _digest_floats(f"{seed}|{rid}|{md.activity or md.name}|{lk}|{m}|a")
    p = md.p_active
    fields = dict(kv.split("=", 1) for kv in lk.split("|")) if lk else {}
    status = fields.get("statuscode")
    if status is not None:
        p = _STATUS_P.get(status, 0.1) * (md.p_active / 0.85)
    if fields.get("isspillover") == "True":
        p *= 0.2
    p *= max(0.0, min(1.0, traffic))
    if act[0] >= p:
        return ()
    n = 1 + int(act[1] * 4)
    lo, hi, dec = md.values
    vals = _digest_floats(f"{seed}|{rid}|{md.name}|{lk}|{m}|v")
    out: list[float] = []
    for u in vals[:n]:
        x = lo + (hi - lo) * u
        out.append(int(round(x)) if dec == 0 else round(x, dec))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Time helpers
# --------------------------------------------------------------------------------------------

_DURATION_RE = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$", re.I)


def parse_duration(text: str) -> timedelta:
    m = _DURATION_RE.match(text.strip())
    if not m or text.strip().upper() in ("P", "PT"):
        raise ValueError(f"invalid ISO 8601 duration {text!r}")
    g = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    return timedelta(days=g["d"], hours=g["h"], minutes=g["m"], seconds=g["s"])


def format_duration(td: timedelta) -> str:
    secs = int(td.total_seconds())
    if secs % 86400 == 0:
        return f"P{secs // 86400}D"
    out = "PT"
    h, rem = divmod(secs, 3600)
    mi, s = divmod(rem, 60)
    if h:
        out += f"{h}H"
    if mi:
        out += f"{mi}M"
    if s or out == "PT":
        out += f"{s}S"
    return out


def parse_time(text: str) -> datetime:
    t = text.strip()
    if t.endswith("Z") or t.endswith("z"):
        t = t[:-1] + "+00:00"
    # Trim fractional seconds beyond microseconds (Azure writes 7 digits).
    t = re.sub(r"(\.\d{6})\d+", r"\1", t)
    dt = datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def fmt_time(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _floor_minute(dt: datetime) -> datetime:
    return dt.replace(second=0, microsecond=0)


def _num(x: float) -> float | int:
    if isinstance(x, float) and x.is_integer() and abs(x) < 2 ** 53:
        return int(x)
    return x


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------

class _Stats:
    __slots__ = ("n", "s", "mn", "mx")

    def __init__(self) -> None:
        self.n = 0
        self.s: float = 0
        self.mn: float | None = None
        self.mx: float | None = None

    def add(self, samples: Iterable[float]) -> None:
        for v in samples:
            self.n += 1
            self.s += v
            if self.mn is None or v < self.mn:
                self.mn = v
            if self.mx is None or v > self.mx:
                self.mx = v

    def value(self, aggregation: str) -> float | int | None:
        a = aggregation.lower()
        if a == "total":
            return _num(self.s) if self.n else 0
        if a == "count":
            return self.n
        if not self.n:
            return None
        if a == "average":
            return self.s / self.n
        if a == "minimum":
            return _num(self.mn)  # type: ignore[arg-type]
        if a == "maximum":
            return _num(self.mx)  # type: ignore[arg-type]
        raise ValueError(aggregation)


AGGREGATIONS = {"total": "Total", "average": "Average", "minimum": "Minimum", "maximum": "Maximum",
                "count": "Count"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None,
                 body: Any = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.body = body

    def payload(self) -> Any:
        if self.body is not None:
            return self.body
        return {"error": {"code": self.code, "message": self.message}}


def _bad(message: str, code: str = "BadRequest") -> ApiError:
    return ApiError(400, code, message)


# --------------------------------------------------------------------------------------------
# Filter parsing
# --------------------------------------------------------------------------------------------

def _split_outside_quotes(text: str, word: str) -> list[str]:
    parts, buf, i, inq = [], [], 0, False
    pat = re.compile(rf"\s+{word}\s+", re.I)
    while i < len(text):
        ch = text[i]
        if ch == "'":
            inq = not inq
            buf.append(ch)
            i += 1
            continue
        if not inq:
            m = pat.match(text, i)
            if m:
                parts.append("".join(buf))
                buf = []
                i = m.end()
                continue
        buf.append(ch)
        i += 1
    parts.append("".join(buf))
    return [p.strip() for p in parts]


_COND_RE = re.compile(r"^\s*(?P<dim>.+?)\s+(?P<op>eq|ne)\s+'(?P<val>(?:[^']|'')*)'\s*$", re.I)


def _unescape(text: str) -> str:
    return text.replace("%2528", "(").replace("%2529", ")").replace("''", "'")


def parse_metric_filter(text: str) -> list[tuple[str, str, set[str] | None]]:
    """``A eq 'a1' and B eq 'b1' or B eq 'b2' and C eq '*'`` ->
    ``[("a", "eq", {"a1"}), ("b", "eq", {"b1", "b2"}), ("c", "eq", None)]`` (None = every value)."""
    cleaned = []
    inq = False
    for ch in text:
        if ch == "'":
            inq = not inq
        if ch in "()" and not inq:
            continue
        cleaned.append(ch)
    out: list[tuple[str, str, set[str] | None]] = []
    for clause in _split_outside_quotes("".join(cleaned), "and"):
        if not clause:
            raise _bad(f"Invalid filter: {text!r}")
        dim = op = None
        values: set[str] | None = set()
        for cond in _split_outside_quotes(clause, "or"):
            m = _COND_RE.match(cond)
            if not m:
                raise _bad(f"Invalid filter clause {cond!r} in {text!r}")
            d = _unescape(m["dim"].strip()).lower()
            if dim is not None and d != dim:
                raise _bad("The logical 'or' operator cannot separate two different metadata names: "
                           f"{text!r}")
            dim, op = d, m["op"].lower()
            v = _unescape(m["val"])
            if v == "*":
                values = None
            elif values is not None:
                values.add(v)
        assert dim is not None and op is not None
        out.append((dim, op, values))
    return out


# --------------------------------------------------------------------------------------------
# Synthetic model
# --------------------------------------------------------------------------------------------

_ACTIVE_MODELS: "list[weakref.ref[SyntheticModel]]" = []  # newest last


class SyntheticModel:
    """Resources plus the deterministic metric generator.

    ``ingestion_delay`` (seconds): a minute's data becomes visible only ``60 + ingestion_delay``
    seconds after the minute starts (before that: Total 0, Average/Min/Max absent), judged by
    ``clock()`` (default: real UTC now).  Minutes in the future never have data.
    ``retention``: if set, queries starting before ``now - retention`` get 400 (Azure: 93 days).
    """

    def __init__(self, resources: Sequence[Resource] | None = None, *, seed: int = DEFAULT_SEED,
                 ingestion_delay: float = 0.0, retention: timedelta | None = None,
                 clock: Callable[[], datetime] | None = None):
        self.seed = seed
        self.resources: list[Resource] = list(default_resources() if resources is None else resources)
        self.ingestion_delay = ingestion_delay
        self.retention = retention
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(timezone.utc))
        self._lock = threading.RLock()
        _ACTIVE_MODELS[:] = [w for w in _ACTIVE_MODELS if w() is not None]
        _ACTIVE_MODELS.append(weakref.ref(self))

    # --- resources ---------------------------------------------------------------------------
    def add(self, *resources: Resource) -> None:
        with self._lock:
            self.resources.extend(resources)

    def remove(self, resource_id: str) -> None:
        with self._lock:
            self.resources = [r for r in self.resources if r.id.lower() != resource_id.lower()]

    def find(self, resource_id: str) -> Resource | None:
        rid = resource_id.rstrip("/").lower()
        if not rid.startswith("/"):
            rid = "/" + rid
        with self._lock:
            for r in self.resources:
                if r.id.lower() == rid:
                    return r
        return None

    def resource(self, name: str) -> Resource:
        """Look up a resource by name (or id)."""
        with self._lock:
            for r in self.resources:
                if r.name == name or r.id.lower() == name.lower():
                    return r
        raise KeyError(name)

    def subscriptions(self) -> list[str]:
        with self._lock:
            return sorted({r.subscription_id for r in self.resources})

    def accounts(self, subscription_id: str | None = None, location: str | None = None) -> list[Resource]:
        with self._lock:
            return [r for r in self.resources if r.is_account
                    and (subscription_id is None or r.subscription_id.lower() == subscription_id.lower())
                    and (location is None or _norm_region(r.location) == _norm_region(location))]

    # --- series ------------------------------------------------------------------------------
    def leaves(self, resource: Resource, md: MetricDef) -> list[tuple[dict[str, str], float]]:
        """Fully-specified series (dimension assignment, traffic factor) of ``md`` on ``resource``."""
        if not resource.emits_family(md.family):
            return []
        out: list[tuple[dict[str, str], float]] = []
        if md.deployment_scoped:
            for dep in resource.deployments:
                if not dep.applies(md.applies):
                    continue
                if md.family == "openai" and dep.model_format.lower() != "openai":
                    continue  # Azure OpenAI metrics only for OpenAI-format models
                sets = [dimension_values(resource, dep, d) for d in md.dimensions]
                for combo in itertools.product(*sets):
                    out.append((dict(zip(md.dimensions, combo)), dep.traffic))
        else:
            if md.applies not in ("all",):
                return []
            traffic = 1.0 if not resource.deployments and resource.kind.lower() not in (
                "openai", "aiservices") else max([d.traffic for d in resource.deployments] or [0.0])
            sets = [dimension_values(resource, None, d) for d in md.dimensions]
            for combo in itertools.product(*sets):
                out.append((dict(zip(md.dimensions, combo)), traffic))
        return out

    def _visible(self, minute_epoch: int, as_of: datetime | None) -> bool:
        if as_of is None:
            return True
        return minute_epoch + 60 + self.ingestion_delay <= as_of.timestamp()

    def _minute_samples(self, resource: Resource, md: MetricDef, dims: Mapping[str, str], traffic: float,
                        minute_epoch: int, as_of: datetime | None) -> list[float]:
        if not self._visible(minute_epoch, as_of):
            return []
        return _samples(self.seed, resource.id.lower(), md.name, _leaf_key(dims), minute_epoch, float(traffic))

    @staticmethod
    def _match(dims: Mapping[str, str], selector: Mapping[str, set[str] | None | str]) -> bool:
        low = {k.lower(): v for k, v in dims.items()}
        for d, allowed in selector.items():
            v = low.get(d.lower())
            if v is None:
                return False
            if allowed is None or allowed == "*":
                continue
            if isinstance(allowed, str):
                if v != allowed:
                    return False
            elif v not in allowed:
                return False
        return True

    def stats(self, resource_id: str, metric: str, dims: Mapping[str, str], start: datetime,
              end: datetime, as_of: datetime | None = None) -> _Stats:
        r = self.find(resource_id)
        md = metric_def(metric)
        if r is None or md is None:
            raise KeyError(resource_id if r is None else metric)
        st = _Stats()
        leaves = [(d, t) for d, t in self.leaves(r, md) if self._match(d, dims)]
        s, e = _minute_epoch(start), int(end.timestamp())
        for m in range(s, e, 60):
            for d, t in leaves:
                st.add(self._minute_samples(r, md, d, t, m, as_of))
        return st

    def expected_value(self, resource_id: str, metric: str, dims: Mapping[str, str] | None,
                       minute: datetime | str, aggregation: str, *, as_of: datetime | None = None):
        """Value of the series selected by ``dims`` (split dimensions -> value; other dimensions are
        aggregated) in the one-minute bucket starting at ``minute``.  Total/Count -> 0 when there is no
        data, Average/Minimum/Maximum -> None (absent).  ``as_of`` applies the ingestion delay."""
        m = datetime.fromtimestamp(_minute_epoch(minute), timezone.utc)
        return self.stats(resource_id, metric, dims or {}, m, m + timedelta(minutes=1), as_of).value(
            AGGREGATIONS[aggregation.lower()])

    def expected_bucket_value(self, resource_id: str, metric: str, dims: Mapping[str, str] | None,
                              start: datetime | str, end: datetime | str, aggregation: str, *,
                              as_of: datetime | None = None):
        """Like ``expected_value`` for the minutes in [start, end) (a PT5M/PT1H/... bucket)."""
        s = parse_time(start) if isinstance(start, str) else start
        e = parse_time(end) if isinstance(end, str) else end
        return self.stats(resource_id, metric, dims or {}, s, e, as_of).value(
            AGGREGATIONS[aggregation.lower()])

    # --- query engine shared by ARM metrics and getBatch -------------------------------------
    def query(self, resource: Resource, metric_names: Sequence[str], start: datetime, end: datetime,
              interval: str, aggregations: Sequence[str] | None, filter_text: str | None,
              top: int | None, orderby: str | None, rollupby: str | None, metadata_only: bool,
              validate_dimensions: bool, as_of: datetime | None, resource_id_echo: str) -> dict[str, Any]:
        mds: list[MetricDef] = []
        for name in metric_names:
            md = metric_def(name)
            if md is None:
                raise _bad(f"Failed to find metric configuration for provider: Microsoft.CognitiveServices, "
                           f"resource Type: accounts, metric: {name}, Valid metrics: "
                           + ",".join(METRICS), code="BadRequest")
            mds.append(md)
        filt = parse_metric_filter(filter_text) if filter_text else None
        roll = {x.strip().lower() for x in rollupby.split(",")} if rollupby else set()
        aggs = [AGGREGATIONS.get(a.strip().lower()) for a in aggregations] if aggregations else None
        if aggs is not None and None in aggs:
            raise _bad(f"Invalid aggregation type in {','.join(aggregations or [])!r}; valid: "
                       "Average, Count, Minimum, Maximum, Total")
        start_m = _floor_minute(start)
        end_m = _floor_minute(end)
        if end_m <= start_m:
            end_m = start_m + timedelta(minutes=1)
        if interval.upper() == "FULL":
            step = end_m - start_m
        else:
            step = timedelta(minutes=GRAINS[interval.upper()])
        buckets: list[tuple[datetime, datetime]] = []
        b = start_m
        while b < end_m:
            buckets.append((b, min(b + step, end_m)))
            b += step
        minutes = int((end_m - start_m).total_seconds() // 60)
        metrics_out = []
        for md in mds:
            agg_list = aggs or [md.primary_aggregation]
            split: list[tuple[str, str, set[str] | None]] = []
            if filt:
                for dim, op, vals in filt:
                    canon = md.dimension(dim)
                    if canon is None:
                        if validate_dimensions:
                            raise _bad(f"Metric: {md.name} does not support requested dimension "
                                       f"combination: {dim}, supported ones are: "
                                       + ",".join(md.dimensions))
                        continue
                    split.append((canon, op, vals))
            leaves = self.leaves(resource, md)
            groups: dict[tuple[str, ...], list[tuple[dict[str, str], float]]] = {}
            split_dims = [d for d, _, _ in split if d.lower() not in roll]
            for dims, traffic in leaves:
                ok = True
                for canon, op, vals in split:
                    v = dims[canon]
                    if vals is None:
                        continue
                    if (op == "eq" and v not in vals) or (op == "ne" and v in vals):
                        ok = False
                        break
                if not ok:
                    continue
                key = tuple(dims[d] for d in split_dims)
                groups.setdefault(key, []).append((dims, traffic))
            series = []
            rid_low = resource.id.lower()
            for key, members in groups.items():
                keyed = [(_leaf_key(dims), float(traffic)) for dims, traffic in members]
                per_bucket = []
                total = _Stats()
                for bs, be in buckets:
                    st = _Stats()
                    for m in range(int(bs.timestamp()), int(be.timestamp()), 60):
                        if not self._visible(m, as_of):
                            continue
                        for lk, traffic in keyed:
                            st.add(_samples(self.seed, rid_low, md.name, lk, m, traffic))
                    per_bucket.append(st)
                    total.n += st.n
                    total.s += st.s
                    if st.mn is not None and (total.mn is None or st.mn < total.mn):
                        total.mn = st.mn
                    if st.mx is not None and (total.mx is None or st.mx > total.mx):
                        total.mx = st.mx
                if split and total.n == 0:
                    continue  # a split series only exists if something was emitted in the range
                series.append((key, per_bucket, total))
            if not split:
                if not series:
                    series = [((), [_Stats() for _ in buckets], _Stats())]
            else:
                ob_agg, desc = agg_list[0], True
                if orderby:
                    parts = orderby.strip().split()
                    ob_agg = AGGREGATIONS.get(parts[0].lower(), agg_list[0])
                    desc = not (len(parts) > 1 and parts[1].lower() == "asc")

                def rank(item: tuple, _agg: str = ob_agg, _desc: bool = desc) -> tuple:
                    v = item[2].value(_agg)
                    if v is None:
                        v = -math.inf if _desc else math.inf
                    return ((-v if _desc else v), item[0])

                series.sort(key=rank)
                series = series[: (top if top is not None else DEFAULT_TOP)]
            ts_out = []
            for key, per_bucket, _total in series:
                meta = [{"name": {"value": d.lower(), "localizedValue": d.lower()}, "value": v}
                        for d, v in zip(split_dims, key)]
                entry: dict[str, Any] = {"metadatavalues": meta}
                if not metadata_only:
                    data = []
                    for (bs, _be), st in zip(buckets, per_bucket):
                        point: dict[str, Any] = {"timeStamp": fmt_time(bs)}
                        for a in agg_list:
                            if a not in md.aggregations and a != "Count":
                                continue  # unsupported aggregation: value absent
                            v = st.value(a)
                            if v is not None:
                                point[a.lower()] = v
                        data.append(point)
                    entry["data"] = data
                ts_out.append(entry)
            metrics_out.append({
                "id": f"{resource_id_echo}/providers/Microsoft.Insights/metrics/{md.name}",
                "type": "Microsoft.Insights/metrics",
                "name": {"value": md.name, "localizedValue": md.display},
                "displayDescription": md.description or f"{md.display}.",
                "unit": md.unit,
                "timeseries": ts_out,
                "errorCode": "Success",
            })
        return {
            "cost": max(0, minutes * max(1, len(mds)) - 1),
            "interval": format_duration(step) if interval.upper() == "FULL" else interval.upper(),
            "value": metrics_out,
            "namespace": METRIC_NAMESPACE,
            "resourceregion": resource.location,
        }


def _model_for(resource_id: str, model: SyntheticModel | None) -> SyntheticModel:
    if model is not None:
        return model
    for ref in reversed(list(_ACTIVE_MODELS)):
        m = ref()
        if m is not None and m.find(resource_id) is not None:
            return m
    fallback = SyntheticModel()
    if fallback.find(resource_id) is None:
        raise KeyError(f"resource {resource_id} is not in any live SyntheticModel")
    return fallback


def expected_value(resource_id: str, metric: str, dims: Mapping[str, str] | None,
                   minute: datetime | str, aggregation: str, *, model: SyntheticModel | None = None,
                   as_of: datetime | None = None):
    """Value the stand-in reports for ``metric`` of ``resource_id`` in the minute starting at ``minute``
    for the series whose split dimensions are ``dims`` (``{}`` = no split, all series aggregated).

    Total/Count: 0 when nothing was emitted; Average/Minimum/Maximum: ``None`` (the field is absent).
    ``model`` defaults to a live ``SyntheticModel`` containing ``resource_id`` (the server's), else the
    default model with ``DEFAULT_SEED``."""
    return _model_for(resource_id, model).expected_value(resource_id, metric, dims, minute, aggregation,
                                                         as_of=as_of)


def expected_bucket_value(resource_id: str, metric: str, dims: Mapping[str, str] | None,
                          start: datetime | str, end: datetime | str, aggregation: str, *,
                          model: SyntheticModel | None = None, as_of: datetime | None = None):
    """``expected_value`` over the minutes in ``[start, end)`` (one PT5M / PT1H / FULL bucket)."""
    return _model_for(resource_id, model).expected_bucket_value(resource_id, metric, dims, start, end,
                                                                aggregation, as_of=as_of)


# --------------------------------------------------------------------------------------------
# Faults and request log
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class FaultRule:
    """A programmed failure.  ``times`` = how many matching requests it hits (None = unlimited),
    ``probability``/``seed`` = hit only a seeded random fraction.  ``status`` None with
    ``action="reset"`` drops the TCP connection without an answer.  ``region`` restricts batch
    faults to one regional endpoint; ``match(record)`` is an extra predicate."""

    kind: str = "*"
    status: int | None = 429
    times: int | None = 1
    probability: float = 1.0
    seed: int | None = None
    retry_after: float | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: Any = None
    delay: float = 0.0
    action: str = "respond"  # respond | reset | delay_only
    region: str | None = None
    match: Callable[["RequestRecord"], bool] | None = None
    hits: int = 0
    _rng: random.Random | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def applies_to(self, rec: "RequestRecord") -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        k = self.kind
        if k != "*":
            if k == "arm":
                if not rec.kind.startswith("arm_"):
                    return False
            elif k == "entra":
                if rec.kind not in ("token", "openid", "instance_discovery"):
                    return False
            elif k != rec.kind:
                return False
        if self.region is not None and (rec.region or "") != _norm_region(self.region):
            return False
        if self.match is not None and not self.match(rec):
            return False
        if self.probability < 1.0 and self._rng.random() >= self.probability:  # type: ignore[union-attr]
            return False
        return True


@dataclasses.dataclass
class RequestRecord:
    time: float
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    kind: str
    region: str | None = None
    status: int | None = None
    faulted: bool = False
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    audience: str | None = None
    client_id: str | None = None

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    def param(self, name: str) -> str | None:
        for k, v in self.query.items():
            if k.lower() == name.lower():
                return v[0] if v else ""
        return None

    @property
    def resource_ids(self) -> list[str]:
        j = self.json
        return list(j.get("resourceids", [])) if isinstance(j, dict) else []

    @property
    def metric_names(self) -> list[str]:
        v = self.param("metricnames")
        return [x for x in v.split(",") if x] if v else []


def _default_fault_body(kind: str, status: int, retry_after: float | None) -> Any:
    if kind == "token":
        err = {429: "temporarily_unavailable", 503: "temporarily_unavailable"}.get(status, "server_error")
        return {"error": err, "error_description": f"AADSTS50196: stand-in injected HTTP {status}.",
                "error_codes": [50196], "timestamp": fmt_time(datetime.now(timezone.utc)),
                "trace_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4())}
    if status == 500:
        return ARGUMENT_OUT_OF_RANGE_BODY
    if status == 429:
        if kind == "arm_metric_definitions":
            return {"error": {"code": "ResourceRequestsThrottled",
                              "message": "Number of requests for action 'Microsoft.Insights/metricDefinitions/"
                                         "read' exceeded the limit of '400' for time interval "
                                         "'00:05:00'. Please try again after "
                                         f"'{int(retry_after or 0)}' seconds."}}
        if kind.startswith("arm_"):
            return {"error": {"code": "SubscriptionRequestsThrottled",
                              "message": "Number of 'read' requests for subscription exceeded. Please try "
                                         f"again after '{int(retry_after or 0)}' seconds."}}
        return {"error": {"code": "TooManyRequests", "message": "Too many requests. Please retry later."}}
    if status == 503:
        return {"error": {"code": "ServiceUnavailable",
                          "message": "The service is temporarily unavailable. Please retry later."}}
    if status == 529:
        return {"error": {"code": "Throttled",
                          "message": "The metrics backend is throttling requests (HTTP 529); "
                                     "retry with exponential backoff."}}
    if status == 401:
        return {"error": {"code": "AuthenticationFailed", "message": "Authentication failed."}}
    if status == 403:
        return {"error": {"code": "AuthorizationFailed",
                          "message": "The client does not have authorization to perform action "
                                     "'Microsoft.Insights/metrics/read'."}}
    return {"error": {"code": "InjectedFault", "message": f"stand-in injected HTTP {status}"}}


# --------------------------------------------------------------------------------------------
# TLS material (one CA per process)
# --------------------------------------------------------------------------------------------

_TLS_LOCK = threading.Lock()
_TLS: dict[str, Any] = {}


def _tls_material() -> dict[str, Any]:
    with _TLS_LOCK:
        if not _TLS:
            ca = trustme.CA(organization_name="aoai-monitor test CA")
            cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
            tmp = tempfile.mkdtemp(prefix="aoai-standin-ca-")
            ca_path = os.path.join(tmp, "ca.pem")
            ca.cert_pem.write_to_path(ca_path)
            atexit.register(shutil.rmtree, tmp, True)
            _TLS.update(ca=ca, cert=cert, ca_path=ca_path, ca_pem=ca.cert_pem.bytes())
        return _TLS


# --------------------------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------------------------

class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    owner: "AzureMonitorStandin"

    def process_request(self, request, client_address):  # noqa: ANN001
        self.owner._on_connection(request)
        super().process_request(request, client_address)

    def handle_error(self, request, client_address):  # noqa: ANN001
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError, OSError)):
            return
        if self.owner.verbose:
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    timeout = 60
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.owner.verbose:
            sys.stderr.write("standin: " + (format % args) + "\n")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                line = self.rfile.readline().strip()
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self) -> None:
        self.server.owner._dispatch(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle  # noqa: N815

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass


class _Reply:
    def __init__(self, status: int, body: Any = None, headers: Mapping[str, str] | None = None,
                 content_type: str = "application/json; charset=utf-8"):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.content_type = content_type


class AzureMonitorStandin:
    """The stand-in server.  Use as a context manager or call ``start()`` / ``stop()``.

    Main attributes: ``model`` (SyntheticModel), ``url``, ``authority``, ``arm_endpoint``,
    ``metrics_endpoint_template``, ``metrics_endpoint(region)``, ``ca_bundle_path``, ``ssl_context()``,
    ``tenant_id``, ``client_id``, ``client_secret``, ``arm_audience``/``arm_scope``,
    ``metrics_audience``/``metrics_scope``; faults: ``inject()``, ``clear_faults()``; log:
    ``requests()``, ``counts()``, ``count()``, ``reset_log()``, ``connections_accepted``.
    """

    def __init__(self, model: SyntheticModel | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 tenant_id: str = DEFAULT_TENANT_ID, clients: Mapping[str, str] | None = None,
                 token_lifetime: int = 3600, arm_audiences: Sequence[str] = (ARM_AUDIENCE, ARM_AUDIENCE_LEGACY),
                 metrics_audiences: Sequence[str] = (METRICS_AUDIENCE,), arm_page_size: int = 100,
                 arm_read_bucket: tuple[int, float] = (250, 25.0),
                 metric_definitions_budget: tuple[int, float] = (400, 300.0),
                 batch_rate_limit: tuple[int, float] = (3000, 30.0), verbose: bool = False):
        self.model = model or SyntheticModel()
        self.host = host
        self._port = port
        self.tenant_id = tenant_id
        self.clients = dict(clients or {DEFAULT_CLIENT_ID: DEFAULT_CLIENT_SECRET})
        self.client_id, self.client_secret = next(iter(self.clients.items()))
        self.token_lifetime = token_lifetime
        self.arm_audiences = [a.rstrip("/") for a in arm_audiences]
        self.metrics_audiences = [a.rstrip("/") for a in metrics_audiences]
        self.arm_page_size = arm_page_size
        self.arm_read_bucket = arm_read_bucket
        self.metric_definitions_budget = metric_definitions_budget
        self.batch_rate_limit = batch_rate_limit
        self.verbose = verbose
        self._secret = os.urandom(32)
        self._lock = threading.RLock()
        self._log: list[RequestRecord] = []
        self._faults: list[FaultRule] = []
        self._buckets: dict[tuple, list[float]] = {}
        self._windows: dict[tuple, list[float]] = {}
        self._conns: "weakref.WeakSet[socket.socket]" = weakref.WeakSet()
        self.connections_accepted = 0
        self.tokens_issued = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "AzureMonitorStandin":
        tls = _tls_material()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls["cert"].configure_cert(ctx)
        httpd = _HTTPServer((self.host, self._port), _Handler)
        httpd.owner = self
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        self._httpd = httpd
        self._port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"azure-monitor-standin:{self._port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        for c in list(self._conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                c.close()
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = None

    def __enter__(self) -> "AzureMonitorStandin":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _on_connection(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections_accepted += 1
            self._conns.add(sock)

    # --- addresses ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self._port}"

    @property
    def authority(self) -> str:
        """Value for azure-identity's ``authority=`` (an authority *host*; the tenant is separate)."""
        return self.url

    @property
    def arm_endpoint(self) -> str:
        return self.url

    @property
    def metrics_endpoint_template(self) -> str:
        return self.url + "/regions/{region}"

    def metrics_endpoint(self, region: str) -> str:
        return self.metrics_endpoint_template.format(region=_norm_region(region))

    @property
    def token_endpoint(self) -> str:
        return f"{self.url}/{self.tenant_id}/oauth2/v2.0/token"

    @property
    def ca_bundle_path(self) -> str:
        return _tls_material()["ca_path"]

    @property
    def ca_pem(self) -> bytes:
        return _tls_material()["ca_pem"]

    def ssl_context(self) -> ssl.SSLContext:
        """A client SSLContext trusting only the stand-in CA."""
        return ssl.create_default_context(cafile=self.ca_bundle_path)

    @property
    def arm_audience(self) -> str:
        return self.arm_audiences[0]

    @property
    def metrics_audience(self) -> str:
        return self.metrics_audiences[0]

    @property
    def arm_scope(self) -> str:
        return self.arm_audience + "/.default"

    @property
    def metrics_scope(self) -> str:
        return self.metrics_audience + "/.default"

    def credential(self, **kwargs: Any):
        """A sync azure-identity ``ClientSecretCredential`` configured for this server."""
        from azure.identity import ClientSecretCredential

        kwargs.setdefault("authority", self.authority)
        kwargs.setdefault("disable_instance_discovery", True)
        kwargs.setdefault("connection_verify", self.ca_bundle_path)
        return ClientSecretCredential(self.tenant_id, self.client_id, self.client_secret, **kwargs)

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url, "authority": self.authority, "tenant_id": self.tenant_id,
            "client_id": self.client_id, "client_secret": self.client_secret,
            "arm_endpoint": self.arm_endpoint, "arm_scope": self.arm_scope,
            "metrics_endpoint_template": self.metrics_endpoint_template,
            "metrics_scope": self.metrics_scope, "ca_bundle_path": self.ca_bundle_path,
            "subscriptions": self.model.subscriptions(),
            "resources": [{"id": r.id, "kind": r.kind, "location": r.location} for r in self.model.resources],
        }

    # --- faults ------------------------------------------------------------------------------
    def inject(self, kind: str = "*", status: int | None = 429, *, times: int | None = 1,
               probability: float = 1.0, seed: int | None = None, retry_after: float | None = None,
               headers: Mapping[str, str] | None = None, body: Any = None, delay: float = 0.0,
               action: str = "respond", region: str | None = None,
               match: Callable[[RequestRecord], bool] | None = None) -> FaultRule:
        """Program a failure for the next ``times`` matching requests (``times=None``: until cleared;
        combine with ``probability``/``seed``).  Returns the rule (``rule.hits`` counts firings)."""
        if kind not in KINDS and kind not in ("*", "arm", "entra"):
            raise ValueError(f"unknown endpoint kind {kind!r}; use one of {KINDS} or '*', 'arm', 'entra'")
        if action not in ("respond", "reset", "delay_only"):
            raise ValueError(f"unknown action {action!r}")
        rule = FaultRule(kind=kind, status=status, times=times, probability=probability, seed=seed,
                         retry_after=retry_after, headers=dict(headers or {}), body=body, delay=delay,
                         action=action, region=region, match=match)
        with self._lock:
            self._faults.append(rule)
        return rule

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[FaultRule]:
        with self._lock:
            return list(self._faults)

    # --- log ---------------------------------------------------------------------------------
    def requests(self, kind: str | None = None, *, region: str | None = None) -> list[RequestRecord]:
        with self._lock:
            out = list(self._log)
        if kind is not None:
            out = [r for r in out if r.kind == kind or (kind == "arm" and r.kind.startswith("arm_"))]
        if region is not None:
            out = [r for r in out if r.region == _norm_region(region)]
        return out

    def counts(self) -> collections.Counter:
        with self._lock:
            return collections.Counter(r.kind for r in self._log)

    def count(self, kind: str | None = None, *, region: str | None = None, status: int | None = None) -> int:
        return sum(1 for r in self.requests(kind, region=region) if status is None or r.status == status)

    def counts_by_region(self, kind: str = "batch") -> collections.Counter:
        return collections.Counter(r.region for r in self.requests(kind))

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    # --- tokens ------------------------------------------------------------------------------
    def mint_token(self, scope_or_audience: str, *, client_id: str | None = None,
                   lifetime: int | None = None) -> str:
        aud = scope_or_audience
        if aud.endswith("/.default"):
            aud = aud[: -len("/.default")]
        now = int(time.time())
        payload = {
            "aud": aud.rstrip("/"), "iss": f"{self.url}/{self.tenant_id}/v2.0", "iat": now, "nbf": now,
            "exp": now + (self.token_lifetime if lifetime is None else lifetime),
            "appid": client_id or self.client_id, "tid": self.tenant_id, "oid": str(uuid.uuid4()),
            "idtyp": "app", "ver": "1.0",
        }
        h = _b64(json.dumps({"typ": "JWT", "alg": "HS256", "kid": "standin"}).encode())
        p = _b64(json.dumps(payload, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self._secret, f"{h}.{p}".encode(), hashlib.sha256).digest())
        return f"{h}.{p}.{sig}"

    def decode_token(self, token: str) -> dict[str, Any] | None:
        try:
            h, p, sig = token.split(".")
        except ValueError:
            return None
        good = _b64(hmac.new(self._secret, f"{h}.{p}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(good, sig):
            return None
        try:
            return json.loads(_unb64(p))
        except ValueError:
            return None

    # --- dispatch ----------------------------------------------------------------------------
    def _classify(self, method: str, segs: list[str]) -> tuple[str, dict[str, Any]]:
        low = [s.lower() for s in segs]
        n = len(segs)
        if n == 4 and low[1:] == ["oauth2", "v2.0", "token"]:
            return "token", {"tenant": segs[0]}
        if n == 4 and low[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            return "openid", {"tenant": segs[0]}
        if n == 3 and low[1:] == [".well-known", "openid-configuration"]:
            return "openid", {"tenant": segs[0]}
        if n == 3 and low == ["common", "discovery", "instance"]:
            return "instance_discovery", {}
        if n >= 2 and low[0] == "regions":
            rest = low[2:]
            if len(rest) == 3 and rest[0] == "subscriptions" and rest[2] == "metrics:getbatch":
                return "batch", {"region": _norm_region(segs[1]), "subscription": segs[3]}
            return "unknown", {"region": _norm_region(segs[1])}
        if n == 0 or low[0] != "subscriptions":
            return "unknown", {}
        if n == 1:
            return "arm_subscriptions", {}
        if n >= 4 and low[-3] == "providers" and low[-2] == "microsoft.insights" and low[-1] in (
                "metrics", "metricdefinitions", "metricnamespaces"):
            kind = {"metrics": "arm_metrics", "metricdefinitions": "arm_metric_definitions",
                    "metricnamespaces": "arm_metric_namespaces"}[low[-1]]
            return kind, {"resource_uri": "/" + "/".join(segs[:-3]), "subscription": segs[1]}
        if n == 2:
            return "arm_subscriptions", {"subscription": segs[1]}
        if n == 3 and low[2] == "resources":
            return "arm_resources", {"subscription": segs[1]}
        if n == 5 and low[2] == "resourcegroups" and low[4] == "resources":
            return "arm_resources", {"subscription": segs[1], "resource_group": segs[3]}
        if n == 5 and low[2] == "providers" and f"{low[3]}/{low[4]}" == ACCOUNT_TYPE.lower():
            return "arm_accounts", {"subscription": segs[1]}
        if n == 7 and low[2] == "resourcegroups" and low[4] == "providers" and \
                f"{low[5]}/{low[6]}" == ACCOUNT_TYPE.lower():
            return "arm_accounts", {"subscription": segs[1], "resource_group": segs[3]}
        if n >= 8 and low[2] == "resourcegroups" and low[4] == "providers":
            rid = "/" + "/".join(segs[:8])
            if n == 8:
                return "arm_resource", {"subscription": segs[1], "resource_id": rid}
            if n == 9 and low[8] == "deployments":
                return "arm_deployments", {"subscription": segs[1], "resource_id": rid}
            if n == 10 and low[8] == "deployments":
                return "arm_deployment", {"subscription": segs[1], "resource_id": rid,
                                          "deployment": segs[9]}
        return "unknown", {"subscription": segs[1]}

    def _dispatch(self, h: _Handler) -> None:
        body = h._read_body()
        parts = urlsplit(h.path)
        path = parts.path
        query_list = parse_qsl(parts.query, keep_blank_values=True)
        query: dict[str, list[str]] = {}
        for k, v in query_list:
            query.setdefault(k, []).append(v)
        segs = [s for s in path.split("/") if s]
        kind, info = self._classify(h.command, segs)
        rec = RequestRecord(time=time.time(), method=h.command, path=path, query=query, body=body, kind=kind,
                            region=info.get("region"),
                            headers={k: v for k, v in h.headers.items()})
        with self._lock:
            self._log.append(rec)
            fault = next((f for f in self._faults if f.applies_to(rec)), None)
            if fault is not None:
                fault.hits += 1
        try:
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.action == "reset":
                    rec.status, rec.faulted = 0, True
                    self._reset(h)
                    return
                if fault.action == "respond" and fault.status is not None:
                    rec.faulted = True
                    hdrs = dict(fault.headers)
                    if fault.retry_after is not None:
                        ra = fault.retry_after
                        hdrs.setdefault("Retry-After", str(int(ra)) if float(ra).is_integer() else str(ra))
                    reply = _Reply(fault.status, fault.body if fault.body is not None else
                                   _default_fault_body(kind, fault.status, fault.retry_after), hdrs)
                    self._send(h, rec, reply)
                    return
            reply = self._route(h.command, kind, info, rec, h)
        except ApiError as e:
            hdrs = dict(e.headers)
            if e.status == 401 and kind not in ("token", "openid"):
                hdrs.setdefault("WWW-Authenticate",
                                f'Bearer authorization_uri="{self.url}/{self.tenant_id}", '
                                f'error="invalid_token", error_description="{e.message}"')
            reply = _Reply(e.status, e.payload(), hdrs)
        except Exception as e:  # pragma: no cover - bug in the stand-in
            reply = _Reply(500, {"error": {"code": "StandinBug", "message": repr(e)}})
            if self.verbose:
                import traceback

                traceback.print_exc()
        self._send(h, rec, reply)

    @staticmethod
    def _reset(h: _Handler) -> None:
        h.close_connection = True
        try:
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            sock = h.connection
            if isinstance(sock, ssl.SSLSocket):
                raw = socket.socket(fileno=sock.detach())
                raw.close()
            else:
                sock.close()
        except OSError:
            pass

    def _send(self, h: _Handler, rec: RequestRecord, reply: _Reply) -> None:
        rec.status = reply.status
        if reply.body is None:
            data = b""
        elif isinstance(reply.body, (bytes, bytearray)):
            data = bytes(reply.body)
        elif isinstance(reply.body, str):
            data = reply.body.encode()
        else:
            data = json.dumps(reply.body, separators=(",", ":")).encode()
        try:
            h.send_response(reply.status)
            corr = h.headers.get("x-ms-client-request-id") or str(uuid.uuid4())
            h.send_header("Content-Type", reply.content_type)
            h.send_header("Content-Length", str(len(data)))
            h.send_header("Cache-Control", "no-cache")
            h.send_header("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
            h.send_header("X-Content-Type-Options", "nosniff")
            h.send_header("x-ms-request-id", str(uuid.uuid4()))
            h.send_header("x-ms-correlation-request-id", corr)
            if rec.kind.startswith("arm_"):
                h.send_header("x-ms-routing-request-id",
                              f"WESTUS:{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}:{corr}")
            for k, v in reply.headers.items():
                h.send_header(k, v)
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(data)
            h.wfile.flush()
        except OSError:
            h.close_connection = True

    # --- auth & rate limits ------------------------------------------------------------------
    def _auth(self, h: _Handler, rec: RequestRecord, audiences: Sequence[str]) -> dict[str, Any]:
        header = h.headers.get("Authorization", "")
        if not header:
            raise ApiError(401, "AuthenticationFailed",
                           "Authentication failed. The 'Authorization' header is missing.")
        if not header.lower().startswith("bearer "):
            raise ApiError(401, "AuthenticationFailed",
                           "Authentication failed. The 'Authorization' header is provided in an invalid format.")
        claims = self.decode_token(header[7:].strip())
        if claims is None:
            raise ApiError(401, "InvalidAuthenticationToken", "The access token is invalid.")
        rec.audience = claims.get("aud")
        rec.client_id = claims.get("appid")
        if claims.get("exp", 0) < time.time():
            raise ApiError(401, "ExpiredAuthenticationToken",
                           "The access token expiry UTC time "
                           f"'{fmt_time(datetime.fromtimestamp(claims['exp'], timezone.utc))}' is earlier "
                           f"than current UTC time '{fmt_time(datetime.now(timezone.utc))}'.")
        if str(claims.get("aud", "")).rstrip("/") not in audiences:
            raise ApiError(401, "InvalidAuthenticationTokenAudience",
                           f"The access token has been obtained for wrong audience or resource "
                           f"'{claims.get('aud')}'. It should exactly match with one of the allowed "
                           f"audiences {', '.join(repr(a) for a in audiences)}.")
        return claims

    def _token_bucket(self, key: tuple, capacity: int, refill: float) -> int:
        """Consume one token; returns the remaining count or raises 429."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, [float(capacity), now])
            tokens = min(float(capacity), tokens + (now - last) * refill)
            if tokens < 1:
                self._buckets[key] = [tokens, now]
                wait = max(1, math.ceil((1 - tokens) / refill))
                raise ApiError(429, "SubscriptionRequestsThrottled",
                               f"Number of 'read' requests for subscription '{key[1]}' actor '{key[2]}' "
                               f"exceeded. Please try again after '{wait}' seconds.",
                               headers={"Retry-After": str(wait),
                                        "x-ms-ratelimit-remaining-subscription-reads": "0"})
            tokens -= 1
            self._buckets[key] = [tokens, now]
            return int(tokens)

    def _window(self, key: tuple, limit: int, seconds: float, code: str, message: str) -> tuple[int, float]:
        now = time.time()
        with self._lock:
            start, used = self._windows.get(key, [now, 0])
            if now - start >= seconds:
                start, used = now, 0
            if used >= limit:
                wait = max(1, math.ceil(start + seconds - now))
                raise ApiError(429, code, message.format(wait=wait), headers={"Retry-After": str(wait)})
            used += 1
            self._windows[key] = [start, used]
            return limit - used, start + seconds

    # --- routes ------------------------------------------------------------------------------
    def _route(self, method: str, kind: str, info: dict[str, Any], rec: RequestRecord, h: _Handler) -> _Reply:
        if kind == "token":
            return self._token(method, info, rec)
        if kind == "openid":
            return self._openid(info)
        if kind == "instance_discovery":
            return self._instance_discovery(rec)
        if kind == "batch":
            return self._batch(method, info, rec, h)
        if kind == "unknown":
            raise ApiError(404, "NotFound", f"No route for {method} {rec.path} in the stand-in.")
        # ARM
        claims = self._auth(h, rec, self.arm_audiences)
        if rec.param("api-version") is None:
            raise ApiError(400, "MissingApiVersionParameter",
                           "The api-version query parameter (?api-version=) is required for all requests.")
        if method not in ("GET", "HEAD"):
            raise ApiError(405, "MethodNotAllowed", f"The stand-in only supports GET on {rec.path}.")
        sub = info.get("subscription") or "-"
        headers = {}
        if kind == "arm_metric_definitions":
            limit, secs = self.metric_definitions_budget
            remaining, _ = self._window(
                ("defs", sub.lower(), claims.get("appid")), limit, secs, "ResourceRequestsThrottled",
                "Number of requests for action 'Microsoft.Insights/metricDefinitions/read' exceeded the "
                f"limit of '{limit}' for time interval '00:05:00'. Please try again after '{{wait}}' seconds.")
            headers["x-ms-ratelimit-remaining-subscription-resource-requests"] = str(remaining)
        cap, refill = self.arm_read_bucket
        remaining = self._token_bucket(("reads", sub.lower(), claims.get("appid")), cap, refill)
        headers["x-ms-ratelimit-remaining-subscription-reads"] = str(remaining)
        handler = {
            "arm_subscriptions": self._arm_subscriptions,
            "arm_resources": self._arm_resources,
            "arm_accounts": self._arm_resources,
            "arm_resource": self._arm_resource,
            "arm_deployments": self._arm_deployments,
            "arm_deployment": self._arm_deployment,
            "arm_metrics": self._arm_metrics,
            "arm_metric_definitions": self._arm_metric_definitions,
            "arm_metric_namespaces": self._arm_metric_namespaces,
        }[kind]
        reply = handler(kind, info, rec)
        reply.headers.update(headers)
        return reply

    # Entra ---------------------------------------------------------------------------------
    def _openid(self, info: dict[str, Any]) -> _Reply:
        t = info["tenant"]
        base = f"{self.url}/{t}"
        return _Reply(200, {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": f"{self.url}/{t}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{self.url}/{self.tenant_id if t in ('common', 'organizations') else t}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.url}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "ver"],
            "tenant_region_scope": "NA",
            "cloud_instance_name": "standin.local",
            "cloud_graph_host_name": "graph.standin.local",
            "msgraph_host": "graph.standin.local",
        })

    def _instance_discovery(self, rec: RequestRecord) -> _Reply:
        host = f"{self.host}:{self._port}"
        return _Reply(200, {
            "tenant_discovery_endpoint": f"{self.url}/{self.tenant_id}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        })

    def _aad_error(self, status: int, error: str, code: int, text: str) -> ApiError:
        body = {"error": error, "error_description": f"AADSTS{code}: {text}", "error_codes": [code],
                "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"),
                "trace_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4()),
                "error_uri": f"{self.url}/error?code={code}"}
        return ApiError(status, error, text, body=body)

    def _token(self, method: str, info: dict[str, Any], rec: RequestRecord) -> _Reply:
        if method != "POST":
            raise self._aad_error(405, "invalid_request", 900561,
                                  "The endpoint only accepts POST requests.")
        tenant = info["tenant"]
        if tenant.lower() not in (self.tenant_id.lower(), "organizations"):
            raise self._aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        form = dict(parse_qsl(rec.body.decode("utf-8", "replace"), keep_blank_values=True))
        if form.get("grant_type") != "client_credentials":
            raise self._aad_error(400, "unsupported_grant_type", 70003,
                                  f"The app requested an unsupported grant type '{form.get('grant_type')}'.")
        cid = form.get("client_id")
        if cid not in self.clients:
            raise self._aad_error(400, "unauthorized_client", 700016,
                                  f"Application with identifier '{cid}' was not found in the directory.")
        if form.get("client_secret") != self.clients[cid]:
            raise self._aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        scopes = [s for s in form.get("scope", "").split() if s not in ("openid", "profile", "offline_access")]
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise self._aad_error(400, "invalid_scope", 1002012,
                                  f"The provided value for scope {form.get('scope')!r} is not valid. "
                                  "Client credential flows must have a scope value with /.default "
                                  "suffixed to the resource identifier.")
        rec.client_id = cid
        rec.audience = scopes[0][: -len("/.default")]
        with self._lock:
            self.tokens_issued += 1
        return _Reply(200, {
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "ext_expires_in": self.token_lifetime,
            "access_token": self.mint_token(scopes[0], client_id=cid),
        })

    # ARM -----------------------------------------------------------------------------------
    def _page(self, items: list[dict[str, Any]], rec: RequestRecord) -> _Reply:
        try:
            skip = int(rec.param("$skiptoken") or 0)
        except ValueError:
            raise _bad("Invalid $skiptoken.", "InvalidSkipToken")
        size = self.arm_page_size
        top = rec.param("$top")
        if top:
            size = min(size, int(top))
        page = items[skip: skip + size]
        out: dict[str, Any] = {"value": page}
        if skip + size < len(items) and not top:
            q = [(k, v) for k, vs in rec.query.items() for v in vs if k.lower() != "$skiptoken"]
            q.append(("$skiptoken", str(skip + size)))
            out["nextLink"] = f"{self.url}{rec.path}?{urlencode(q, quote_via=quote)}"
        return _Reply(200, out)

    def _arm_subscriptions(self, kind: str, info: dict[str, Any], rec: RequestRecord) -> _Reply:
        subs = self.model.subscriptions()

        def sub_json(s: str) -> dict[str, Any]:
            return {"id": f"/subscriptions/{s}", "authorizationSource": "RoleBased", "managedByTenants": [],
                    "subscriptionId": s, "tenantId": self.tenant_id, "displayName": f"standin-{s[-4:]}",
                    "state": "Enabled",
                    "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01",
                                             "quotaId": "PayAsYouGo_2014-09-01", "spendingLimit": "Off"}}

        if "subscription" in info:
            s = next((x for x in subs if x.lower() == info["subscription"].lower()), None)
            if s is None:
                raise ApiError(404, "SubscriptionNotFound", f"The subscription '{info['subscription']}' "
                                                            "could not be found.")
            return _Reply(200, sub_json(s))
        return _Reply(200, {"value": [sub_json(s) for s in subs], "count": {"type": "Total", "value": len(subs)}})

    def _check_sub(self, sub: str) -> None:
        if sub.lower() not in (s.lower() for s in self.model.subscriptions()):
            raise ApiError(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")

    def _resource_summary(self, r: Resource, expand: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": r.id, "name": r.name, "type": r.resource_type, "sku": {"name": r.sku},
                               "kind": r.kind, "location": r.location}
        if r.tags:
            out["tags"] = dict(r.tags)
        if expand:
            ex = expand.lower()
            if "createdtime" in ex:
                out["createdTime"] = "2024-05-01T10:00:00.0000000Z"
            if "changedtime" in ex:
                out["changedTime"] = "2024-06-01T10:00:00.0000000Z"
            if "provisioningstate" in ex:
                out["provisioningState"] = "Succeeded"
        return out

    _RES_FILTER_RE = re.compile(r"^\s*(?P<f>resourceType|location|resourceGroup|name|tagName|tagValue)\s+eq\s+"
                                r"'(?P<v>(?:[^']|'')*)'\s*$", re.I)

    def _arm_resources(self, kind: str, info: dict[str, Any], rec: RequestRecord) -> _Reply:
        sub = info["subscription"]
        self._check_sub(sub)
        rg = info.get("resource_group")
        items = [r for r in self.model.resources if r.subscription_id.lower() == sub.lower()]
        if rg is not None:
            if not any(r.resource_group.lower() == rg.lower() for r in items):
                raise ApiError(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
            items = [r for r in items if r.resource_group.lower() == rg.lower()]
        if kind == "arm_accounts":
            items = [r for r in items if r.is_account]
        filt = rec.param("$filter")
        if filt:
            tag_name = tag_value = None
            for clause in _split_outside_quotes(filt, "and"):
                m = self._RES_FILTER_RE.match(clause)
                if not m:
                    raise ApiError(400, "InvalidFilterInQueryString",
                                   f"Invalid $filter '{filt}' specified in the query string.")
                f, v = m["f"].lower(), m["v"].replace("''", "'")
                if f == "resourcetype":
                    items = [r for r in items if r.resource_type.lower() == v.lower()]
                elif f == "location":
                    items = [r for r in items if _norm_region(r.location) == _norm_region(v)]
                elif f == "resourcegroup":
                    items = [r for r in items if r.resource_group.lower() == v.lower()]
                elif f == "name":
                    items = [r for r in items if r.name.lower() == v.lower()]
                elif f == "tagname":
                    tag_name = v
                elif f == "tagvalue":
                    tag_value = v
            if tag_value is not None and tag_name is None:
                raise ApiError(400, "InvalidFilterInQueryString", "tagValue requires tagName.")
            if tag_name is not None:
                items = [r for r in items
                         if tag_name in r.tags and (tag_value is None or r.tags[tag_name] == tag_value)]
        items = sorted(items, key=lambda r: r.id.lower())
        if kind == "arm_accounts":
            return self._page([self._account_json(r) for r in items], rec)
        return self._page([self._resource_summary(r, rec.param("$expand")) for r in items], rec)

    def _account_json(self, r: Resource) -> dict[str, Any]:
        out = self._resource_summary(r, None)
        if not r.is_account:
            return out
        sub = r.name.lower()
        host = "openai.azure.com" if r.kind.lower() == "openai" else "cognitiveservices.azure.com"
        out.update({
            "etag": f"\"{hashlib.md5(r.id.lower().encode()).hexdigest()}\"",
            "tags": dict(r.tags),
            "properties": {
                "endpoint": f"https://{sub}.{host}/",
                "endpoints": {"OpenAI Language Model Instance API": f"https://{sub}.openai.azure.com/"}
                if r.emits_family("openai") else {},
                "internalId": hashlib.md5(r.id.lower().encode()).hexdigest(),
                "dateCreated": "2024-05-01T10:00:00.0000000Z",
                "customSubDomainName": sub,
                "provisioningState": "Succeeded",
                "publicNetworkAccess": "Enabled",
                "networkAcls": {"defaultAction": "Allow", "virtualNetworkRules": [], "ipRules": []},
                "capabilities": [{"name": "VirtualNetworks"}, {"name": "CustomerManagedKey"}],
            },
            "systemData": {"createdBy": "standin", "createdByType": "Application",
                           "createdAt": "2024-05-01T10:00:00.0000000Z"},
        })
        return out

    def _find_or_404(self, resource_id: str) -> Resource:
        r = self.model.find(resource_id)
        if r is None:
            segs = [s for s in resource_id.split("/") if s]
            rg = segs[3] if len(segs) > 3 else "?"
            rtype = "/".join(segs[5:7]) if len(segs) > 6 else "?"
            name = segs[7] if len(segs) > 7 else "?"
            raise ApiError(404, "ResourceNotFound",
                           f"The Resource '{rtype}/{name}' under resource group '{rg}' was not found. "
                           "For more details please go to https://aka.ms/ARMResourceNotFoundFix")
        return r

    def _arm_resource(self, kind: str, info: dict[str, Any], rec: RequestRecord) -> _Reply:
        self._check_sub(info["subscription"])
        return _Reply(200, self._account_json(self._find_or_404(info["resource_id"])))

    def _deployment_json(self, r: Resource, d: Deployment) -> dict[str, Any]:
        caps: dict[str, str] = {}
        if d.is_chat and not d.is_realtime:
            caps = {"chatCompletion": "true", "maxContextToken": "128000", "maxOutputToken": "16384"}
        elif d.is_embedding:
            caps = {"embeddings": "true", "embeddingsMaxInputs": "2048"}
        elif d.is_realtime:
            caps = {"realtime": "true"}
        rate = []
        if not d.is_ptu:
            rate = [{"key": "request", "renewalPeriod": 10, "count": max(1, d.capacity // 10)},
                    {"key": "token", "renewalPeriod": 60, "count": d.capacity * 1000}]
        return {
            "id": f"{r.id}/deployments/{d.name}",
            "type": "Microsoft.CognitiveServices/accounts/deployments",
            "name": d.name,
            "sku": {"name": d.sku, "capacity": d.capacity},
            "properties": {
                "model": {"format": d.model_format, "name": d.model, "version": d.version},
                "versionUpgradeOption": "OnceNewDefaultVersionAvailable",
                "currentCapacity": d.capacity,
                "capabilities": caps,
                "raiPolicyName": "Microsoft.DefaultV2",
                "provisioningState": "Succeeded",
                "rateLimits": rate,
            },
            "systemData": {"createdBy": "standin", "createdByType": "Application",
                           "createdAt": "2024-05-01T10:00:00.0000000Z"},
            "etag": f"\"{hashlib.md5((r.id + d.name).lower().encode()).hexdigest()}\"",
        }

    def _arm_deployments(self, kind: str, info: dict[str, Any], rec: RequestRecord) -> _Reply:
        self._check_sub(info["subscription"])
        r = self._find_or_404(info["resource_id"])
        return self._page([self._deployment_json(r, d) for d in r.deployments], rec)

    def _arm_deployment(self, kind: str, info: dict[str, Any], rec: RequestRecord) -> _Reply:
        self._check_sub(info["subscription"])
        r = self._find_or_404(info["resource_id"])
        for d in r.deployments:
            if d.name.lower() == info["deployment"].lower():
                return _Reply(200, self._deployment_json(r, d))
        raise ApiError(404, "DeploymentNotFound", f"Deployment '{info['deployment']}' not found.")

    def _timespan(self, rec: RequestRecord) -> tuple[datetime, datetime]:
        ts = rec.param("timespan")
        now = self.model.clock()
        if not ts:
            return now - timedelta(hours=1), now
        try:
            if "/" in ts:
                a, b = ts.split("/", 1)
                if a.upper().startswith("P"):
                    e = parse_time(b)
                    return e - parse_duration(a), e
                s = parse_time(a)
                return s, (s + parse_duration(b)) if b.upper().startswith("P") else parse_time(b)
            return now - parse_duration(ts), now
        except ValueError as e:
            raise _bad(f"Invalid timespan {ts!r}: {e}")

    def _check_range(self, start: datetime, end: datetime) -> None:
        if end < start:
            raise _bad(f"Query start time {fmt_time(start)} is after end time {fmt_time(end)}.")
        if self.model.retention is not None and start < self.model.clock() - self.model.retention:
            raise _bad(f"Query startTime: {fmt_time(start)} is out of the Max metrics retention period: "
                       f"{self.model.retention.days}.00:00:00")

    def _interval(self, value: str | None) -> str:
        iv = (value or "PT1M").upper()
        if iv != "FULL" and iv not in GRAINS:
            raise _bad(f"Invalid time grain '{value}'. Supported: {', '.join(GRAINS)}, FULL",
                       code="BadRequest")
        return iv

    def _arm_metrics(self, kind: str, info: dict[str, Any], rec: RequestRecord) -> _Reply:
        uri = info["resource_uri"]
        if len([s for s in uri.split("/") if s]) == 2:
            raise ApiError(400, "NotSupported", "Subscription-scope metrics are not played by the stand-in.")
        self._check_sub(info["subscription"])
        r = self._find_or_404(uri)
        ns = rec.param("metricnamespace")
        if ns and ns.lower() != r.resource_type.lower():
            raise _bad(f"Metric namespace '{ns}' is not valid for resource type '{r.resource_type}'.")
        if not r.is_account:
            raise _bad(f"The stand-in has no metrics for resource type {r.resource_type}.")
        names = [x for x in (rec.param("metricnames") or "").split(",") if x]
        if not names:
            names = [m.name for m in _METRIC_LIST if r.emits_family(m.family)][:1]
        if len(names) > MAX_METRIC_NAMES:
            raise _bad(f"Requested {len(names)} metrics; at most {MAX_METRIC_NAMES} metric names are "
                       "allowed per request.")
        start, end = self._timespan(rec)
        self._check_range(start, end)
        interval = self._interval(rec.param("interval"))
        aggs = [a for a in (rec.param("aggregation") or "").split(",") if a] or None
        filt = rec.param("$filter") or rec.param("filter")
        top = rec.param("top") or rec.param("$top")
        vd = (rec.param("ValidateDimensions") or "true").lower() != "false"
        result_type = (rec.param("resultType") or "Data").lower()
        res = self.model.query(r, names, start, end, interval, aggs, filt, int(top) if top else None,
                               rec.param("orderby"), rec.param("rollupby"), result_type == "metadata", vd,
                               self.model.clock(), r.id)
        out = {"cost": res["cost"], "timespan": f"{fmt_time(start)}/{fmt_time(end)}",
               "interval": res["interval"], "value": res["value"], "namespace": res["namespace"],
               "resourceregion": res["resourceregion"]}
        return _Reply(200, out)

    def _arm_metric_definitions(self, kind: str, info: dict[str, Any], rec: RequestRecord) -> _Reply:
        self._check_sub(info["subscription"])
        r = self._find_or_404(info["resource_uri"])
        if not r.is_account:
            return _Reply(200, {"value": []})
        ns = rec.param("metricnamespace")
        if ns and ns.lower() != METRIC_NAMESPACE.lower():
            return _Reply(200, {"value": []})
        avail = [{"timeGrain": g, "retention": "P93D"} for g in GRAINS]
        defs = []
        for md in _METRIC_LIST:
            defs.append({
                "id": f"{r.id}/providers/microsoft.insights/metricdefinitions/{md.name}",
                "resourceId": r.id,
                "namespace": METRIC_NAMESPACE,
                "category": md.category,
                "name": {"value": md.name, "localizedValue": md.display},
                "displayDescription": md.description or f"{md.display}.",
                "isDimensionRequired": False,
                "unit": md.unit,
                "primaryAggregationType": md.primary_aggregation,
                "supportedAggregationTypes": list(md.aggregations),
                "metricAvailabilities": avail,
                "dimensions": [{"value": d, "localizedValue": d} for d in md.dimensions],
            })
        return _Reply(200, {"value": defs})

    def _arm_metric_namespaces(self, kind: str, info: dict[str, Any], rec: RequestRecord) -> _Reply:
        self._check_sub(info["subscription"])
        r = self._find_or_404(info["resource_uri"])
        ns = r.resource_type
        return _Reply(200, {"value": [{
            "id": f"{r.id}/providers/microsoft.insights/metricNamespaces/{ns.replace('/', '-')}",
            "name": ns.replace("/", "-"), "type": "Microsoft.Insights/metricNamespaces",
            "classification": "Platform", "properties": {"metricNamespaceName": ns}}]})

    # Batch ---------------------------------------------------------------------------------
    def _batch(self, method: str, info: dict[str, Any], rec: RequestRecord, h: _Handler) -> _Reply:
        if method != "POST":
            raise ApiError(405, "MethodNotAllowed", "metrics:getBatch only accepts POST.")
        claims = self._auth(h, rec, self.metrics_audiences)
        limit, secs = self.batch_rate_limit
        remaining, reset = self._window(("batch", info["subscription"].lower(), claims.get("appid")), limit, secs,
                                        "TooManyRequests", "Rate limit exceeded. Retry after {wait} seconds.")
        rl_headers = {
            "X-Rate-Limit-Limit": f"{int(secs)}s",
            "X-Rate-Limit-Remaining": str(remaining),
            "X-Rate-Limit-Reset": datetime.fromtimestamp(reset, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
            "Request-Context": "appId=cid-v1:00000000-0000-4000-8000-00000000c0de",
        }
        try:
            return self._batch_inner(info, rec, rl_headers)
        except ApiError as e:
            e.headers.update(rl_headers)
            raise

    def _batch_inner(self, info: dict[str, Any], rec: RequestRecord, rl_headers: dict[str, str]) -> _Reply:
        region = info["region"]
        sub = info["subscription"]
        api_version = rec.param("api-version")
        if api_version is None:
            raise ApiError(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
        if api_version not in BATCH_API_VERSIONS:
            raise _bad(f"The api-version '{api_version}' is not supported; supported: "
                       f"{', '.join(sorted(BATCH_API_VERSIONS))}.", code="InvalidApiVersionParameter")
        if rec.param("$filter") is not None:
            raise _bad("metrics:getBatch takes 'filter' (without '$'); '$filter' is not a valid parameter here.")
        ns = rec.param("metricnamespace")
        if not ns:
            raise _bad("The 'metricnamespace' query parameter is required.")
        names_raw = rec.param("metricnames")
        if not names_raw:
            raise _bad("The 'metricnames' query parameter is required.")
        names = [x.replace("%2", ",") for x in names_raw.split(",") if x]
        if len(names) > MAX_METRIC_NAMES:
            raise _bad(f"Requested {len(names)} metric names; at most {MAX_METRIC_NAMES} metric names are "
                       "allowed per request.")
        body = rec.json
        if not isinstance(body, dict) or "resourceids" not in body or not isinstance(body["resourceids"], list):
            raise _bad("The request body must be a JSON object with a lower-case 'resourceids' array.")
        ids = body["resourceids"]
        if not ids:
            raise _bad("'resourceids' must contain at least one resource id.")
        if len(ids) > MAX_BATCH_RESOURCES:
            raise _bad(f"Number of resource ids ({len(ids)}) exceeds the maximum of {MAX_BATCH_RESOURCES} "
                       "unique resource ids per request.")
        if len({str(i).lower() for i in ids}) != len(ids):
            raise _bad("'resourceids' contains duplicate resource ids.")
        resources: list[tuple[str, Resource | None]] = []
        for rid in ids:
            rid = str(rid)
            segs = [s for s in rid.split("/") if s]
            if len(segs) < 2 or segs[0].lower() != "subscriptions" or segs[1].lower() != sub.lower():
                raise _bad(f"Resource id '{rid}' is not in subscription '{sub}'; all resources of a batch "
                           "must belong to the subscription in the request path.")
            r = self.model.find(rid)
            if r is not None:
                if r.resource_type.lower() != ns.lower():
                    raise _bad(f"Resource '{rid}' of type '{r.resource_type}' does not match metricnamespace "
                               f"'{ns}'; all resources of a batch must be of the same resource type.")
                if _norm_region(r.location) != region:
                    raise _bad(f"Resource '{rid}' is located in '{r.location}', but this endpoint serves region "
                               f"'{region}'; all resources of a batch must be in the endpoint's region.")
            resources.append((rid, r))
        now = self.model.clock()
        st, et = rec.param("starttime"), rec.param("endtime")
        try:
            end = parse_time(et) if et else now
            start = parse_time(st) if st else end - timedelta(hours=1)
        except ValueError as e:
            raise _bad(f"Invalid starttime/endtime: {e}")
        self._check_range(start, end)
        interval = self._interval(rec.param("interval"))
        aggs = [a for a in (rec.param("aggregation") or "").split(",") if a] or None
        top = rec.param("top")
        values = []
        for rid, r in resources:
            if r is None:
                values.append({
                    "starttime": fmt_time(start), "endtime": fmt_time(end), "interval": interval,
                    "value": [{"id": f"{rid}/providers/Microsoft.Insights/metrics/{n}",
                               "type": "Microsoft.Insights/metrics", "name": {"value": n, "localizedValue": n},
                               "displayDescription": "", "unit": "Unspecified", "timeseries": [],
                               "errorCode": "ResourceNotFound",
                               "errorMessage": f"The resource '{rid}' was not found."} for n in names],
                    "namespace": ns, "resourceregion": region, "resourceid": rid,
                })
                continue
            res = self.model.query(r, names, start, end, interval, aggs, rec.param("filter"),
                                   int(top) if top else None, rec.param("orderby"), rec.param("rollupby"),
                                   False, True, now, rid)
            values.append({"cost": res["cost"], "starttime": fmt_time(start), "endtime": fmt_time(end),
                           "interval": res["interval"], "value": res["value"], "namespace": ns,
                           "resourceregion": r.location, "resourceid": rid})
        return _Reply(200, {"values": values}, dict(rl_headers))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.standins.azure_monitor",
                                 description="Run the Azure Monitor / ARM / Entra stand-in until interrupted.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--fleet", type=int, default=0, help="add N generated OpenAI accounts")
    ap.add_argument("--fleet-regions", default="eastus,swedencentral")
    ap.add_argument("--ingestion-delay", type=float, default=0.0)
    ap.add_argument("--ca-out", help="also copy the CA certificate (PEM) to this path")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    resources = default_resources()
    if args.fleet:
        resources += build_fleet(args.fleet, regions=args.fleet_regions.split(","))
    model = SyntheticModel(resources, seed=args.seed, ingestion_delay=args.ingestion_delay)
    server = AzureMonitorStandin(model, host=args.host, port=args.port, verbose=args.verbose)
    server.start()
    if args.ca_out:
        shutil.copyfile(server.ca_bundle_path, args.ca_out)
    info = server.describe()
    info["resources"] = len(info["resources"])
    print(json.dumps(info, indent=2), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
