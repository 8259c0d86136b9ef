"""Price request documents: deployment → (model, version, SKU, region) → meter rates × tokens → aoai.cost.*.

Cost rule (OpenAI usage semantics, which Azure shares): input tokens include the cached ones, so
cost = (input − cached) × input rate + cached × cached-input rate + output × output rate. On a
provisioned (PTU) deployment the marginal cost of a request is 0 — capacity is billed by the hour — and
`aoai.cost.payg` holds what the same tokens would cost on the matching pay-as-you-go SKU. A request that
cannot be priced gets `aoai.cost.unpriced_reason` (never a silent 0).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal

from azure_genai_prices import BillingMode

from .catalogue import Catalogue, account_of
from .prices import PriceBook, Rates, Unpriced, squash
from .skus import Sku, sku as parse_sku

# Where per-request tokens come from, best first (reports use the best one present per deployment-hour).
TOKEN_SOURCES = ("gateway", "request_usage", "span", "metrics")
_SOURCE_OF_CATEGORY = {"gatewaylogs": "gateway", "gatewayllmlogs": "gateway", "azureopenairequestusage": "request_usage"}
_P = "azure.open_ai.properties."

# Azure model names whose meters carry a context size instead of a version (legacy GPT-3.5/4 families).
_LEGACY_METERS = {
    ("gpt-35-turbo", "0125"): "gpt-35-turbo-16k-0125", ("gpt-35-turbo", "1106"): "gpt-35-turbo-16k-1106",
    ("gpt-35-turbo", "0613"): "gpt-35-turbo-4k", ("gpt-35-turbo", "0301"): "gpt-35-turbo-4k",
    ("gpt-35-turbo-16k", "0613"): "gpt-35-turbo-16k", ("gpt-4", "0613"): "gpt-4-8k", ("gpt-4-32k", "0613"): "gpt-4-32k",
    ("gpt-4", "turbo-2024-04-09"): "gpt-4-turbo-128k",
}
# The version Azure deploys when a deployment names none, for models whose meters differ by version.
_DEFAULT_VERSIONS = {"gpt-35-turbo": "0125"}
_DATED = re.compile(r"^(?P<name>.+?)-(?P<date>\d{4}-\d{2}-\d{2})$")
LONG_CONTEXT_TOKENS = 272_000  # prompts above this are billed on long-context meters (when the model has them)

COST_FIELDS = ("aoai.cost.input", "aoai.cost.cached_input", "aoai.cost.output", "aoai.cost.total", "aoai.cost.payg",
               "aoai.cost.currency", "aoai.cost.sku", "aoai.cost.region", "aoai.cost.price_model",
               "aoai.cost.price_version", "aoai.cost.token_source", "aoai.cost.unpriced_reason", "aoai.cost.assumed")
# Everything price_documents reads: reprice selects exactly these from the store.
INPUT_FIELDS = ("@timestamp", "azure.open_ai.category", "aoai.deployment", "aoai.model", "aoai.model_version",
                "aoai.tokens.input", "aoai.tokens.output", "aoai.tokens.cached", "aoai.tokens.total",
                "azure.resource.name", "azure.resource.provider", "azure.open_ai.location", _P + "region",
                _P + "backend_url", _P + "model_name", _P + "model_version")


def token_source(doc: dict) -> str | None:
    """Which token source a document is; None when it carries no tokens."""
    if doc.get("aoai.tokens.input") is None and doc.get("aoai.tokens.output") is None:
        return None
    category = str(doc.get("azure.open_ai.category") or "").lower()
    if category in _SOURCE_OF_CATEGORY:
        return _SOURCE_OF_CATEGORY[category]
    return "span" if doc.get("span.id") or doc.get("trace.id") else "request_usage"


def price_documents(docs: list[dict], catalogue: Catalogue, prices: PriceBook,
                    default_sku: str | None = "GlobalStandard") -> None:
    """Set aoai.cost.* on every document that carries tokens (in place; never raises for a bad document).

    `default_sku` prices deployments the catalogue has no SKU for, and says so in aoai.cost.assumed;
    None leaves them unpriced instead.
    """
    cache: dict[tuple, tuple[Rates, Sku, str, str | None, str] | Unpriced] = {}
    for doc in docs:
        source = token_source(doc)
        if source is None:
            continue
        for f in COST_FIELDS:
            doc.pop(f, None)
        doc["aoai.cost.token_source"] = source
        doc["aoai.cost.currency"] = prices.currency
        month, resolved = resolve_cached(doc, cache, catalogue, prices, default_sku)
        if isinstance(resolved, Unpriced):
            doc["aoai.cost.unpriced_reason"] = str(resolved)
            continue
        rates, s, price_model, where, assumed = resolved
        doc.update({"aoai.cost.sku": s.name, "aoai.cost.price_model": price_model,
                    "aoai.cost.price_version": prices.version(month)})
        if where:
            doc["aoai.cost.region"] = where
        if assumed:
            doc["aoai.cost.assumed"] = assumed
        inp, cached, out = _cost(doc, rates)
        payg = float(inp + cached + out)
        if s.provisioned:
            doc.update({"aoai.cost.input": 0.0, "aoai.cost.cached_input": 0.0, "aoai.cost.output": 0.0,
                        "aoai.cost.total": 0.0, "aoai.cost.payg": payg})
        else:
            doc.update({"aoai.cost.input": float(inp), "aoai.cost.cached_input": float(cached),
                        "aoai.cost.output": float(out), "aoai.cost.total": payg, "aoai.cost.payg": payg})


def resolve_cached(doc: dict, cache: dict, catalogue: Catalogue, prices: PriceBook, default_sku: str | None
                   ) -> tuple[str, tuple[Rates, Sku, str, str | None, str] | Unpriced]:
    """(the document's price month, how it is priced: rates, SKU, price model, region, assumption — or why it is
    unpriced). `cache` holds one resolution per key: documents with the same key are priced alike."""
    month = _month(doc.get("@timestamp"))
    deployment, account = doc.get("aoai.deployment"), account_of(doc)
    model, version = _doc_model(doc)
    region = doc.get("azure.open_ai.location") or doc.get(_P + "region")
    key = (deployment, account, model, version, region, month, _long(doc), _priority(doc))
    resolved = cache.get(key)
    if resolved is None:
        resolved = cache[key] = _resolve(deployment, account, model, version, region, month, doc, catalogue, prices,
                                         default_sku)
        if isinstance(resolved, Exception):
            resolved.__traceback__ = None  # a cache may outlive the batch: keep the reason, not the frames
    return month, resolved


def price_tokens(model: str, version: str | None, sku_name: str, region: str | None, month: str, prices: PriceBook,
                 input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> tuple[Decimal, str]:
    """Pay-as-you-go cost of a token count (for metrics-derived cost); returns (cost, price model)."""
    s = parse_sku(sku_name)
    if s is None:
        raise Unpriced(f"unknown SKU {sku_name!r}")
    price_model, _ = meter_model(model, version, prices, month)
    rates = prices.token_rates(price_model, s.payg, region, month, input_tokens)
    cached = min(cached_tokens, input_tokens)
    return (Decimal(input_tokens - cached) * rates.input + Decimal(cached) * rates.cached_input
            + Decimal(output_tokens) * rates.output), price_model


def meter_model(model: str, version: str | None, prices: PriceBook, month: str) -> tuple[str, str | None]:
    """The price table's model id for an Azure model name + version, and what was assumed to get it."""
    if prices.has_override(model):
        return model, None
    known = prices.models(month)
    name, version = model.strip().lower(), (version or "").strip().lower() or None
    assumed = None
    if version is None and name in _DEFAULT_VERSIONS:
        version, assumed = _DEFAULT_VERSIONS[name], f"version {_DEFAULT_VERSIONS[name]} (model version unknown)"
    candidates = []
    if version:
        if (name, version) in _LEGACY_METERS:
            candidates.append(_LEGACY_METERS[(name, version)])
        date = re.fullmatch(r"\d{4}-(\d{2})-(\d{2})", version)
        candidates.append(f"{name}-{date.group(1)}{date.group(2)}" if date else f"{name}-{version}")
    candidates.append(name)
    for c in candidates:
        if squash(c) in known:
            return known[squash(c)], assumed
    if version is None:
        dated = [m for s, m in known.items() if re.fullmatch(re.escape(squash(name)) + r"\d{4}", s)]
        if len(dated) == 1:
            return dated[0], f"{dated[0]} (model version unknown)"
    raise Unpriced(f"model {model}{' ' + version if version else ''} is not in {prices.source}; add "
                   f"[[pricing.prices]] model = \"{model}\" with input_per_1m/output_per_1m, or a newer prices_file")


