"""Cost at ingest: µs per priced row, the per-document path against the column path, in the same run.

    python bench/bench_pricing.py [--rows 10000] [--repeat 7]

The batch is a realistic logs Arrow table: APIM GatewayLogs records from bench/gen_records.py, normalized
by aoai_monitor.normalize and made into Arrow by docs_to_arrow, as the store's insert gets it. Every row
carries tokens, so every row is priced.

(a) per-document: what IngestPricer did before the column path, i.e. learn from to_pylist dicts, price each
    dict with engine.price_documents, then rebuild the cost columns value by value;
(b) column path: IngestPricer.__call__ as it is now.

Both see the same table and a catalogue that has already learned (a warm pricer, as in a long ingest).
Each round times both; the report gives medians and the median of the per-round ratios (the machine is
noisy). Both outputs are checked to be identical before timing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from aoai_monitor.normalize import normalize_payload
from aoai_monitor.pricing import IngestPricer, load_pricing
from aoai_monitor.store import Store
from aoai_monitor.store.duckdb_store import docs_to_arrow
from bench.gen_records import records
from tests.test_pricing_columns import PerDocument  # the pricer as it was: one dict per row (the reference)


def gateway_table(rows: int) -> pa.Table:
    """`rows` normalized GatewayLogs documents (10 % of gen_records' mix) as one Arrow batch."""
    lines, seed = [], 1
    while len(lines) < rows:
        for rec in records(rows * 12, seed=seed):
            if rec.get("category") == "GatewayLogs":
                lines.append(orjson.dumps(rec))
                if len(lines) == rows:
                    break
        seed += 1
    out = normalize_payload(b"\n".join(lines), "bench")
    assert len(out.logs) == rows and not out.rejects, (len(out.logs), out.rejects[:1])
    return docs_to_arrow("logs", out.logs, 0)[0]


def _bits(table: pa.Table) -> list:
    return [[v.hex() if isinstance(v, float) else v for v in table.column(f).to_pylist()]
            for f in table.column_names if f.startswith("aoai.cost.")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000, 10_000], help="batch sizes")
    ap.add_argument("--repeat", type=int, default=7, help="rounds per batch size (medians are reported)")
    args = ap.parse_args()
    pricing = load_pricing(section={})  # nothing configured: GlobalStandard assumed, as a fresh install prices
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as store:
        old, new = PerDocument(store, pricing), IngestPricer(store, pricing)
        print(f"{'rows':>7} {'per-document µs/row':>20} {'column path µs/row':>19} {'ratio':>7}")
        for rows in args.rows:
            table = gateway_table(rows)
            a, b = old("logs", table)[0], new("logs", table)[0]  # warm both (catalogue, month tables)
            assert _bits(a) == _bits(b), "the column path must give the per-document path's values"
            priced = sum(1 for v in a.column("aoai.cost.total").to_pylist() if v is not None)
            assert priced == rows, f"{priced} of {rows} rows priced"
            t_old, t_new, ratios = [], [], []
            for _ in range(args.repeat):
                start = time.perf_counter()
                old("logs", table)
                mid = time.perf_counter()
                new("logs", table)
                end = time.perf_counter()
                t_old.append((mid - start) / rows * 1e6)
                t_new.append((end - mid) / rows * 1e6)
                ratios.append((mid - start) / (end - mid))
            print(f"{rows:>7} {statistics.median(t_old):>20.2f} {statistics.median(t_new):>19.2f} "
                  f"{statistics.median(ratios):>6.1f}x")


if __name__ == "__main__":
    main()
