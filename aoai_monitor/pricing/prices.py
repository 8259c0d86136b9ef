"""The price book: Azure retail meters from the pinned `azure-genai-prices` snapshot, plus user overrides.

Token meters are parsed by azure-genai-prices' own meter parser (Global / Data Zone / Regional ×
Standard / Batch / Priority, cached input, long context). Its parser skips provisioned-throughput
meters, so PTU hourly rates are read here from the same raw snapshot rows. A newer snapshot (the
package's `snapshot.json` format, or raw Retail Prices API items) can be loaded offline from a file.

Rates are chosen as of the month of each request: Azure changes prices only on the first of a month,
and the snapshot keeps superseded rows, so history is priced with the rate that was in force.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import metadata, resources
from pathlib import Path

from azure_genai_prices import ContextTier, DeploymentType, PriceKind, parse_catalog
from azure_genai_prices.meters import DEFAULT_PRODUCTS
from azure_genai_prices.types import DEFAULT_LONG_CONTEXT_THRESHOLD, Meter

from .skus import Sku

MILLION = Decimal(1_000_000)


class Unpriced(Exception):
    """No price applies; the message is the document's aoai.cost.unpriced_reason (it says the fix)."""


@dataclass(frozen=True)
class Rates:
    """Per-token rates in the book's currency for one (model, SKU, region, month)."""

    input: Decimal
    cached_input: Decimal
    output: Decimal
    price_model: str
    meters: tuple[str, ...] = ()


@dataclass
class PriceOverride:
    """A negotiated per-model price (per 1M tokens, in the book's currency); replaces the table's rates."""

    model: str
    sku: str | None = None
    region: str | None = None
    input_per_1m: Decimal | None = None
    cached_input_per_1m: Decimal | None = None
    output_per_1m: Decimal | None = None


@dataclass
class PtuRateOverride:
    """A PTU hourly rate of one's own (a reservation's amortised rate, an agreement), in the book's currency."""

    sku: str
    per_hour: Decimal
    region: str | None = None


@dataclass
class PriceSettings:
    prices_file: str | None = None
    currency: str = "USD"
    usd_rate: Decimal = Decimal(1)  # book currency per USD, applied to table prices only
    discount_percent: Decimal = Decimal(0)  # applied to table prices only
    overrides: list[PriceOverride] = field(default_factory=list)
    ptu_rates: list[PtuRateOverride] = field(default_factory=list)


def squash(model: str) -> str:
    """Azure spells one meter model several ways (gpt-35-turbo-4k / gpt-35-turbo4k): compare without hyphens."""
    return model.strip().lower().replace("-", "").replace("_", "")


class PriceBook:
    """Rates for tokens and PTU hours. Immutable after construction; month tables are built lazily."""

    def __init__(self, settings: PriceSettings | None = None):
        self.settings = settings or PriceSettings()
        self.items, fetched = _load_items(self.settings.prices_file)
        source = (f"file {Path(self.settings.prices_file).name}" if self.settings.prices_file
                  else f"azure-genai-prices {metadata.version('azure-genai-prices')}")
        self.source = f"{source} snapshot {fetched[:10] or 'undated'}"
        self._overrides_digest = _digest(self.settings)
        self._tables: dict[str, dict[tuple, Meter]] = {}
        self._ptu: dict[str, dict[tuple[str, str], Decimal]] = {}
        self._lock = threading.Lock()

    @property
    def currency(self) -> str:
        return self.settings.currency

    def version(self, month: str) -> str:
        """What priced a document: source snapshot, rate month and an overrides digest (history stays explainable)."""
        v = f"{self.source} @{month}"
        return v + f" +overrides {self._overrides_digest}" if self._overrides_digest else v

    # --- tokens ------------------------------------------------------------------------------------

    def models(self, month: str) -> dict[str, str]:
        """squashed meter model id → meter model id, for the month (built once per month: every batch asks)."""
        cache = self.__dict__.setdefault("_models_by_month", {})
        if month not in cache:
            cache[month] = {k[0]: meter.key.model for k, meter in self._table(month).items()}
        return cache[month]

    def token_rates(self, price_model: str, sku: Sku, region: str | None, month: str,
                    input_tokens: int = 0) -> Rates:
        override = self._override(price_model, sku, region)
        if override is not None:
            return override
        table = self._table(month)
        wanted = squash(price_model)
        tier = ContextTier.SHORT
        if input_tokens > DEFAULT_LONG_CONTEXT_THRESHOLD and self._meter(table, wanted, PriceKind.INPUT, sku, ContextTier.LONG):
            tier = ContextTier.LONG  # Azure bills the whole request on the long-context meters
        inp = self._meter(table, wanted, PriceKind.INPUT, sku, tier)
        out = self._meter(table, wanted, PriceKind.OUTPUT, sku, tier)
        if inp is None:
            raise Unpriced(f"no {sku.deployment.value}/{sku.mode.value} input meter for {price_model} in {self.source}; "
                           "add a [[pricing.prices]] override or a newer prices_file")
        cached = self._meter(table, wanted, PriceKind.CACHE_READ, sku, tier) or inp
        scale = self._scale()
        try:
            rates = Rates(inp.price_for(region) * scale, cached.price_for(region) * scale,
                          (out.price_for(region) * scale) if out else Decimal(0), inp.key.model,
                          tuple(m.meter_name for m in (inp, cached, out) if m))
        except Exception as exc:  # AmbiguousRegionPrice / PriceNotFound from the meter
            raise Unpriced(f"{price_model} {sku.name}: {exc} Set `region` for the deployment in [[pricing.deployments]]") from None
        return rates

    def _meter(self, table, wanted: str, kind: PriceKind, sku: Sku, tier: ContextTier) -> Meter | None:
        key = (wanted, kind.value, sku.deployment.value, sku.mode.value, tier.value)
        return table.get(key)

    def _table(self, month: str) -> dict[tuple, Meter]:
        with self._lock:
            table = self._tables.get(month)
            if table is None:
                parsed, _ = parse_catalog(self.items, DEFAULT_PRODUCTS, as_of=f"{month}-01")
                table = {}
                for key, meter in parsed.items():
                    table.setdefault((squash(key[0]),) + key[1:], meter)
                self._tables[month] = table
            return table

    def _scale(self) -> Decimal:
        s = self.settings
        return s.usd_rate * (Decimal(100) - s.discount_percent) / Decimal(100)

    def has_override(self, model: str) -> bool:
        return any(squash(o.model) == squash(model) for o in self.settings.overrides)

    def _override(self, price_model: str, sku: Sku, region: str | None) -> Rates | None:
        for o in self.settings.overrides:
            if squash(o.model) != squash(price_model):
                continue
            if o.sku and o.sku.lower() != sku.name.lower():
                continue
            if o.region and (region or "").lower() != o.region.lower():
                continue
            if o.input_per_1m is None:
                continue
            inp = o.input_per_1m / MILLION
            cached = o.cached_input_per_1m / MILLION if o.cached_input_per_1m is not None else inp
            out = o.output_per_1m / MILLION if o.output_per_1m is not None else Decimal(0)
            return Rates(inp, cached, out, price_model, ("override",))
        return None

    # --- provisioned throughput -----------------------------------------------------------------------

    def ptu_hourly(self, sku: Sku, region: str | None, month: str) -> Decimal:
        """Price of one PTU-hour for a provisioned SKU in a region (overrides first)."""
        for o in self.settings.ptu_rates:
            if o.sku.lower() == sku.name.lower() and (not o.region or o.region.lower() == (region or "").lower()):
                return o.per_hour
        rates = self._ptu_table(month)
        by_region = {r: p for (d, r), p in rates.items() if d == sku.deployment.value}
        if not by_region:
            raise Unpriced(f"no PTU meter for {sku.name} in {self.source}; add a [[pricing.ptu_rates]] entry")
        if region and region.lower() in by_region:
            price = by_region[region.lower()]
        elif len(set(by_region.values())) == 1:
            price = next(iter(by_region.values()))
        else:
            raise Unpriced(f"{sku.name} PTU-hour is priced per region ({', '.join(sorted({str(v) for v in by_region.values()}))} USD) "
                           "and the deployment's region is unknown; set `region` in [[pricing.deployments]]")
        return price * self._scale()

    def _ptu_table(self, month: str) -> dict[tuple[str, str], Decimal]:
        with self._lock:
            if month not in self._ptu:
                self._ptu[month] = _ptu_rates(self.items, f"{month}-01")
            return self._ptu[month]