def _resolve(deployment, account, model, version, region, month, doc, catalogue, prices, default_sku):
    entry = catalogue.resolve(deployment, account)
    assumed = []
    if entry is not None and entry.model and entry.source in ("config", "arm"):
        model, version = entry.model, entry.version
    elif not model and entry is not None and entry.model:
        model, version = entry.model, entry.version
    elif model and not version and entry is not None and entry.version and squash(entry.model or "") == squash(model):
        version = entry.version
    if not model:
        return Unpriced(f"model unknown for deployment {deployment!r}: add [[pricing.deployments]] name = \"{deployment}\" "
                        "model = … sku = …, or collect RequestResponse logs / ARM deployments that name it")
    s = parse_sku(entry.sku) if entry is not None and entry.sku else None
    if s is None:
        if entry is not None and entry.sku:
            return Unpriced(f"deployment {deployment!r} has SKU {entry.sku!r}, which has no token price")
        if not default_sku:
            return Unpriced(f"SKU unknown for deployment {deployment!r}: set sku in [[pricing.deployments]]")
        s = parse_sku(default_sku)
        assumed.append(f"sku {s.name} (default)")
    if _priority(doc):
        s = s.with_mode(BillingMode.PRIORITY)
    where = (entry.region if entry is not None and entry.region else None) or (str(region).replace(" ", "").lower() if region else None)
    try:
        price_model, note = meter_model(model, version, prices, month)
        if note:
            assumed.append(note)
        rates = prices.token_rates(price_model, s.payg if s.provisioned else s, where, month,
                                   int(doc.get("aoai.tokens.input") or 0))
    except Unpriced as exc:
        return exc
    return rates, s, price_model, where, "; ".join(assumed) or None


