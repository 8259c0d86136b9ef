"""Recompute aoai.cost.* in place for a time range, after a price change or a catalogue fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pyarrow as pa

from . import Pricing
from .engine import COST_FIELDS, INPUT_FIELDS, price_documents

_NUMERIC = {"aoai.cost.input", "aoai.cost.cached_input", "aoai.cost.output", "aoai.cost.total", "aoai.cost.payg"}


@dataclass
class RepriceResult:
    documents: int = 0
    priced: int = 0
    unpriced: int = 0


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def reprice(store, pricing: Pricing, since_ms: int, until_ms: int, batch: int = 50_000,
            on_progress: Callable[[int, int], None] | None = None) -> RepriceResult:
    """Re-price every log document with tokens in [since, until); on_progress(done, total) after each batch."""
    catalogue = pricing.catalogue(store)
    cur = store.cursor()
    where = ('WHERE "@timestamp" >= epoch_ms(?::BIGINT) AND "@timestamp" < epoch_ms(?::BIGINT) '
             'AND ("aoai.tokens.input" IS NOT NULL OR "aoai.tokens.output" IS NOT NULL)')
    total = cur.execute(f"SELECT count(*) FROM logs {where}", [since_ms, until_ms]).fetchone()[0]
    select = ", ".join('epoch_ms("@timestamp")' if f == "@timestamp" else _q(f) for f in INPUT_FIELDS)
    reader = cur.execute(f"SELECT CAST(id AS VARCHAR), {select} FROM logs {where} ORDER BY \"@timestamp\"",
                         [since_ms, until_ms])
    result = RepriceResult()
    updates = []
    while rows := reader.fetchmany(batch):
        docs = []
        for row in rows:
            doc = {k: v for k, v in zip(INPUT_FIELDS, row[1:]) if v is not None}
            doc["id"] = row[0]
            docs.append(doc)
        price_documents(docs, catalogue, pricing.prices, pricing.default_sku)
        updates.append(pa.table({"id": [d["id"] for d in docs], **{
            f: pa.array([d.get(f) for d in docs], pa.float64() if f in _NUMERIC else pa.string()) for f in COST_FIELDS}}))
        result.documents += len(docs)
        result.priced += sum(1 for d in docs if d.get("aoai.cost.total") is not None)
        if on_progress:
            on_progress(result.documents, total)
    result.unpriced = result.documents - result.priced
    if updates:
        _write(store, pa.concat_tables(updates))
    return result


def _write(store, table: pa.Table) -> None:
    """One transaction: either every document gets its new cost or none does."""
    con = store.cursor()
    sets = ", ".join(f"{_q(f)} = b.{_q(f)}" for f in COST_FIELDS)
    con.register("_reprice", table)
    try:
        con.execute("BEGIN")
        con.execute(f"UPDATE logs SET {sets} FROM _reprice b WHERE logs.id = CAST(b.id AS UUID)")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("_reprice")
