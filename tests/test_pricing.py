"""Cost: the reference set priced within 0.5 % of hand-computed values, unpriced flagged, reprice, ingest.

Every expected value below is worked out by hand from the pinned price data: the azure-genai-prices
0.2.0 snapshot (Azure Retail Prices API, fetched 2026-08-11). Rates are quoted per 1M tokens with the
Azure meter they come from; requests are dated November 2026, so the rate in force on 2026-11-01 applies.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from aoai_monitor.cli import main
from aoai_monitor.pipeline import expand_inputs, ingest_files
from aoai_monitor.pricing import attach, load_pricing, price_documents, record_arm_deployments
from aoai_monitor.pricing.catalogue import from_arm, from_config
from aoai_monitor.pricing.prices import PriceBook
from aoai_monitor.pricing.reports import break_even, hourly_costs, ptu_vs_payg, summary
from aoai_monitor.pricing.reprice import reprice
from aoai_monitor.store import Store
from aoai_monitor.normalize import metric_document

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "samples" / "elastic"
NOV = int(datetime(2026, 11, 10, 12, tzinfo=timezone.utc).timestamp() * 1000)
DAY = 86_400_000

DEPLOYMENTS = [
    {"name": "chat-global", "model": "gpt-4o", "version": "2024-11-20", "sku": "GlobalStandard"},
    {"name": "chat-eu", "model": "gpt-4o", "version": "2024-08-06", "sku": "DataZoneStandard", "region": "swedencentral"},
    {"name": "mini-east", "model": "gpt-4o-mini", "version": "2024-07-18", "sku": "Standard", "region": "eastus"},
    {"name": "mini-weu", "model": "gpt-4o-mini", "version": "2024-07-18", "sku": "Standard", "region": "westeurope"},
    {"name": "batch-41", "model": "gpt-4.1", "version": "2025-04-14", "sku": "GlobalBatch"},
    {"name": "batch-mini-dz", "model": "gpt-4o-mini", "version": "2024-07-18", "sku": "DataZoneBatch", "region": "eastus"},
    {"name": "emb", "model": "text-embedding-3-small", "version": "1", "sku": "GlobalStandard"},
    {"name": "mini54-jp", "model": "gpt-5.4-mini", "sku": "DataZoneStandard", "region": "japaneast"},
    {"name": "mini54-se", "model": "gpt-5.4-mini", "sku": "DataZoneStandard", "region": "swedencentral"},
    {"name": "long-54", "model": "gpt-5.4", "sku": "GlobalStandard"},
    {"name": "dz-gov", "model": "gpt-4o", "version": "2024-11-20", "sku": "DataZoneStandard", "region": "usgovvirginia"},
    {"name": "ptu-global", "model": "gpt-4o", "version": "2024-11-20", "sku": "GlobalProvisionedManaged", "ptus": 50},
    {"name": "ptu-jp", "model": "gpt-4o", "version": "2024-11-20", "sku": "DataZoneProvisionedManaged", "ptus": 15, "region": "japaneast"},
]

# (case, deployment, input, cached, output, expected total, expected payg, why)
REFERENCE = [
    ("global standard, cached", "chat-global", 1000, 200, 500, 0.00725, 0.00725,
     "gpt 4o 1120 …glbl: input 2.50, cached 1.25, output 10.00 → 800×2.5e-6 + 200×1.25e-6 + 500×1e-5"),
    ("data zone standard (EU), cached", "chat-eu", 10_000, 4000, 1000, 0.033, 0.033,
     "gpt 4o 0806 … Data Zone: input 2.75, cached 1.375, output 11.00 (Global × 1.1) → 0.0165 + 0.0055 + 0.011"),
    ("regional standard, eastus", "mini-east", 100_000, 0, 10_000, 0.0231, 0.0231,
     "gpt-4o-mini-0718-…-regnl in eastus: input 0.165, output 0.66 → 0.0165 + 0.0066"),
    ("global batch (no cached batch meter: cached billed at batch input)", "batch-41", 50_000, 10_000, 20_000, 0.13, 0.13,
     "gpt 4.1 Batch …glbl: input 1.00, output 4.00 → 50000×1e-6 + 20000×4e-6"),
    ("data zone batch", "batch-mini-dz", 1_000_000, 0, 100_000, 0.116, 0.116,
     "gpt 4o mini 0718 Batch … Data Zone: input 0.083, output 0.33 → 0.083 + 0.033"),
    ("embeddings: input only", "emb", 250_000, 0, 0, 0.005, 0.005,
     "text-embedding-3-small-glbl: 0.02 → 250000×2e-8"),
    ("data zone APAC is not data zone EU", "mini54-jp", 1_000_000, 0, 0, 0.9, 0.9,
     "5.4 mini Inp Dz in japaneast: 0.90 (APAC zone, +20 % over Global)"),
    ("…same meter in the EU zone", "mini54-se", 1_000_000, 0, 0, 0.825, 0.825,
     "5.4 mini Inp Dz in swedencentral: 0.825 (+10 %)"),
    ("long context: the whole request on LongCo meters", "long-54", 300_000, 100_000, 1000, 1.0725, 1.0725,
     "5.4 longco …Gl: input 5.00, cached 0.50, output 22.50 → 200000×5e-6 + 100000×5e-7 + 1000×2.25e-5"),
    ("global PTU: marginal 0, payg = Global Standard", "ptu-global", 1000, 200, 500, 0.0, 0.00725,
     "capacity is billed per PTU-hour; the same tokens on gpt 4o 1120 glbl cost 0.00725"),
    ("data zone PTU: payg = Data Zone Standard in japaneast", "ptu-jp", 100_000, 0, 10_000, 0.0, 0.385,
     "gpt 4o 1120 Inp/Outp Data Zone in japaneast: 2.75 / 11.00 → 0.275 + 0.11"),
    ("data zone in US Gov: same meter, another rate", "dz-gov", 100_000, 0, 10_000, 0.48130, 0.48130,
     "gpt 4o 1120 Inp/Outp Data Zone in usgovvirginia: 3.438 / 13.75 → 0.3438 + 0.1375"),
]


@pytest.fixture(scope="module")
def pricing():
    return load_pricing(section={"deployments": DEPLOYMENTS})


def _doc(deployment, tin, cached, tout, ts=NOV, category="AzureOpenAIRequestUsage", **extra):
    doc = {"@timestamp": ts, "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{deployment}/{ts}/{tin}/{category}")), "azure.open_ai.category": category,
           "aoai.deployment": deployment, "aoai.tokens.input": tin, "aoai.tokens.output": tout,
           "aoai.tokens.total": tin + tout, **extra}
    if cached:
        doc["aoai.tokens.cached"] = cached
    return doc


def test_pinned_price_data_is_the_one_the_reference_was_computed_from():
    assert PriceBook().source == "azure-genai-prices 0.2.0 snapshot 2026-08-11", \
        "the pinned snapshot changed: recompute the REFERENCE values by hand before changing this test"


@pytest.mark.parametrize("case,deployment,tin,cached,tout,total,payg,why", REFERENCE, ids=[r[0] for r in REFERENCE])
def test_reference_set_within_half_a_percent(pricing, case, deployment, tin, cached, tout, total, payg, why):
    doc = _doc(deployment, tin, cached, tout)
    price_documents([doc], pricing.catalogue(), pricing.prices, pricing.default_sku)
    assert doc.get("aoai.cost.unpriced_reason") is None, why
    assert doc["aoai.cost.total"] == pytest.approx(total, rel=0.005, abs=1e-12), why
    assert doc["aoai.cost.payg"] == pytest.approx(payg, rel=0.005), why
    assert doc["aoai.cost.token_source"] == "request_usage"
    assert doc["aoai.cost.price_version"] == "azure-genai-prices 0.2.0 snapshot 2026-08-11 @2026-11"
    assert "aoai.cost.assumed" not in doc  # everything came from the catalogue


def test_ptu_hourly_cost_and_break_even(pricing, tmp_path):
    """Global PTU is $1.00/PTU-hour everywhere; Data Zone in japaneast $1.20 since 2026-08-01 (was $1.10)."""
    with Store(tmp_path / "s.duckdb") as store:
        store.pricer = None  # this test stores pre-priced documents; the reports are what is checked
        docs = [_doc("ptu-global", 1_000_000, 0, 100_000, ts=NOV + i * 3_600_000) for i in range(2)]
        price_documents(docs, pricing.catalogue(), pricing.prices, pricing.default_sku)
        store.commit(logs=docs)
        day = NOV - NOV % DAY
        rows = ptu_vs_payg(store, pricing, day, day + DAY)
        by_dep = {r["deployment"]: r for r in rows}
        # 50 PTU × $1.00 × 24 h = $1200. Tokens on Global Standard: 2 × (1M × 2.5e-6 + 100k × 1e-5) = $7.00.
        assert by_dep["ptu-global"]["ptu_cost"] == pytest.approx(1200, rel=0.005)
        assert by_dep["ptu-global"]["payg_equivalent"] == pytest.approx(7.0, rel=0.005)
        assert by_dep["ptu-global"]["ptu_pct_of_payg"] == pytest.approx(1200 / 7 * 100, rel=0.005)
        # 15 PTU × $1.20 × 24 h = $432 (the 2026-08-01 japaneast row supersedes $1.10).
        assert by_dep["ptu-jp"]["ptu_cost"] == pytest.approx(432, rel=0.005)
        statement = break_even(rows)[0]["statement"]
        assert statement.startswith("ptu-global: at current volume, PTU costs 17143 % of pay-as-you-go")
        assert "breaks even at 171.4× today's token volume" in statement
    july = load_pricing(section={"deployments": DEPLOYMENTS}).prices
    from aoai_monitor.pricing.skus import SKUS
    assert float(july.ptu_hourly(SKUS["datazoneprovisionedmanaged"], "japaneast", "2026-07")) == pytest.approx(1.10)


def test_unknown_models_deployments_and_regions_are_unpriced_never_zero(pricing):
    docs = [
        _doc("mystery", 100, 0, 10),  # no model anywhere
        _doc("chat-x", 100, 0, 10, **{"aoai.model": "gpt-99-ultra"}),  # model not in the price data
        _doc("mini-weu", 100, 0, 10),  # gpt-4o-mini regional is not sold in westeurope
        _doc("nothing", 0, 0, 0, **{"aoai.tokens.input": None, "aoai.tokens.output": None}),  # no tokens: not a cost doc
    ]
    price_documents(docs, pricing.catalogue(), pricing.prices, pricing.default_sku)
    for doc in docs[:3]:
        assert "aoai.cost.total" not in doc
        assert doc["aoai.cost.unpriced_reason"]
    assert "[[pricing.deployments]]" in docs[0]["aoai.cost.unpriced_reason"]
    assert "gpt-99-ultra" in docs[1]["aoai.cost.unpriced_reason"]
    assert "westeurope" in docs[2]["aoai.cost.unpriced_reason"]
    assert not any(k.startswith("aoai.cost.") for k in docs[3])


def test_overrides_discount_and_currency(pricing):
    """Negotiated price beats the table; a discount and a currency rate scale table prices only."""
    p = load_pricing(section={"deployments": DEPLOYMENTS, "currency": "EUR", "usd_rate": 0.9, "discount_percent": 10,
                              "prices": [{"model": "gpt-4o-mini", "input_per_1m": 0.1, "output_per_1m": 0.4}]})
    a, b = _doc("chat-global", 1000, 200, 500), _doc("mini-east", 1_000_000, 0, 1_000_000)
    price_documents([a, b], p.catalogue(), p.prices, p.default_sku)
    assert a["aoai.cost.total"] == pytest.approx(0.00725 * 0.9 * 0.9, rel=0.005)  # 0.0058725 EUR
    assert b["aoai.cost.total"] == pytest.approx(0.5, rel=0.005)  # 1M × 0.1 + 1M × 0.4, as negotiated
    assert a["aoai.cost.currency"] == "EUR" and "+overrides" in a["aoai.cost.price_version"]


def test_arm_deployments_give_sku_and_ptus(tmp_path):
    arm = {"value": [
        {"name": "prod-chat", "sku": {"name": "DataZoneStandard", "capacity": 300},
         "properties": {"model": {"format": "OpenAI", "name": "gpt-4o", "version": "2024-08-06"}}},
        {"name": "prod-ptu", "sku": {"name": "GlobalProvisionedManaged", "capacity": 100},
         "properties": {"model": {"format": "OpenAI", "name": "gpt-4o", "version": "2024-11-20"}}}]}
    entries = from_arm(arm, account="MyAOAI", region="swedencentral")
    assert entries[0].sku == "DataZoneStandard" and entries[0].ptus is None  # capacity of a Standard SKU is TPM, not PTU
    assert entries[1].ptus == 100 and entries[1].account == "myaoai"
    with Store(tmp_path / "s.duckdb") as store:
        record_arm_deployments(store, arm, account="myaoai", region="swedencentral")
        doc = _doc("prod-chat", 10_000, 4000, 1000, **{"azure.resource.name": "myaoai",
                                                     "azure.resource.provider": "microsoft.cognitiveservices/accounts"})
        store.commit(logs=[doc])
        row = store.cursor().execute('SELECT "aoai.cost.total", "aoai.cost.sku" FROM logs').fetchone()
    assert row[1] == "DataZoneStandard" and row[0] == pytest.approx(0.033, rel=0.005)  # same tokens as the EU case


def test_config_rejects_unknown_sku_with_the_fix():
    with pytest.raises(ValueError, match="GlobalStandard, DataZoneStandard"):
        from_config([{"name": "x", "sku": "Premium"}])


def test_ingest_gateway_sample_prices_the_completion(tmp_path):
    """The Elastic APIM fixture: one 200 completion with usage (14 in, 8 out) and two 400 content-filter errors.

    Nothing is configured, so pricing assumes what it must and says so: model gpt-35-turbo (from the
    response) without a version → 0125; SKU unknown → GlobalStandard. Meter gpt-35-turbo16K-0125 …glbl:
    input 0.50, output 1.50 → 14×5e-7 + 8×1.5e-6 = 0.000019 USD.
    """
    with Store(tmp_path / "s.duckdb") as store:
        ingest_files(store, expand_inputs([str(SAMPLES / "test-open-ai-gateway.log")]))
        rows = store.cursor().execute(
            'SELECT "aoai.status_code", "aoai.cost.total", "aoai.cost.token_source", "aoai.cost.assumed", '
            '"aoai.cost.unpriced_reason" FROM logs ORDER BY "aoai.status_code"').fetchall()
    assert [r[0] for r in rows] == [200, 400, 400]
    ok = rows[0]
    assert ok[1] == pytest.approx(0.000019, rel=0.005) and ok[2] == "gateway"
    assert "sku GlobalStandard (default)" in ok[3] and "version 0125" in ok[3]
    assert all(r[1] is None and r[4] is None for r in rows[1:])  # no tokens, so neither cost nor "unpriced"


def test_reprice_after_a_price_override_changes_stored_costs(tmp_path, pricing):
    with Store(tmp_path / "s.duckdb") as store:
        store.pricer = None
        docs = [_doc("chat-global", 1000, 200, 500, ts=NOV + i) for i in range(3)]
        store.commit(logs=docs)  # stored without cost (as before pricing existed)
        first = reprice(store, pricing, NOV - DAY, NOV + DAY)
        assert (first.documents, first.priced, first.unpriced) == (3, 3, 0)
        total = store.cursor().execute('SELECT sum("aoai.cost.total") FROM logs').fetchone()[0]
        assert total == pytest.approx(3 * 0.00725, rel=0.005)
        cheaper = load_pricing(section={"deployments": DEPLOYMENTS, "prices": [
            {"model": "gpt-4o", "input_per_1m": 2.0, "cached_input_per_1m": 1.0, "output_per_1m": 8.0}]})
        progress = []
        reprice(store, cheaper, NOV - DAY, NOV + DAY, batch=2, on_progress=lambda d, t: progress.append((d, t)))
        total, versions = store.cursor().execute(
            'SELECT sum("aoai.cost.total"), list(DISTINCT "aoai.cost.price_version") FROM logs').fetchone()
    # 800×2e-6 + 200×1e-6 + 500×8e-6 = 0.0058 per request
    assert total == pytest.approx(3 * 0.0058, rel=0.005)
    assert progress == [(2, 3), (3, 3)]
    assert len(versions) == 1 and "+overrides" in versions[0]


def test_best_token_source_per_deployment_hour_and_metrics_fallback(tmp_path, pricing):
    """Gateway beats request usage for the same deployment-hour; a deployment with only metrics is priced from
    ProcessedPromptTokens/GeneratedTokens (chat-eu: 1M in × 2.75e-6 + 100k out × 1.1e-5 = 3.85)."""
    with Store(tmp_path / "s.duckdb") as store:
        attach(store, pricing)  # what the service does with its [pricing] section
        gw = _doc("chat-global", 1000, 200, 500, category="GatewayLogs",
                  **{"azure.open_ai.properties.apim_subscription_id": "team-a"})
        usage = _doc("chat-global", 1000, 200, 500)
        rid = "/SUBSCRIPTIONS/0A1B2C3D-0000-0000-0000-000000000000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.COGNITIVESERVICES/ACCOUNTS/ACCT"
        metrics = [metric_document(resource_id=rid, metric_name=name, timestamp_ms=NOV, timegrain="PT1H",
                                   dimensions={"ModelDeploymentName": "chat-eu"}, values={"Total": value},
                                   source="azure_monitor")
                   for name, value in (("ProcessedPromptTokens", 1_000_000), ("GeneratedTokens", 100_000))]
        store.commit(logs=[gw, usage], metrics=metrics)
        rows = hourly_costs(store, pricing, NOV - DAY, NOV + DAY)
        s = summary(store, pricing, NOV - DAY, NOV + DAY)
    by_dep = {r["deployment"]: r for r in rows}
    assert by_dep["chat-global"]["source"] == "gateway" and by_dep["chat-global"]["cost"] == pytest.approx(0.00725, rel=0.005)
    assert by_dep["chat-eu"]["source"] == "metrics" and by_dep["chat-eu"]["cost"] == pytest.approx(3.85, rel=0.005)
    assert s["token_cost"] == pytest.approx(3.85 + 0.00725, rel=0.005)
    # The two configured PTU deployments bill for all 48 h of the range: 50 × $1.00 × 48 + 15 × $1.20 × 48.
    assert s["ptu_cost"] == pytest.approx(2400 + 864, rel=0.005)
    assert s["total"] == pytest.approx(3.85725 + 3264, rel=0.005)
    assert s["top_callers"][0]["caller"] == "team-a"
    assert s["unpriced_requests"] == 0


def test_cost_command_shows_unpriced_count(tmp_path):
    path = tmp_path / "s.duckdb"
    now = int(datetime.now(timezone.utc).timestamp() * 1000)
    with Store(path) as store:
        store.commit(logs=[_doc("mystery", 100, 0, 10, ts=now - 1000)])
    out = CliRunner().invoke(main, ["cost", "--store", str(path), "--since", "1d", "--format", "json"])
    assert out.exit_code == 0, out.output
    s = json.loads(out.output)
    assert s["unpriced_requests"] == 1 and "model unknown for deployment 'mystery'" in s["unpriced_reasons"][0]["reason"]
