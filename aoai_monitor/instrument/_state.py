"""Process-wide instrumentation state (tracer, GenAI histograms, options) and the per-client Azure facts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

AZURE_HOST_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")
# Azure OpenAI sends the stream usage chunk (stream_options.include_usage) from this api-version on.
STREAM_USAGE_API_VERSION = "2024-09-01"
# Bucket boundaries the GenAI semantic conventions recommend.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


@dataclass(frozen=True)
class Options:
    capture_content: bool = False
    # redact(messages, "input" | "output") -> messages to record, or None to record nothing.
    redact: Callable[[list[dict], str], list[dict] | None] | None = None
    stream_usage: bool = True
    elastic_apm_labels: bool = True


class _State:
    tracer: Any = None
    deferred_start: Any = None  # _span_start.DeferredStart for an SDK tracer, else None
    duration: Any = None
    token_usage: Any = None
    first_chunk: Any = None
    pricer: Callable[..., float | None] | None = None
    options: Options = Options()


STATE = _State()


@dataclass(frozen=True)
class ClientInfo:
    host: str
    port: int | None
    api_version: str | None
    deployment: str | None  # set when the client was made with azure_deployment= (URL carries it)
    stream_usage: bool


_CACHE_ATTR = "_aoai_monitor_client_info"


def client_info(client: Any) -> ClientInfo | None:
    """Azure facts of an openai client, cached on the client; None for a client that is not Azure OpenAI."""
    info = client.__dict__.get(_CACHE_ATTR, False)
    if info is not False:
        return info
    info = _compute(client)
    client.__dict__[_CACHE_ATTR] = info
    return info


def _compute(client: Any) -> ClientInfo | None:
    from openai import AsyncAzureOpenAI, AzureOpenAI

    url = client.base_url
    host = url.host or ""
    if not isinstance(client, (AzureOpenAI, AsyncAzureOpenAI)) and not host.endswith(AZURE_HOST_SUFFIXES):
        return None
    api_version = getattr(client, "_api_version", None)
    path = url.path
    deployment = None
    if "/deployments/" in path:
        deployment = path.split("/deployments/", 1)[1].split("/", 1)[0] or None
    default_port = 443 if url.scheme == "https" else 80
    port = url.port if url.port not in (None, default_port) else None
    # The v1 API (no api-version) has stream usage; dated versions have it from 2024-09-01(-preview) on.
    stream_usage = api_version is None or api_version[:10] >= STREAM_USAGE_API_VERSION
    return ClientInfo(host=host, port=port, api_version=api_version, deployment=deployment, stream_usage=stream_usage)
