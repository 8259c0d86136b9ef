"""The deployment catalogue: deployment name → model, version, SKU, region and PTUs.

Logs name deployments, and deployments are named anything, so prices cannot key on them (the bug behind
langfuse #2029/#2885, phoenix #3436). Entries come from four places, and per field the most
authoritative source that knows it wins: config `[[pricing.deployments]]` > the ARM deployments list >
what log records reveal (RequestResponse modelName/modelVersion/location, GatewayLlmLogs region) >
metric dimensions. Learned and ARM entries are kept in the store's state table (keys
`pricing.deployment/<source>/<account>/<name>`) so every process prices alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from urllib.parse import urlsplit

from .skus import sku as parse_sku

SOURCES = ("config", "arm", "logs", "metrics")  # most authoritative first
STATE_PREFIX = "pricing.deployment/"
_P = "azure.open_ai.properties."


@dataclass(frozen=True)
class Deployment:
    name: str
    account: str | None = None  # Azure OpenAI resource name, lower-cased; None = any account
    model: str | None = None
    version: str | None = None
    sku: str | None = None  # ARM sku.name, e.g. GlobalStandard, DataZoneProvisionedManaged
    region: str | None = None  # ARM region id, e.g. swedencentral
    ptus: int | None = None  # provisioned capacity (ARM sku.capacity of a provisioned SKU)
    start: str | None = None  # ISO date the deployment started billing (PTU hours count from here)
    source: str = "config"

    @property
    def state_key(self) -> str:
        return f"{STATE_PREFIX}{self.source}/{self.account or '*'}/{self.name}"


class Catalogue:
    """Entries from all sources; `resolve` merges them per field by source precedence."""

    def __init__(self, entries: list[Deployment] = ()):
        self._entries: dict[tuple[str, str | None, str], Deployment] = {}
        for e in entries:
            self.add(e)

    def add(self, entry: Deployment) -> bool:
        """Add or replace an entry; True when it changed what the catalogue holds."""
        key = (entry.source, entry.account, entry.name.lower())
        if self._entries.get(key) == entry:
            return False
        self._entries[key] = entry
        return True

    def entries(self) -> list[Deployment]:
        return list(self._entries.values())

    def resolve(self, name: str | None, account: str | None = None) -> Deployment | None:
        """The merged view of one deployment (fields from the most authoritative source that has them)."""
        if not name:
            return None
        lname = name.lower()
        matches = [e for e in self._entries.values() if e.name.lower() == lname
                   and (account is None or e.account in (None, account))]
        if not matches:
            return None
        matches.sort(key=lambda e: (SOURCES.index(e.source), e.account is None))
        merged = {f.name: None for f in fields(Deployment)}
        for e in matches:
            for k, v in asdict(e).items():
                if merged[k] is None and v is not None:
                    merged[k] = v
        merged["name"], merged["source"] = name, matches[0].source
        return Deployment(**merged)

    def provisioned(self) -> list[Deployment]:
        """Every known provisioned deployment (merged), for PTU hourly cost."""
        seen, emitted, out = set(), set(), []
        for e in self._entries.values():
            key = (e.account, e.name.lower())
            if key in seen:
                continue
            seen.add(key)
            merged = self.resolve(e.name, e.account)
            s = parse_sku(merged.sku) if merged else None
            # A config entry without account merges with the learned entry of its account: count it once.
            if merged and s and s.provisioned and (merged.account, merged.name.lower()) not in emitted:
                emitted.add((merged.account, merged.name.lower()))
                out.append(merged)
        return out

    # --- persistence -------------------------------------------------------------------------------

    def to_state(self, entries: list[Deployment]) -> dict[str, dict]:
        return {e.state_key: asdict(e) for e in entries}

    def load_state(self, items: dict[str, object]) -> None:
        names = {f.name for f in fields(Deployment)}
        for value in items.values():
            if isinstance(value, dict) and value.get("name"):
                self.add(Deployment(**{k: v for k, v in value.items() if k in names}))


def from_config(rows: list[dict]) -> list[Deployment]:
    """`[[pricing.deployments]]` tables → entries (errors name the key to fix)."""
    allowed = {"name", "account", "model", "version", "sku", "region", "ptus", "start"}
    out = []
    for i, row in enumerate(rows or ()):
        where = f"pricing.deployments[{i}]"
        unknown = set(row) - allowed
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        if not row.get("name"):
            raise ValueError(f"{where}: `name` (the deployment name as logs show it) is required")
        if row.get("sku") and parse_sku(row["sku"]) is None:
            raise ValueError(f"{where}.sku {row['sku']!r} unknown; use GlobalStandard, DataZoneStandard, Standard, "
                             "GlobalBatch, DataZoneBatch, GlobalProvisionedManaged, DataZoneProvisionedManaged or ProvisionedManaged")
        out.append(Deployment(name=str(row["name"]), account=_lower(row.get("account")), model=row.get("model"),
                              version=_str(row.get("version")), sku=parse_sku(row["sku"]).name if row.get("sku") else None,
                              region=_lower(row.get("region")), ptus=int(row["ptus"]) if row.get("ptus") else None,
                              start=_str(row.get("start")), source="config"))
    return out


def from_arm(deployments: dict, account: str | None = None, region: str | None = None) -> list[Deployment]:
    """The ARM `accounts/{account}/deployments` list (value[].{name, sku{name, capacity}, properties.model{name,
    version}}) → entries. `account` and `region` are the Cognitive Services account's name and location."""
    out = []
    for item in (deployments or {}).get("value", []):
        if not isinstance(item, dict) or not item.get("name"):
            continue
        sku_obj = item.get("sku") or {}
        model = ((item.get("properties") or {}).get("model") or {})
        s = parse_sku(sku_obj.get("name"))
        created = ((item.get("systemData") or {}).get("createdAt") or "")[:10] or None
        out.append(Deployment(name=item["name"], account=_lower(account), model=model.get("name"),
                              version=_str(model.get("version")), sku=s.name if s else sku_obj.get("name"),
                              region=_lower(region), ptus=int(sku_obj["capacity"]) if s and s.provisioned and sku_obj.get("capacity") else None,
                              start=created, source="arm"))
    return out


