"""`aoai-monitor run` configuration: one TOML file, secrets from the environment when the file must not hold them.

Any string value may be `"${ENV_NAME}"`; any secret field `x` may instead be given as `x_env = "ENV_NAME"`;
and a missing secret falls back to `AOAI_MONITOR_<INPUT TYPE>_<FIELD>` (e.g. AOAI_MONITOR_EVENTHUB_CONNECTION_STRING),
which suits the common one-input set-up. Secret values are wrapped in `Secret`, whose repr never shows them.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .store import DEFAULT_PATH, parse_duration

SECRET_FIELDS = {"connection_string", "storage_account_key", "storage_account_connection_string", "client_secret",
                 "token"}

# Elastic's resource_manager_endpoint choices, with the suffixes the SDKs need for each cloud.
CLOUDS = {
    "public": {"resource_manager": "https://management.azure.com/", "servicebus": "servicebus.windows.net",
               "storage": "core.windows.net", "authority": "login.microsoftonline.com"},
    "china": {"resource_manager": "https://management.chinacloudapi.cn/", "servicebus": "servicebus.chinacloudapi.cn",
              "storage": "core.chinacloudapi.cn", "authority": "login.chinacloudapi.cn"},
    "usgovernment": {"resource_manager": "https://management.usgovcloudapi.net/",
                     "servicebus": "servicebus.usgovcloudapi.net", "storage": "core.usgovcloudapi.net",
                     "authority": "login.microsoftonline.us"},
    "germany": {"resource_manager": "https://management.microsoftazure.de/", "servicebus": "servicebus.cloudapi.de",
                "storage": "core.cloudapi.de", "authority": "login.microsoftonline.de"},
}

# Sections other components own; the service hands them their raw tables (see service.COMPONENTS).
PLUGGABLE_SECTIONS = ("web", "alerts", "otlp", "pricing")


class ConfigError(ValueError):
    """A configuration problem, phrased so the user knows which key to change."""


class Secret(str):
    """A string that never prints itself (logs, tracebacks, reprs show ***)."""

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:  # str() is used by f-strings and logging
        return "***"

    @property
    def value(self) -> str:
        return str.__str__(self)


def reveal(value: Any) -> Any:
    """The plain value for an SDK call (a Secret's text, anything else unchanged)."""
    return value.value if isinstance(value, Secret) else value


# The service's DuckDB memory budget when [store] memory_limit is not set. DuckDB's own default is 80 % of RAM,
# and its cache of the table's blocks grows with the store (~90 MB per million log rows written, measured over
# 4 M rows of group commits), so a service left alone for months would settle near most of the machine's RAM.
SERVICE_MEMORY_GIB = 2
SERVICE_MEMORY_LIMIT = f"{SERVICE_MEMORY_GIB}GiB"
_SIZE = re.compile(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)\s*", re.IGNORECASE)


@dataclass
class Config:
    store_path: str = DEFAULT_PATH
    memory_limit: str | None = SERVICE_MEMORY_LIMIT
    api_host: str = "127.0.0.1"
    api_port: int = 0
    status_interval: float = 5.0
    eventhub: list[dict] = field(default_factory=list)
    blob_archive: list[dict] = field(default_factory=list)
    azure_monitor: list[dict] = field(default_factory=list)
    sections: dict[str, dict] = field(default_factory=dict)  # [web], [alerts], [otlp] … as given
    elasticsearch: list[dict] = field(default_factory=list)  # [[outputs.elasticsearch]] (aoai_monitor.outputs)
    source: str = ""


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value: Any, where: str, env: dict[str, str]) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            if m.group(1) not in env:
                raise ConfigError(f"{where}: environment variable {m.group(1)} is not set; export it or put the value in the file")
            return env[m.group(1)]
        return _ENV_REF.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, where, env) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}", env) for k, v in value.items()}
    return value


def _secrets(section: dict, kind: str, where: str, env: dict[str, str], fields: set[str] = SECRET_FIELDS) -> dict:
    out = dict(section)
    for key in list(out):
        if key.endswith("_env") and key[:-4] in fields:
            name = out.pop(key)
            if name not in env:
                raise ConfigError(f"{where}.{key}: environment variable {name} is not set; export it")
            out[key[:-4]] = env[name]
    for key in fields:
        fallback = f"AOAI_MONITOR_{kind.upper()}_{key.upper()}"
        if not out.get(key) and env.get(fallback):
            out[key] = env[fallback]
        if out.get(key):
            out[key] = Secret(out[key])
    return out


