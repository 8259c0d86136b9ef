"""The ingest pricer's column path (aoai_monitor/pricing/columns.py) gives exactly what the per-document path gives.

The reference is the ingest pricer as it was before the column path: to_pylist dicts through
engine.price_documents, then the cost columns rebuilt value by value (`PerDocument` below, kept verbatim).
Both pricers see the same batches, one after another, and must agree bit for bit after every batch: the
cost columns (floats compared by their hex form), the schema, the state entries (in order), the
catalogue, and the deployments looked up in the store.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import aoai_monitor.pricing as pricing_module
from aoai_monitor.normalize import metric_document
from aoai_monitor.pricing import (_LEARN_FIELDS, _METRIC_FIELDS, _P, IngestPricer, _rows, _with_costs, columns,
                                  load_pricing)
from aoai_monitor.pricing.catalogue import Catalogue, from_arm, learn, learn_from_store
from aoai_monitor.pricing.engine import INPUT_FIELDS, price_documents
from aoai_monitor.store import Store
from aoai_monitor.store.duckdb_store import docs_to_arrow

OPENAI = "microsoft.cognitiveservices/accounts"
APIM = "microsoft.apimanagement/service"


def _ms(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


# July (PTU Data Zone japaneast at $1.10), just before and at 1 August (a new month), and November.
TIMES = [_ms(2026, 7, 15, 8), _ms(2026, 8, 1) - 1, _ms(2026, 8, 1), _ms(2026, 11, 10, 12), _ms(2026, 11, 30, 23, 59)]

DEPLOYMENTS = [
    {"name": "chat-global", "model": "gpt-4o", "version": "2024-11-20", "sku": "GlobalStandard"},
    {"name": "chat-eu", "model": "gpt-4o", "version": "2024-08-06", "sku": "DataZoneStandard", "region": "swedencentral"},
    {"name": "mini-east", "model": "gpt-4o-mini", "version": "2024-07-18", "sku": "Standard", "region": "eastus"},
    {"name": "mini-weu", "model": "gpt-4o-mini", "version": "2024-07-18", "sku": "Standard", "region": "westeurope"},
    {"name": "batch-41", "model": "gpt-4.1", "version": "2025-04-14", "sku": "GlobalBatch"},
    {"name": "batch-mini-dz", "model": "gpt-4o-mini", "version": "2024-07-18", "sku": "DataZoneBatch", "region": "eastus"},
    {"name": "emb", "model": "text-embedding-3-small", "version": "1", "sku": "GlobalStandard"},
    {"name": "long-54", "model": "gpt-5.4", "sku": "GlobalStandard"},
    {"name": "ptu-global", "model": "gpt-4o", "version": "2024-11-20", "sku": "GlobalProvisionedManaged", "ptus": 50},
    {"name": "ptu-jp", "model": "gpt-4o", "version": "2024-11-20", "sku": "DataZoneProvisionedManaged", "ptus": 15,
     "region": "japaneast"},
    {"name": "acct-chat", "account": "acct-a", "model": "gpt-4o-mini", "version": "2024-07-18", "sku": "GlobalStandard"},
    {"name": "nosku", "model": "gpt-4o"},  # priced on default_sku, or unpriced when there is none
]
ARM = {"value": [
    {"name": "arm-chat", "sku": {"name": "DataZoneStandard", "capacity": 300},
     "properties": {"model": {"name": "gpt-4o", "version": "2024-08-06"}}},
    {"name": "arm-ptu", "sku": {"name": "ProvisionedManaged", "capacity": 100},
     "properties": {"model": {"name": "gpt-4o", "version": "2024-11-20"}}},
    {"name": "arm-odd", "sku": {"name": "DeveloperTier"}, "properties": {"model": {"name": "gpt-4o"}}},  # no token price
]}
NAMES = [d["name"] for d in DEPLOYMENTS] + ["arm-chat", "arm-ptu", "arm-odd", "learned-rr", "learned-rr2",
                                             "mystery", "CHAT-GLOBAL", "", None]
PRICINGS = {
    "configured": {"deployments": DEPLOYMENTS},
    "no default sku": {"deployments": DEPLOYMENTS, "default_sku": "none"},
    "overrides, discount, EUR": {
        "deployments": DEPLOYMENTS, "currency": "EUR", "usd_rate": 0.9137, "discount_percent": 12.5,
        "prices": [{"model": "gpt-4o-mini", "input_per_1m": 0.1234567, "cached_input_per_1m": 0.05, "output_per_1m": 0.4},
                   {"model": "gpt-4.1", "sku": "GlobalBatch", "input_per_1m": 1.01}],
        "ptu_rates": [{"sku": "GlobalProvisionedManaged", "per_hour": 0.5}]},
    "nothing configured": {},
}


class PerDocument(IngestPricer):
    """The ingest pricer before the column path, verbatim: the reference semantics."""

    def __call__(self, name, table):
        if name not in ("logs", "metrics"):
            return table, {}
        try:
            with self._lock:
                if self._catalogue is None:
                    self._catalogue = self._pricing.catalogue(self.store)
                if name == "metrics":
                    docs = _rows(table, _METRIC_FIELDS, "azure.dimensions.model_deployment_name")
                    changed = [e for e in learn((), docs) if self._catalogue.add(e)]
                    return table, self._catalogue.to_state(changed)
                learned = learn(_rows(table, _LEARN_FIELDS, _P + "model_name"))
                mask = pc.or_(pc.is_valid(table.column("aoai.tokens.input")), pc.is_valid(table.column("aoai.tokens.output")))
                docs = _rows(table, INPUT_FIELDS, mask=mask)
                unseen = sorted({d.get("aoai.deployment") for d in docs} - self._looked_up - {None})
                self._looked_up.update(unseen)
                learned += learn_from_store(self.store.con, unseen) if unseen else []
                changed = [e for e in learned if self._catalogue.add(e)]
                if not docs:
                    return table, self._catalogue.to_state(changed)
                price_documents(docs, self._catalogue, self._pricing.prices, self._pricing.default_sku)
                return _with_costs(table, mask, docs), self._catalogue.to_state(changed)
        except Exception:
            return table, {}


def _maybe(rnd, p, value):
    return value if rnd.random() < p else None


def _documents(rnd: random.Random, n: int) -> list[dict]:
    """A realistic mix with every edge the engine distinguishes (see the module docstring of columns.py)."""
    docs = []
    for i in range(n):
        category = rnd.choice(["GatewayLogs", "GatewayLogs", "GatewayLlmLogs", "AzureOpenAIRequestUsage",
                               "AzureOpenAIRequestUsage", "RequestResponse", "gatewaylogs", "Audit", None])
        doc = {"@timestamp": rnd.choice(TIMES) + rnd.randrange(0, 3) * rnd.choice([0, 1, 3_600_000]),
               "id": str(uuid.UUID(int=rnd.getrandbits(128))), "azure.open_ai.category": category,
               "aoai.deployment": rnd.choice(NAMES)}
        if category and category.lower().startswith("gateway"):
            doc.update({"azure.resource.provider": APIM, "azure.resource.name": "apim-gw",
                        _P + "backend_url": rnd.choice([
                            "https://acct-a.openai.azure.com/openai/deployments/x/chat/completions?api-version=2024-10-21",
                            "https://ACCT-B.openai.azure.com/openai/deployments/y/embeddings",
                            "https://acct-c.cognitiveservices.azure.com/", "https://hub.services.ai.azure.com/models",
                            "https://example.com/proxy", "not a url", None])})
            if rnd.random() < 0.3:
                doc[_P + "region"] = rnd.choice(["West Europe", "eastus", "Japan East"])
        else:
            doc.update({"azure.resource.provider": rnd.choice([OPENAI, OPENAI, None]),
                        "azure.resource.name": rnd.choice(["acct-a", "ACCT-B", "", None])})
        doc["azure.open_ai.location"] = rnd.choice([None, None, "East US", "eastus", "swedencentral", "japaneast", ""])
        doc["aoai.model"] = rnd.choice([None, None, "gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18",
                                        "gpt-35-turbo", "text-embedding-3-small", "gpt-99-ultra", "gpt-4.1"])
        doc["aoai.model_version"] = rnd.choice([None, None, None, "2024-11-20", "0125", ""])
        if category == "RequestResponse" or rnd.random() < 0.05:  # what the catalogue learns from
            doc[_P + "model_name"] = rnd.choice(["gpt-4o", "gpt-4o-mini", "gpt-35-turbo"])
            doc[_P + "model_version"] = rnd.choice(["2024-11-20", "2024-07-18", None, ""])
        tokens = rnd.random()
        if tokens < 0.85:  # most rows carry tokens
            tin = rnd.choice([None, 0, rnd.randrange(1, 5000), rnd.randrange(1, 5000), rnd.randrange(272_000, 400_000),
                              272_000, 272_001, -5])
            tout = rnd.choice([None, 0, rnd.randrange(1, 3000), rnd.randrange(1, 3000)])
            if tin is None and tout is None:
                tout = rnd.randrange(1, 100)
            doc["aoai.tokens.input"], doc["aoai.tokens.output"] = tin, tout
            doc["aoai.tokens.total"] = rnd.choice([None, (tin or 0) + (tout or 0), rnd.randrange(0, 9000), 0])
            doc["aoai.tokens.cached"] = rnd.choice([None, None, 0, rnd.randrange(0, 2000), 10_000_000, -3])
        if rnd.random() < 0.05:  # stale cost fields: the pricer replaces them (with null where no tokens)
            doc.update({"aoai.cost.total": 1.5, "aoai.cost.sku": "Stale", "aoai.cost.unpriced_reason": "stale"})
        docs.append({k: v for k, v in doc.items() if v is not None})
    return docs


def _bits(table: pa.Table) -> list:
    return [(f, [v.hex() if isinstance(v, float) else v for v in table.column(f).to_pylist()])
            for f in table.column_names if f.startswith("aoai.cost.")]


class Pair:
    """The column-path pricer and the reference, on one store, fed the same batches."""

    def __init__(self, store, pricing):
        self.new, self.ref = IngestPricer(store, pricing), PerDocument(store, pricing)
        self.per_document = 0  # how often the column path handed a batch to price_documents

    def __call__(self, name: str, table: pa.Table, monkeypatch=None) -> tuple[pa.Table, dict]:
        if monkeypatch is not None:
            def counted(*args, **kwargs):
                self.per_document += 1
                return price_documents(*args, **kwargs)
            monkeypatch.setattr(pricing_module, "price_documents", counted)
        got, got_state = self.new(name, table)
        want, want_state = self.ref(name, table)
        assert got.schema.equals(want.schema, check_metadata=True)
        assert _bits(got) == _bits(want)  # floats to the bit (equals() takes -0.0 for 0.0)
        assert got.equals(want)
        assert list(got_state.items()) == list(want_state.items())
        assert list(self.new._catalogue._entries.items()) == list(self.ref._catalogue._entries.items())
        assert self.new._looked_up == self.ref._looked_up
        return got, got_state


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "s.duckdb") as s:
        s.pricer = None
        s.commit(state=Catalogue().to_state(from_arm(ARM, account="acct-a", region="eastus")))
        # Stored RequestResponse rows the pricer looks deployments up in (the fast path stores these).
        stored = [{"@timestamp": TIMES[3] + i, "id": str(uuid.UUID(int=i + 1)), "azure.open_ai.category": "RequestResponse",
                   "aoai.deployment": name, "azure.resource.name": "acct-a", "azure.resource.provider": OPENAI,
                   _P + "model_name": model, _P + "model_version": version, "azure.open_ai.location": "East US"}
                  for i, (name, model, version) in enumerate([("learned-rr", "gpt-4o-mini", "2024-07-18"),
                                                              ("mystery", "gpt-99-ultra", None),
                                                              ("learned-rr2", "gpt-35-turbo", "0125")])]
        s.commit(logs=stored)
        yield s


@pytest.mark.parametrize("config", list(PRICINGS), ids=list(PRICINGS))
def test_mixed_batches_match_the_per_document_path_bit_for_bit(store, config, monkeypatch):
    pair = Pair(store, load_pricing(section=PRICINGS[config]))
    rnd = random.Random(config)
    for size in (1, 50, 700, 2500, 300):
        table = docs_to_arrow("logs", _documents(rnd, size), 1)[0]
        out, _ = pair("logs", table, monkeypatch)
    assert pair.per_document == 0, "realistic batches take the column path"
    # The batches were really priced: priced, PTU, unpriced, assumed and regional rows are all there.
    assert pc.sum(pc.is_valid(out.column("aoai.cost.total"))).as_py() > 50
    skus = set(out.column("aoai.cost.sku").to_pylist())
    assert skus >= ({"GlobalProvisionedManaged", "ProvisionedManaged", "GlobalBatch", None} if PRICINGS[config] else
                    {"DataZoneStandard", "ProvisionedManaged", None})  # "nothing configured": ARM entries only
    assert pc.sum(pc.is_valid(out.column("aoai.cost.unpriced_reason"))).as_py() > 0


def test_one_key_many_token_counts(store, monkeypatch):
    """Rows that differ only in tokens: long-context and short prompts, cached above input, embeddings."""
    pair = Pair(store, load_pricing(section={"deployments": DEPLOYMENTS}))
    rnd = random.Random(17)
    docs = []
    for i in range(3000):
        tin = rnd.choice([None, 0, 1, 999, 272_000, 272_001, 300_000, 1_000_000, rnd.randrange(0, 2_000_000)])
        doc = {"@timestamp": TIMES[3] + i, "id": str(uuid.UUID(int=50_000 + i)), "azure.open_ai.category": "GatewayLogs",
               "aoai.deployment": rnd.choice(["long-54", "chat-global", "ptu-jp", "emb"]), "aoai.tokens.input": tin,
               "aoai.tokens.output": rnd.choice([None, 0, rnd.randrange(0, 50_000)]),
               "aoai.tokens.cached": rnd.choice([None, 0, rnd.randrange(0, 400_000)]),
               "aoai.tokens.total": rnd.choice([None, 0, rnd.randrange(0, 2_000_000)]),
               "azure.resource.provider": APIM, _P + "backend_url": "https://acct-a.openai.azure.com/openai/x"}
        if tin is None and doc["aoai.tokens.output"] is None:
            doc["aoai.tokens.output"] = 7
        docs.append({k: v for k, v in doc.items() if v is not None})
    out, _ = pair("logs", docs_to_arrow("logs", docs, 1)[0], monkeypatch)
    assert pair.per_document == 0
    assert "gpt-5.4" in set(out.column("aoai.cost.price_model").to_pylist())


def test_chunked_batches_and_batches_without_tokens(store, monkeypatch):
    pair = Pair(store, load_pricing(section={"deployments": DEPLOYMENTS}))
    rnd = random.Random(7)
    a = docs_to_arrow("logs", _documents(rnd, 400), 1)[0]
    b = docs_to_arrow("logs", _documents(rnd, 300), 1)[0]
    pair("logs", pa.concat_tables([a, b]), monkeypatch)  # two chunks per column
    no_tokens = [d for d in _documents(rnd, 300) if "aoai.tokens.input" not in d and "aoai.tokens.output" not in d]
    table = docs_to_arrow("logs", no_tokens, 1)[0]
    out, _ = pair("logs", table, monkeypatch)
    assert out is table  # nothing to price: the batch is stored as it came
    only = [d for d in _documents(rnd, 400) if "aoai.tokens.output" in d and d.get("azure.open_ai.category") == "GatewayLogs"]
    pair("logs", docs_to_arrow("logs", only, 1)[0], monkeypatch)  # every row priced: no scatter
    assert pair.per_document == 0


def test_null_and_out_of_range_timestamps(store, monkeypatch):
    pair = Pair(store, load_pricing(section={"deployments": DEPLOYMENTS}))
    table = docs_to_arrow("logs", _documents(random.Random(3), 200), 1)[0]
    i = table.column_names.index("@timestamp")
    nulls = pa.array([None if k % 3 == 0 else v for k, v in enumerate(table.column(i).to_pylist())], pa.timestamp("ms"))
    pair("logs", table.set_column(i, "@timestamp", nulls), monkeypatch)  # priced as of this month, as the engine does
    assert pair.per_document == 0
    beyond = pa.array([253_402_300_800_000 + k for k in range(table.num_rows)], pa.timestamp("ms"))  # year 10000
    out, state = pair("logs", table.set_column(i, "@timestamp", beyond), monkeypatch)
    assert out is not None and state == {}  # to_pylist fails: the batch is stored without cost, in both paths


def test_beyond_the_exact_integer_path_falls_back_to_price_documents(store, monkeypatch):
    pair = Pair(store, load_pricing(section={"deployments": DEPLOYMENTS}))
    docs = _documents(random.Random(5), 300)
    for d in docs[::7]:
        if "aoai.tokens.input" in d:
            d["aoai.tokens.input"] = 4_000_000_000_000_000  # × a rate's digits: beyond 2**53
    pair("logs", docs_to_arrow("logs", docs, 1)[0], monkeypatch)
    assert pair.per_document == 1
    odd = load_pricing(section={"deployments": DEPLOYMENTS,  # rates with 20+ digits after the point
                                "prices": [{"model": "gpt-4o", "input_per_1m": 1 / 3, "output_per_1m": 2 / 3}]})
    pair = Pair(store, odd)
    pair("logs", docs_to_arrow("logs", _documents(random.Random(6), 500), 1)[0], monkeypatch)


def test_tables_without_cost_or_token_columns_are_left_alone(store, monkeypatch):
    pair = Pair(store, load_pricing(section={"deployments": DEPLOYMENTS}))
    table = docs_to_arrow("logs", _documents(random.Random(9), 100), 1)[0]
    out, state = pair("logs", table.drop_columns(["aoai.cost.region"]), monkeypatch)
    assert "aoai.cost.region" not in out.column_names and state == {}
    out, state = pair("logs", table.drop_columns(["aoai.tokens.output"]), monkeypatch)
    assert state == {}


def test_learning_from_metrics_and_request_response_rows(store, monkeypatch):
    pair = Pair(store, load_pricing(section={"deployments": DEPLOYMENTS}))
    rid = "/SUBSCRIPTIONS/0A1B2C3D-0000-0000-0000-000000000000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.COGNITIVESERVICES/ACCOUNTS/{}"
    rnd = random.Random(11)
    metrics = []
    for i in range(400):  # per deployment: rows without model, then with, in a random order
        dims = {"ModelDeploymentName": rnd.choice(["m-1", "m-2", "M-1", "chat-eu", ""])}
        if rnd.random() < 0.5:
            dims["ModelName"] = rnd.choice(["gpt-4o", "gpt-4o-mini"])
        if rnd.random() < 0.5:
            dims["ModelVersion"] = rnd.choice(["2024-11-20", "2024-07-18"])
        if rnd.random() < 0.5:
            dims["Region"] = rnd.choice(["East US", "swedencentral"])
        metrics.append(metric_document(resource_id=rid.format(rnd.choice(["ACCT-A", "acct-b"])),
                                       metric_name="ProcessedPromptTokens", timestamp_ms=TIMES[3] + i, timegrain="PT1M",
                                       dimensions=dims, values={"Total": 5}, source="azure_monitor",
                                       region=rnd.choice([None, "eastus"])))
    for chunk in (metrics[:1], metrics[1:150], metrics[150:]):
        pair("metrics", docs_to_arrow("metrics", chunk, 1)[0])
    assert pair.new._catalogue.resolve("m-1") is not None
    # RequestResponse rows whose fields change along the batch: the last row of each deployment wins.
    rr = []
    for i in range(600):
        rr.append({"@timestamp": TIMES[3] + i, "id": str(uuid.UUID(int=10_000 + i)), "azure.open_ai.category": "RequestResponse",
                   "aoai.deployment": rnd.choice(["rr-a", "rr-b", "RR-A", "rr-c"]),
                   "azure.resource.provider": rnd.choice([OPENAI, APIM]), "azure.resource.name": rnd.choice(["acct-a", "Acct-B"]),
                   _P + "model_name": rnd.choice(["gpt-4o", "gpt-4o-mini"]),
                   _P + "model_version": rnd.choice(["2024-11-20", "2024-07-18", ""]),
                   "azure.open_ai.location": rnd.choice(["East US", "swedencentral", None])})
    for chunk in (rr[:200], rr[200:], rr[::-1]):
        docs = [{k: v for k, v in d.items() if v is not None} for d in chunk]
        pair("logs", docs_to_arrow("logs", docs, 1)[0], monkeypatch)
    learned = {(e.account, e.name.lower()) for e in pair.new._catalogue.entries() if e.source == "logs"}
    assert {("acct-a", "rr-a"), ("acct-b", "rr-b"), (None, "rr-c")} <= learned  # APIM rows: no account


def test_column_learning_equals_learn_on_every_row():
    rnd = random.Random(13)
    rows = [{"aoai.deployment": rnd.choice(["a", "A", "b", ""]), _P + "model_name": rnd.choice(["m1", "m2", None]),
             _P + "model_version": rnd.choice(["1", None]), "azure.open_ai.location": rnd.choice(["East US", "", None]),
             _P + "region": rnd.choice(["westeurope", None]), "azure.resource.name": rnd.choice(["x", "Y", None]),
             "azure.resource.provider": rnd.choice([OPENAI, APIM, None])} for _ in range(3000)]
    table = pa.Table.from_pylist(rows)
    assert columns.learn_logs(table, _LEARN_FIELDS, _P + "model_name") == learn(_rows(table, _LEARN_FIELDS, _P + "model_name"))