def learn(logs: list[dict], metrics: list[dict] = ()) -> list[Deployment]:
    """What documents reveal about deployments: model fields of RequestResponse/usage records, regions,
    and the model dimensions of metrics. One entry per (source, account, deployment)."""
    found: dict[tuple, Deployment] = {}
    for doc in logs:
        name = doc.get("aoai.deployment")
        model = doc.get("azure.open_ai.properties.model_name")
        region = doc.get("azure.open_ai.location") or doc.get(_P + "region")
        if not name or not (model or region):
            continue
        account = _lower(doc.get("azure.resource.name")) if _is_openai_account(doc) else None
        e = Deployment(name=name, account=account, model=model, version=_str(doc.get(_P + "model_version")),
                       region=_lower(region), source="logs")
        found[(e.source, e.account, name)] = e
    for doc in metrics:
        name = doc.get("azure.dimensions.model_deployment_name")
        if not name:
            continue
        e = Deployment(name=name, account=_lower(doc.get("azure.resource.name")), model=doc.get("azure.dimensions.model_name"),
                       version=_str(doc.get("azure.dimensions.model_version")),
                       region=_lower(doc.get("azure.dimensions.region") or doc.get("cloud.region")), source="metrics")
        if e.model or e.region:
            prev = found.get((e.source, e.account, name))
            if prev is None or (e.model and not prev.model):
                found[(e.source, e.account, name)] = e
    return list(found.values())


def learn_from_store(con, names: list[str] | None = None) -> list[Deployment]:
    """Deployments as stored RequestResponse / usage records reveal them (latest record per deployment).

    `con` is a DuckDB connection or cursor: inside a store transaction pass the store's own connection, so
    rows inserted earlier in the same transaction (the fast path's) are seen."""
    where, params = "", []
    if names:
        where, params = 'AND "aoai.deployment" IN (SELECT unnest(?))', [list(names)]
    rows = con.execute(f"""
        SELECT "aoai.deployment", lower("azure.resource.name"), arg_max("{_P}model_name", "@timestamp"),
               arg_max("{_P}model_version", "@timestamp"), replace(lower(arg_max("azure.open_ai.location", "@timestamp")), ' ', '')
        FROM logs
        WHERE "{_P}model_name" IS NOT NULL AND "aoai.deployment" IS NOT NULL
          AND "azure.resource.provider" = 'microsoft.cognitiveservices/accounts' {where}
        GROUP BY 1, 2""", params).fetchall()
    return [Deployment(name=n, account=a, model=m, version=_str(v), region=r, source="logs") for n, a, m, v, r in rows]


def account_of(doc: dict) -> str | None:
    """The Azure OpenAI account a request went to: the resource for service logs, the backend host for APIM."""
    if _is_openai_account(doc):
        return _lower(doc.get("azure.resource.name"))
    url = doc.get(_P + "backend_url")
    if isinstance(url, str):
        host = urlsplit(url).hostname or ""
        if host.endswith((".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")):
            return host.split(".", 1)[0]
    return None


def _is_openai_account(doc: dict) -> bool:
    return doc.get("azure.resource.provider") == "microsoft.cognitiveservices/accounts"


def _lower(v) -> str | None:
    """Lower-cased, without spaces: regions arrive as 'East US' in some records and 'eastus' in others."""
    return str(v).replace(" ", "").lower() if v not in (None, "") else None


def _str(v) -> str | None:
    return str(v) if v not in (None, "") else None