def load(path: str | Path | None, env: dict[str, str] | None = None, store_path: str | None = None) -> Config:
    """Parse and validate a config file (None: an empty config, inputs from nowhere)."""
    env = dict(os.environ if env is None else env)
    raw: dict = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file; `aoai-monitor config example > {path}` writes a starting point") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    raw = _expand(raw, Path(path).name if path else "config", env)
    cfg = Config(source=str(path or ""))
    store = raw.get("store", {})
    cfg.store_path = store_path or store.get("path") or env.get("AOAI_MONITOR_STORE") or DEFAULT_PATH
    cfg.memory_limit = _memory_limit(store.get("memory_limit"))
    service = raw.get("service", {})
    cfg.api_host = service.get("api_host", cfg.api_host)
    cfg.api_port = int(service.get("api_port", cfg.api_port))
    cfg.status_interval = _seconds(service.get("status_interval", "5s"), "service.status_interval")
    inputs = raw.get("inputs", {})
    unknown = set(inputs) - {"eventhub", "blob_archive", "azure_monitor"}
    if unknown:
        raise ConfigError(f"unknown input type(s) {sorted(unknown)}: use [[inputs.eventhub]], [[inputs.blob_archive]] "
                          "or [[inputs.azure_monitor]]")
    for kind in ("eventhub", "blob_archive", "azure_monitor"):
        sections = inputs.get(kind, [])
        if isinstance(sections, dict):
            sections = [sections]
        for i, section in enumerate(sections):
            where = f"inputs.{kind}[{i}]"
            section = _secrets(section, kind, where, env)
            if kind == "eventhub":
                section = eventhub_settings(section, where)
            elif kind == "blob_archive":
                section = blob_archive_settings(section, where)
            getattr(cfg, kind).append(section)
    names = [s["name"] for s in cfg.eventhub + cfg.blob_archive]
    if len(names) != len(set(names)):
        raise ConfigError(f"input names must be unique (got {names}); set `name = \"…\"` on each input")
    outputs = raw.get("outputs", {})
    if set(outputs) - {"elasticsearch"}:
        raise ConfigError(f"unknown output type(s) {sorted(set(outputs) - {'elasticsearch'})}: use [[outputs.elasticsearch]]")
    sections = outputs.get("elasticsearch", [])
    from .outputs.elasticsearch import SECRET_FIELDS as ES_SECRETS, elasticsearch_settings

    for i, section in enumerate([sections] if isinstance(sections, dict) else sections):
        where = f"outputs.elasticsearch[{i}]"
        cfg.elasticsearch.append(elasticsearch_settings(_secrets(section, "elasticsearch", where, env, ES_SECRETS), where))
    if len({s["name"] for s in cfg.elasticsearch}) != len(cfg.elasticsearch):
        raise ConfigError("[[outputs.elasticsearch]] names must be unique; set `name = \"…\"` on each")
    for name in PLUGGABLE_SECTIONS:
        if name in raw:
            cfg.sections[name] = _secrets(raw[name], name, name, env)
    return cfg


def _memory_limit(value: Any) -> str | None:
    """[store] memory_limit as DuckDB takes it; unset: SERVICE_MEMORY_LIMIT, or DuckDB's default (80 % of RAM)
    on a machine where that is less."""
    if value is None:
        try:
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):  # no sysconf (Windows): DuckDB knows the machine
            return None
        return SERVICE_MEMORY_LIMIT if 0.8 * ram > SERVICE_MEMORY_GIB * 1024 ** 3 else None
    if not isinstance(value, str) or not _SIZE.fullmatch(value):
        raise ConfigError(f"store.memory_limit: {value!r} is not a size; write e.g. \"2GB\" or \"512MB\"")
    return value.strip()


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def cloud_of(section: dict, where: str) -> dict:
    """The cloud's endpoints from `cloud` or Elastic's `resource_manager_endpoint`."""
    rm = section.get("resource_manager_endpoint")
    if rm:
        for name, cloud in CLOUDS.items():
            if cloud["resource_manager"].rstrip("/") == rm.rstrip("/"):
                return {"name": name, **cloud}
        raise ConfigError(f"{where}.resource_manager_endpoint {rm!r} is not a known cloud; use one of "
                          + ", ".join(c["resource_manager"] for c in CLOUDS.values()))
    name = str(section.get("cloud", "Public")).lower().replace(" ", "").removeprefix("azure").removesuffix("cloud")
    if name not in CLOUDS:
        raise ConfigError(f"{where}.cloud {section.get('cloud')!r} unknown: use Public, China, USGovernment or Germany")
    return {"name": name, **CLOUDS[name]}


def default_container(eventhub: str) -> str:
    """A valid checkpoint container name from the event hub name (Elastic's rule: `_` → `-`)."""
    name = re.sub(r"[^a-z0-9-]", "-", f"aoai-monitor-{eventhub}".lower().replace("_", "-"))
    name = re.sub(r"-{2,}", "-", name).strip("-")[:63].rstrip("-")
    return name if len(name) >= 3 else "aoai-monitor-checkpoints"


