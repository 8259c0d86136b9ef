"""Cost: every Azure OpenAI request priced by model, version, SKU and region; PTU against pay-as-you-go.

The ingest hook: `Store` calls `attach(store)` when opened for writing, and every Arrow insert of a
store transaction runs `store.pricer(name, arrow_table)` first, so every input (files, Event Hubs,
archives, demo) stores log documents with aoai.cost.* already set. The pricer also learns deployments from the batch and returns
state entries that the same commit stores. See docs/cost.md.
"""

from __future__ import annotations

import logging
import threading
import time

import pyarrow as pa
import pyarrow.compute as pc

from . import columns
from .catalogue import STATE_PREFIX, Catalogue, Deployment, from_arm, learn, learn_from_store
from .engine import COST_FIELDS, INPUT_FIELDS, TOKEN_SOURCES, price_documents
from .prices import PriceBook, Unpriced
from .settings import PricingConfig, load_section, parse

__all__ = ["Catalogue", "Deployment", "PriceBook", "Pricing", "Unpriced", "COST_FIELDS", "TOKEN_SOURCES", "attach",
           "configure", "from_arm", "load_pricing", "price_documents", "price_request", "record_arm_deployments"]

log = logging.getLogger(__name__)
_BOOKS: dict[str, PriceBook] = {}
_BOOKS_LOCK = threading.Lock()


class Pricing:
    """A price book, the configured catalogue entries and the default SKU: what pricing needs besides the store."""

    def __init__(self, config: PricingConfig | None = None):
        self.config = config or PricingConfig()
        key = repr(self.config.prices)
        with _BOOKS_LOCK:  # parsing the snapshot takes ~0.1 s: share books between stores of one process
            book = _BOOKS.get(key)
            if book is None:
                book = _BOOKS[key] = PriceBook(self.config.prices)
        self.prices = book

    @property
    def default_sku(self) -> str | None:
        return self.config.default_sku

    def catalogue(self, store=None) -> Catalogue:
        """Config entries plus ARM and learned entries kept in the store's state."""
        cat = Catalogue(self.config.deployments)
        if store is not None:
            cat.load_state(store.state_items(STATE_PREFIX))
            for entry in learn_from_store(store.cursor()):
                cat.add(entry)
        return cat


def load_pricing(config_path: str | None = None, section: dict | None = None) -> Pricing:
    """Pricing from a [pricing] table, or from the config file at config_path / $AOAI_MONITOR_CONFIG."""
    return Pricing(parse(section if section is not None else load_section(config_path)))


class IngestPricer:
    """Callable set as `store.pricer`: learns deployments, prices log documents, returns state to keep."""

    def __init__(self, store, pricing: Pricing | None):
        self.store = store
        self._pricing = pricing
        self._catalogue: Catalogue | None = None
        self._looked_up: set[str] = set()
        self._resolved: dict = {}  # columns.price's resolutions; valid while the catalogue does not change
        self._lock = threading.Lock()

    def __call__(self, name: str, table: pa.Table) -> tuple[pa.Table, dict]:
        """Price the rows of a logs Arrow table that carry tokens; learn deployments from logs and metrics."""
        if name not in ("logs", "metrics"):
            return table, {}
        try:
            with self._lock:
                if self._pricing is None:
                    self._pricing = load_pricing()
                if self._catalogue is None:
                    self._catalogue = self._pricing.catalogue(self.store)
                    self._resolved.clear()
                if name == "metrics":
                    learned = _columns(columns.learn_metrics, table, _METRIC_FIELDS, "azure.dimensions.model_deployment_name")
                    if learned is None:
                        learned = learn((), _rows(table, _METRIC_FIELDS, "azure.dimensions.model_deployment_name"))
                    changed = [e for e in learned if self._catalogue.add(e)]
                    if changed:
                        self._resolved.clear()
                    return table, self._catalogue.to_state(changed)
                # Per distinct key, not per row (columns.py): the same results as the per-document path
                # (`_rows` dicts through price_documents), which stays for batches the column path cannot take.
                learned = _columns(columns.learn_logs, table, _LEARN_FIELDS, _P + "model_name")
                if learned is None:
                    learned = learn(_rows(table, _LEARN_FIELDS, _P + "model_name"))
                mask = pc.or_(pc.is_valid(table.column("aoai.tokens.input")), pc.is_valid(table.column("aoai.tokens.output")))
                sub = _columns(columns.inputs, table, mask, INPUT_FIELDS)
                if sub is None:
                    docs = _rows(table, INPUT_FIELDS, mask=mask)
                    names, count = {d.get("aoai.deployment") for d in docs}, len(docs)
                else:
                    docs, names, count = None, columns.deployments(sub), sub.num_rows
                # RequestResponse rows on the fast path (not priced: no tokens) never pass here: look the deployments
                # this batch names up in the stored logs (once per deployment and process). store.con is the
                # open transaction's connection (the caller holds the store lock), so it sees this chunk's rows.
                unseen = sorted(names - self._looked_up - {None})
                self._looked_up.update(unseen)
                learned += learn_from_store(self.store.con, unseen) if unseen else []
                changed = [e for e in learned if self._catalogue.add(e)]
                if changed:
                    self._resolved.clear()
                if not count:
                    return table, self._catalogue.to_state(changed)
                prices, default_sku = self._pricing.prices, self._pricing.default_sku
                if sub is not None:
                    priced = _columns(columns.price, table, mask, sub, self._catalogue, prices, default_sku,
                                      self._resolved)
                    if priced is not None:
                        return priced, self._catalogue.to_state(changed)
                    docs = _rows(table, INPUT_FIELDS, mask=mask)
                price_documents(docs, self._catalogue, prices, default_sku)
                return _with_costs(table, mask, docs), self._catalogue.to_state(changed)
        except Exception:  # cost must never stop ingestion; `aoai-monitor cost` counts what was left unpriced
            log.exception("pricing failed for a batch; its documents are stored without cost "
                          "(fix the [pricing] config, then `aoai-monitor reprice`)")
            return table, {}

    def forget_catalogue(self) -> None:
        """Re-read the catalogue from the store on the next batch (after ARM deployments were recorded)."""
        with self._lock:
            self._catalogue = None
            self._looked_up.clear()
            self._resolved.clear()