_PTU_METERS = {"provisioned managed global unit": DeploymentType.GLOBAL,
               "provisioned managed data zone unit": DeploymentType.DATA_ZONE,
               "provisioned managed regional unit": DeploymentType.REGIONAL}


def _ptu_rates(items: list[dict], as_of: str) -> dict[tuple[str, str], Decimal]:
    """(deployment type, region) → USD per PTU-hour; per region the latest row in force on `as_of` wins."""
    best: dict[tuple[str, str], tuple[str, Decimal]] = {}
    for item in items:
        if item.get("productName") != "Azure OpenAI":
            continue
        kind = _PTU_METERS.get(str(item.get("meterName", "")).strip().lower())
        if kind is None or str(item.get("unitOfMeasure", "")).strip() != "1/Hour":
            continue
        effective = (item.get("effectiveStartDate") or "")[:10]
        price = Decimal(str(item.get("retailPrice", 0)))
        for region in item.get("regions") or [item.get("armRegionName", "")]:
            key = (kind.value, (region or "").lower())
            held = best.get(key)
            live, held_live = effective <= as_of, held is not None and held[0] <= as_of
            if held is None or (live and (not held_live or effective > held[0])) or (not live and not held_live and effective < held[0]):
                best[key] = (effective, price)
    return {k: v[1] for k, v in best.items()}


def _load_items(path: str | None) -> tuple[list[dict], str]:
    """Snapshot rows and their fetch time, from the pinned package or a newer file (offline refresh)."""
    if path:
        try:
            payload = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ValueError(f"pricing.prices_file {path}: no such file; write one with "
                             "`azure-genai-prices refresh --output {path}` on a machine with internet access") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"pricing.prices_file {path}: not JSON ({exc})") from None
        items = payload.get("items") or payload.get("Items") if isinstance(payload, dict) else payload
        if not isinstance(items, list) or not items:
            raise ValueError(f"pricing.prices_file {path}: expected {{\"items\": [...]}} (azure-genai-prices snapshot) "
                             "or a Retail Prices API response with Items")
        fetched = str(payload.get("fetched_at", "")) if isinstance(payload, dict) else ""
        return items, fetched
    raw = resources.files("azure_genai_prices.data").joinpath("snapshot.json").read_text(encoding="utf-8")
    payload = json.loads(raw)
    return payload["items"], str(payload.get("fetched_at", ""))


def _digest(s: PriceSettings) -> str:
    if not (s.overrides or s.ptu_rates or s.discount_percent or s.usd_rate != 1 or s.currency != "USD"):
        return ""
    text = repr((s.currency, str(s.usd_rate), str(s.discount_percent),
                 [(o.model, o.sku, o.region, str(o.input_per_1m), str(o.cached_input_per_1m), str(o.output_per_1m)) for o in s.overrides],
                 [(o.sku, o.region, str(o.per_hour)) for o in s.ptu_rates]))
    return hashlib.sha1(text.encode()).hexdigest()[:8]