def eventhub_settings(s: dict, where: str) -> dict:
    allowed = {"name", "eventhub", "consumer_group", "connection_string", "fully_qualified_namespace", "tenant_id",
               "client_id", "client_secret", "storage_account", "storage_account_key",
               "storage_account_connection_string", "storage_account_container", "resource_manager_endpoint",
               "cloud", "start_position", "load_balancing_interval", "ownership_expiration", "owner_id",
               "max_batch_size", "prefetch", "max_wait_time", "workers"}
    unknown = set(s) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    out = dict(s)
    conn = reveal(out.get("connection_string") or "")
    if not out.get("eventhub"):
        m = re.search(r"EntityPath=([^;]+)", conn)
        if not m:
            raise ConfigError(f"{where}: set `eventhub` (the event hub name), or use a connection string with EntityPath=")
        out["eventhub"] = m.group(1)
    if not conn and not out.get("fully_qualified_namespace"):
        raise ConfigError(f"{where}: give `connection_string` (a listen-only shared access policy) or "
                          "`fully_qualified_namespace` for Entra ID auth (DefaultAzureCredential, or client_id/client_secret/tenant_id)")
    if not out.get("storage_account_connection_string") and not out.get("storage_account"):
        raise ConfigError(f"{where}: the checkpoint store needs `storage_account` (+ `storage_account_key` or Entra ID) "
                          "or `storage_account_connection_string`")
    out["cloud"] = cloud_of(out, where)
    out.setdefault("name", out["eventhub"])
    out.setdefault("consumer_group", "$Default")
    out.setdefault("storage_account_container", default_container(out["eventhub"]))
    out["start_position"] = start_position(out.get("start_position", "earliest"), where)
    out["load_balancing_interval"] = _seconds(out.get("load_balancing_interval", "2s"), where + ".load_balancing_interval")
    out["ownership_expiration"] = _seconds(out.get("ownership_expiration", "6s"), where + ".ownership_expiration")
    if out["ownership_expiration"] <= out["load_balancing_interval"]:
        raise ConfigError(f"{where}: ownership_expiration must exceed load_balancing_interval (e.g. 3 × it)")
    out["max_batch_size"] = int(out.get("max_batch_size", 100))
    out["prefetch"] = int(out.get("prefetch", 300))
    out["max_wait_time"] = _seconds(out.get("max_wait_time", "1s"), where + ".max_wait_time")
    workers = out.get("workers", max(1, (os.cpu_count() or 1) - 1))
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ConfigError(f"{where}.workers: a whole number ≥ 0 (0 = prepare batches in this process)")
    out["workers"] = workers
    return out


def start_position(value: Any, where: str) -> Any:
    """earliest → "-1", latest → "@latest", an ISO time → datetime (the SDK's forms)."""
    from datetime import datetime, timezone

    if value in ("earliest", "-1"):
        return "-1"
    if value in ("latest", "@latest"):
        return "@latest"
    if hasattr(value, "tzinfo"):  # TOML datetimes arrive parsed
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{where}.start_position {value!r}: use earliest, latest or an ISO time such as 2025-01-01T00:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def blob_archive_settings(s: dict, where: str) -> dict:
    allowed = {"name", "storage_account", "storage_account_key", "storage_account_connection_string", "tenant_id",
               "client_id", "client_secret", "cloud", "resource_manager_endpoint", "containers", "prefix",
               "poll_interval", "since"}
    unknown = set(s) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    out = dict(s)
    if not out.get("storage_account_connection_string") and not out.get("storage_account"):
        raise ConfigError(f"{where}: set `storage_account` (+ `storage_account_key` or Entra ID) or `storage_account_connection_string`")
    out["cloud"] = cloud_of(out, where)
    out.setdefault("name", f"archive-{out.get('storage_account') or 'storage'}")
    out.setdefault("containers", [])  # empty: every insights-logs-* container
    out.setdefault("prefix", "")
    out["poll_interval"] = _seconds(out.get("poll_interval", "60s"), where + ".poll_interval")
    out["since"] = _seconds(out["since"], where + ".since") if out.get("since") else None
    return out