_P = "azure.open_ai.properties."
_LEARN_FIELDS = ("aoai.deployment", _P + "model_name", _P + "model_version", "azure.open_ai.location", _P + "region",
                 "azure.resource.name", "azure.resource.provider")
_METRIC_FIELDS = ("azure.dimensions.model_deployment_name", "azure.dimensions.model_name",
                  "azure.dimensions.model_version", "azure.dimensions.region", "cloud.region", "azure.resource.name")


def _columns(fn, *args):
    """A column-path step (columns.py); None (take the per-document path) when it returns None or fails."""
    try:
        return fn(*args)
    except Exception:  # the per-document path then gives the result (or fails the batch the usual way)
        log.debug("column pricing fell back to per-document pricing", exc_info=True)
        return None


def _rows(table: pa.Table, names, valid: str | None = None, mask=None) -> list[dict]:
    """The named columns of the rows where `valid` is set (or `mask` holds), as dicts without nulls."""
    if mask is None:
        if valid not in table.column_names:
            return []
        mask = pc.is_valid(table.column(valid))
    sub = table.select([n for n in names if n in table.column_names]).filter(mask)
    return [{k: v for k, v in row.items() if v is not None} for row in sub.to_pylist()]


def _with_costs(table: pa.Table, mask, docs: list[dict]) -> pa.Table:
    """The table with the aoai.cost.* columns of the masked rows replaced by the priced documents' values."""
    positions = [i for i, m in enumerate(mask.to_pylist()) if m]
    for f in COST_FIELDS:
        i = table.column_names.index(f)
        values = [None] * table.num_rows
        for pos, doc in zip(positions, docs):
            values[pos] = doc.get(f)
        table = table.set_column(i, f, pa.array(values, table.schema.field(f).type))
    return table


_APP_PRICING: list = []  # [(Pricing, Catalogue)] of this process, for price_request
_APP_PRICING_LOCK = threading.Lock()


def price_request(*, deployment: str | None, model: str | None, input_tokens: int, output_tokens: int,
                  cached_tokens: int = 0, operation: str | None = None) -> float | None:
    """USD of one request an instrumented app made: the instrumentation's pricer (aoai_monitor.instrument).

    The rules and prices the service applies to logs: [pricing] of $AOAI_MONITOR_CONFIG when set (deployments,
    default SKU, overrides), else the bundled prices with GlobalStandard assumed for a deployment of unknown
    SKU. The app has no store, so only configured deployments are known beyond that. None when the request
    cannot be priced (unknown model, a SKU without token prices): the span then has no aoai.cost.
    `operation` is accepted for the pricer interface; tokens are priced by model whatever the operation.
    """
    with _APP_PRICING_LOCK:
        if not _APP_PRICING:
            pricing = load_pricing()
            _APP_PRICING.append((pricing, pricing.catalogue()))
        pricing, catalogue = _APP_PRICING[0]
    doc = {"@timestamp": int(time.time() * 1000), "aoai.deployment": deployment, "aoai.model": model,
           "aoai.tokens.input": input_tokens, "aoai.tokens.output": output_tokens, "aoai.tokens.cached": cached_tokens}
    price_documents([doc], catalogue, pricing.prices, pricing.default_sku)
    return doc.get("aoai.cost.total")


def attach(store, pricing: Pricing | None = None) -> None:
    """Make `store.commit` price log documents (pricing: None = load [pricing] from $AOAI_MONITOR_CONFIG lazily)."""
    store.pricer = IngestPricer(store, pricing)


def configure(store, section: dict) -> None:
    """For the service: price with the [pricing] table of its config file."""
    attach(store, load_pricing(section=section))


def record_arm_deployments(store, deployments_json: dict, account: str, region: str | None = None) -> list[Deployment]:
    """Keep an ARM deployments list (GET …/accounts/{account}/deployments) in the catalogue.

    For the Azure Monitor input: call it after listing an account's deployments; later requests to those
    deployments are priced with their real SKU and PTU count.
    """
    entries = from_arm(deployments_json, account, region)
    store.commit(state=Catalogue().to_state(entries))
    pricer = getattr(store, "pricer", None)
    if isinstance(pricer, IngestPricer):
        pricer.forget_catalogue()
    return entries
