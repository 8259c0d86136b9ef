"""The `[pricing]` section of the aoai-monitor TOML config (see docs/cost.md for every key)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from .catalogue import Deployment, from_config
from .prices import PriceOverride, PriceSettings, PtuRateOverride
from .skus import sku as parse_sku

CONFIG_ENV = "AOAI_MONITOR_CONFIG"
_KEYS = {"prices_file", "currency", "usd_rate", "discount_percent", "default_sku", "deployments", "prices", "ptu_rates"}


@dataclass
class PricingConfig:
    prices: PriceSettings = field(default_factory=PriceSettings)
    deployments: list[Deployment] = field(default_factory=list)
    default_sku: str | None = "GlobalStandard"


def load_section(path: str | Path | None = None) -> dict:
    """The raw [pricing] table of a config file (default: $AOAI_MONITOR_CONFIG; none: empty)."""
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        return {}
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such config file (from --config or ${CONFIG_ENV})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    return raw.get("pricing", {})


def parse(section: dict) -> PricingConfig:
    """Validate a [pricing] table; errors name the key to change."""
    unknown = set(section) - _KEYS
    if unknown:
        raise ValueError(f"pricing: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    s = PriceSettings(prices_file=section.get("prices_file"), currency=str(section.get("currency", "USD")).upper(),
                      usd_rate=_dec(section.get("usd_rate", 1), "pricing.usd_rate"),
                      discount_percent=_dec(section.get("discount_percent", 0), "pricing.discount_percent"))
    if s.currency != "USD" and "usd_rate" not in section:
        raise ValueError(f"pricing.currency is {s.currency}: set pricing.usd_rate ({s.currency} per USD), "
                         "since the Azure retail prices are in USD")
    if not 0 <= s.discount_percent < 100:
        raise ValueError("pricing.discount_percent must be between 0 and 100")
    for i, row in enumerate(section.get("prices", [])):
        where = f"pricing.prices[{i}]"
        if not row.get("model") or row.get("input_per_1m") is None:
            raise ValueError(f"{where}: needs `model` and `input_per_1m` (and usually output_per_1m, cached_input_per_1m)")
        s.overrides.append(PriceOverride(
            model=row["model"], sku=_sku(row.get("sku"), where), region=row.get("region"),
            input_per_1m=_dec(row["input_per_1m"], where + ".input_per_1m"),
            cached_input_per_1m=_dec(row["cached_input_per_1m"], where) if "cached_input_per_1m" in row else None,
            output_per_1m=_dec(row["output_per_1m"], where) if "output_per_1m" in row else None))
    for i, row in enumerate(section.get("ptu_rates", [])):
        where = f"pricing.ptu_rates[{i}]"
        sku_name = _sku(row.get("sku"), where)
        if not sku_name or not parse_sku(sku_name).provisioned or "per_hour" not in row:
            raise ValueError(f"{where}: needs a provisioned `sku` (GlobalProvisionedManaged, DataZoneProvisionedManaged, "
                             "ProvisionedManaged) and `per_hour`")
        s.ptu_rates.append(PtuRateOverride(sku=sku_name, per_hour=_dec(row["per_hour"], where + ".per_hour"),
                                           region=row.get("region")))
    default_sku = section.get("default_sku", "GlobalStandard")
    if default_sku in ("", "none"):
        default_sku = None
    elif parse_sku(default_sku) is None:
        raise ValueError(f"pricing.default_sku {default_sku!r} unknown; e.g. GlobalStandard, or \"none\" to leave "
                         "deployments without a known SKU unpriced")
    return PricingConfig(prices=s, deployments=from_config(section.get("deployments", [])),
                         default_sku=parse_sku(default_sku).name if default_sku else None)


def _sku(name, where: str) -> str | None:
    if name is None:
        return None
    s = parse_sku(name)
    if s is None:
        raise ValueError(f"{where}.sku {name!r} unknown (e.g. GlobalStandard, DataZoneStandard, Standard, GlobalBatch)")
    return s.name


def _dec(value, where: str) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{where}: {value!r} is not a number") from None