def _cost(doc: dict, rates: Rates) -> tuple[Decimal, Decimal, Decimal]:
    inp = _int(doc.get("aoai.tokens.input"))
    out = _int(doc.get("aoai.tokens.output"))
    total = _int(doc.get("aoai.tokens.total"))
    if inp == 0 and out == 0 and total:
        inp = total  # embeddings report prompt and total only
    cached = min(_int(doc.get("aoai.tokens.cached")), inp)
    return Decimal(inp - cached) * rates.input, Decimal(cached) * rates.cached_input, Decimal(out) * rates.output


def _doc_model(doc: dict) -> tuple[str | None, str | None]:
    """The model the record names; gateway responses carry it dated ('gpt-4o-2024-08-06')."""
    model, version = doc.get("aoai.model"), doc.get("aoai.model_version")
    if isinstance(model, str) and not version:
        m = _DATED.match(model)
        if m:
            return m.group("name"), m.group("date")
    return model, version


def _priority(doc: dict) -> bool:
    tier = doc.get(_P + "backend_response_body.service_tier") or doc.get("openai.response.service_tier")
    return isinstance(tier, str) and tier.lower() == "priority"


def _long(doc: dict) -> bool:
    return _int(doc.get("aoai.tokens.input")) > LONG_CONTEXT_TOKENS


def _int(v) -> int:
    try:
        return max(int(v), 0) if v is not None and not isinstance(v, bool) else 0
    except (TypeError, ValueError):
        return 0


def _month(ts) -> str:
    if isinstance(ts, datetime):
        return ts.strftime("%Y-%m")
    if isinstance(ts, (int, float)):
        return datetime.fromtimestamp(ts / 1000, timezone.utc).strftime("%Y-%m")
    return datetime.now(timezone.utc).strftime("%Y-%m")
