"""Azure credentials, clouds and TLS trust shared by every input that calls Azure APIs.

One place decides which authority, ARM endpoint, metrics endpoint and token audiences a configuration
means, so sovereign clouds, private clouds and the test stand-in are reached by settings alone (no
patching). Secrets are held only inside the credential objects; nothing here logs or formats them.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit


class AzureConfigError(ValueError):
    """A configuration problem; the message says how to fix it."""


@dataclass(frozen=True)
class Cloud:
    name: str
    authority_host: str
    arm_endpoint: str
    arm_audience: str
    metrics_endpoint_template: str  # regional batch-metrics host, "{region}" is the resource location
    metrics_audience: str


CLOUDS = {
    "AzureCloud": Cloud("AzureCloud", "https://login.microsoftonline.com", "https://management.azure.com",
                        "https://management.azure.com", "https://{region}.metrics.monitor.azure.com",
                        "https://metrics.monitor.azure.com"),
    "AzureUSGovernment": Cloud("AzureUSGovernment", "https://login.microsoftonline.us",
                               "https://management.usgovcloudapi.net", "https://management.usgovcloudapi.net",
                               "https://{region}.metrics.monitor.azure.us", "https://metrics.monitor.azure.us"),
    "AzureChinaCloud": Cloud("AzureChinaCloud", "https://login.chinacloudapi.cn", "https://management.chinacloudapi.cn",
                             "https://management.chinacloudapi.cn", "https://{region}.metrics.monitor.azure.cn",
                             "https://metrics.monitor.azure.cn"),
}
_CLOUD_ALIASES = {"azurecloud": "AzureCloud", "azurepubliccloud": "AzureCloud", "public": "AzureCloud",
                  "azureusgovernment": "AzureUSGovernment", "azureusgovernmentcloud": "AzureUSGovernment",
                  "usgov": "AzureUSGovernment", "azurechinacloud": "AzureChinaCloud", "china": "AzureChinaCloud"}
# Authorities MSAL knows; any other host must skip instance discovery or MSAL asks the public cloud.
_KNOWN_AUTHORITIES = {urlsplit(c.authority_host).hostname for c in CLOUDS.values()}


@dataclass(frozen=True)
class AzureEndpoints:
    """Where to get tokens and send ARM / batch-metrics calls, and which audiences the tokens need."""
    cloud: str
    authority_host: str
    arm_endpoint: str
    arm_audience: str
    metrics_endpoint_template: str
    metrics_audience: str

    @property
    def arm_scope(self) -> str:
        return self.arm_audience.rstrip("/") + "/.default"

    @property
    def known_authority(self) -> bool:
        return urlsplit(self.authority_host).hostname in _KNOWN_AUTHORITIES

    def metrics_endpoint(self, region: str) -> str:
        return self.metrics_endpoint_template.format(region=region.replace(" ", "").lower())


def resolve_endpoints(config: dict) -> AzureEndpoints:
    """Cloud defaults (Elastic's `cloud` / `resource_manager_endpoint` names) plus explicit overrides."""
    raw = str(config.get("cloud") or "AzureCloud")
    name = _CLOUD_ALIASES.get(raw.replace(" ", "").replace("_", "").lower())
    if name is None:
        raise AzureConfigError(f"unknown cloud {raw!r}: use one of {', '.join(CLOUDS)} "
                               "or set authority_host, resource_manager_endpoint and metrics_endpoint")
    cloud = CLOUDS[name]
    authority = config.get("authority_host") or config.get("active_directory_endpoint") or cloud.authority_host
    arm = config.get("resource_manager_endpoint") or cloud.arm_endpoint
    template = config.get("metrics_endpoint") or cloud.metrics_endpoint_template
    for key, url in (("authority_host", authority), ("resource_manager_endpoint", arm), ("metrics_endpoint", template)):
        if not str(url).startswith("https://"):
            raise AzureConfigError(f"{key} must be an https:// URL (got {url!r})")
    if "{region}" not in template:
        raise AzureConfigError(f"metrics_endpoint must contain '{{region}}', e.g. "
                               f"'https://{{region}}.metrics.monitor.azure.com' (got {template!r})")
    return AzureEndpoints(
        cloud=name, authority_host=str(authority).rstrip("/"), arm_endpoint=str(arm).rstrip("/"),
        arm_audience=str(config.get("resource_manager_audience") or cloud.arm_audience).rstrip("/"),
        metrics_endpoint_template=str(template).rstrip("/"),
        metrics_audience=str(config.get("metrics_audience") or cloud.metrics_audience).rstrip("/"))


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """TLS trust built once: the custom CA bundle when given (private clouds, proxies, the test stand-in)."""
    if ca_bundle:
        if not os.path.isfile(ca_bundle):
            raise AzureConfigError(f"ca_bundle {ca_bundle!r} does not exist: give the path of a PEM file")
        return ssl.create_default_context(cafile=ca_bundle)
    return ssl.create_default_context()


def client_secret_from(config: dict) -> str | None:
    """The secret from the config, else AZURE_CLIENT_SECRET (so it need not be written in a file)."""
    return config.get("client_secret") or (os.environ.get("AZURE_CLIENT_SECRET") if config.get("client_id") else None)


def async_credential(config: dict, endpoints: AzureEndpoints, transport):
    """Client secret when one is given (Elastic's app registration), else DefaultAzureCredential
    (managed identity, workload identity, environment, Azure CLI)."""
    secret = client_secret_from(config)
    common = {"authority": endpoints.authority_host, "transport": transport}
    if secret:
        from azure.identity.aio import ClientSecretCredential

        missing = [k for k in ("tenant_id", "client_id") if not config.get(k)]
        if missing:
            raise AzureConfigError(f"client_secret is set but {' and '.join(missing)} is missing: "
                                   "add the app registration's tenant_id and client_id")
        return ClientSecretCredential(str(config["tenant_id"]), str(config["client_id"]), secret,
                                      disable_instance_discovery=not endpoints.known_authority, **common)
    from azure.identity.aio import DefaultAzureCredential

    kwargs = dict(common, exclude_interactive_browser_credential=True)
    if config.get("managed_identity_client_id") or config.get("client_id"):
        kwargs["managed_identity_client_id"] = str(config.get("managed_identity_client_id") or config["client_id"])
    if config.get("tenant_id"):
        kwargs["additionally_allowed_tenants"] = [str(config["tenant_id"])]
    return DefaultAzureCredential(**kwargs)


def describe_auth_error(exc: BaseException, endpoints: AzureEndpoints, subscription: str | None = None) -> str:
    """Turn an authentication / authorization failure into the step that fixes it (no secret in it)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    status = getattr(exc, "status_code", None)
    sub = subscription or "<subscription-id>"
    if status == 403 or "AuthorizationFailed" in text:
        return (f"{text} — the app lacks Monitoring Reader on subscription {sub}: "
                f"az role assignment create --assignee <client-id> --role 'Monitoring Reader' --scope /subscriptions/{sub}")
    if status == 401 and "audience" in text.lower():
        return f"{text} — token audience mismatch: check cloud / resource_manager_audience / metrics_audience"
    if "AADSTS7000215" in text or "invalid_client" in text:
        return f"{text} — the client secret is wrong or expired: create a new one (az ad app credential reset --id <client-id>)"
    if "AADSTS700016" in text or "unauthorized_client" in text:
        return f"{text} — unknown client_id in this tenant: check client_id and tenant_id"
    if "AADSTS90002" in text:
        return f"{text} — unknown tenant: check tenant_id"
    return (f"{text} — check tenant_id / client_id / client_secret (or the managed identity) and that "
            f"{endpoints.authority_host} is reachable")