EXAMPLE = '''\
# aoai-monitor configuration (`aoai-monitor run --config aoai-monitor.toml`).
# Secrets: write "${ENV_NAME}" as a value, or `<field>_env = "ENV_NAME"`, or leave the field out and export
# AOAI_MONITOR_<INPUT TYPE>_<FIELD>, e.g. AOAI_MONITOR_EVENTHUB_CONNECTION_STRING. Keep this file free of keys.

[store]
path = "aoai-monitor.duckdb"          # one DuckDB file; `run` is its only writer
# memory_limit = "2GiB"               # DuckDB's budget: block cache, rows not yet checkpointed, queries (default 2GiB)

[service]
api_host = "127.0.0.1"                # local API used by `query`/`status` from other shells while `run` holds the store
api_port = 0                          # 0 = any free port (written to <store>.service.json)
status_interval = "5s"                # how often per-partition status is stored

# Diagnostic settings → Event Hub (docs/azure-setup.md). Setting names follow Elastic's azure-eventhub input.
[[inputs.eventhub]]
eventhub = "insights-logs-aoai"       # the event hub name
consumer_group = "$Default"           # a dedicated consumer group is better
connection_string = "${AOAI_EVENTHUB_CONNECTION_STRING}"   # a listen-only shared access policy
# Entra ID instead of a connection string (DefaultAzureCredential, or a service principal):
# fully_qualified_namespace = "mynamespace.servicebus.windows.net"
# tenant_id = "…"  client_id = "…"  client_secret_env = "AOAI_CLIENT_SECRET"
storage_account = "mycheckpoints"     # checkpoint store (blob container, created if missing)
storage_account_key_env = "AOAI_STORAGE_KEY"
# storage_account_connection_string = "${AOAI_STORAGE_CONNECTION_STRING}"  # overrides account + key (Azurite)
# storage_account_container = "aoai-monitor-insights-logs-aoai"           # default: from the event hub name
# resource_manager_endpoint = "https://management.chinacloudapi.cn/"      # or cloud = "China" | "USGovernment" | "Germany"
start_position = "earliest"           # where no checkpoint exists: earliest | latest | 2025-01-01T00:00:00Z
load_balancing_interval = "2s"        # several `run` processes share partitions; a dead one's are taken over
ownership_expiration = "6s"           #   after this long (the SDK defaults are 30 s and 180 s)
max_batch_size = 100                  # messages per store commit and checkpoint, per partition
# workers = 1                         # processes that parse and normalize batches (default: CPUs − 1; 0 = none)

# Diagnostic settings → storage account archive (insights-logs-<category>/…/PT1H.json)
# [[inputs.blob_archive]]
# storage_account = "myarchive"
# storage_account_key_env = "AOAI_ARCHIVE_KEY"
# containers = ["insights-logs-requestresponse", "insights-logs-audit"]   # default: every insights-logs-*
# poll_interval = "60s"
# since = "7d"                        # ignore hour blobs older than this (first run / backfill window)

# Azure Monitor platform metrics of every Azure OpenAI account in scope (docs/azure-metrics-setup.md)
# [[inputs.azure_monitor]]
# name = "aoai-metrics"
# client_id = "<app id>"               # app registration with Monitoring Reader on the subscription;
# client_secret_env = "AZURE_CLIENT_SECRET"   # leave client_id/secret out for DefaultAzureCredential
# tenant_id = "<tenant id>"
# subscription_id = "<subscription id>"
# resource_groups = ["rg-aoai-prod"]  # or resource_ids = [...]; default: the whole subscription
# period = "300s"
# refresh_list_interval = "600s"

# The dashboards, Discover and SQL page on the service's local API server
# [web]
# host = "127.0.0.1"                  # anything but loopback requires the access token (printed at start)
# port = 8765

# OpenTelemetry spans and GenAI metrics from instrumented apps (docs/instrumentation.md)
# [otlp]
# host = "127.0.0.1"
# port = 4318
# token = "${AOAI_OTLP_TOKEN}"        # required as a Bearer token when set
# workers = 1                         # processes that decode export requests (default: CPUs − 1; 0 = none)

# Cost: SKUs, PTUs and negotiated prices per deployment (docs/cost.md)
# [pricing]
# default_sku = "GlobalStandard"
# [[pricing.deployments]]
# name = "chat-ptu"
# model = "gpt-4o"
# version = "2024-11-20"
# sku = "GlobalProvisionedManaged"
# ptus = 50

# Alerts, SLOs and anomaly detection: `aoai-monitor alerts init` appends the built-in rules (docs/alerts.md)
# [alerts]
# every = "1m"
# [alerts.targets.ops]
# type = "webhook"                    # or slack, teams, email
# url_env = "OPS_WEBHOOK_URL"         # URLs with tokens are secrets: keep them in the environment

# Also ship every document to Elasticsearch data streams (docs/elasticsearch.md; `aoai-monitor elastic setup`)
# [[outputs.elasticsearch]]
# hosts = ["https://my-cluster:9200"]   # or cloud_id = "…"
# api_key_env = "ES_API_KEY"            # or username = "…" + password_env = "ES_PASSWORD"
# ca_certs = "/etc/ssl/my-ca.pem"       # verify_certs = true
# namespace = "default"                 # logs-azure_openai.logs-<namespace>, metrics-azure.open_ai-<namespace>
# write_store = true                    # false: only Elasticsearch keeps documents (the local UI shows nothing)
# retention = "30d"                     # ILM delete phase installed by `elastic setup`
'''
