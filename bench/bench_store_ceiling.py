"""The store's own ceiling: how fast DuckDB takes log rows that are already normalized, against the orjson floor.

    python bench/bench_store_ceiling.py --records 300000

No ingest design can store records faster than the store takes finished rows, so this bounds what
`aoai-monitor ingest` can reach with a given table layout. The records (bench/gen_records.py's mix) are
ingested once into a scratch store, untimed. Their rows are then copied into fresh stores, timed from
BEGIN to the end of a CHECKPOINT (rows compressed into the file), in three layouts:

  (1) the `logs` table as it is, every column (event.original included);
  (2) the same table without event.original (the raw record text Elastic's integration keeps);
  (3) a narrow table holding only the columns these rows fill, event.original included.

Each copy runs twice, and the orjson floor is timed before and after; the machine's speed drifts, so
compare the percentages, not the rates.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from aoai_monitor.store import Store  # noqa: E402
from aoai_monitor.store.duckdb_store import _RAW_TEXT_COLUMNS, CHECKPOINT_THRESHOLD, _q  # noqa: E402
from bench.bench_ingest import floor, records_file  # noqa: E402


def copy_rate(source: Path, target: Path, columns: list[str], narrow: bool) -> float:
    """Rows per second copying `columns` of the source store's logs into a new store's logs table (the store's
    own DDL, or with `narrow` a table of those columns alone, typed and compressed the same way)."""
    Store(target).close()  # the real DDL, settings as the store opens it
    con = duckdb.connect(str(target))
    con.execute("SET preserve_insertion_order=false")
    con.execute("SET checkpoint_threshold = ?", [CHECKPOINT_THRESHOLD])
    con.execute(f"ATTACH '{source}' AS src (READ_ONLY)")
    if narrow:
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_catalog = 'src' AND table_name = 'logs'").fetchall())
        con.execute("DROP TABLE logs")
        con.execute("CREATE TABLE logs (" + ", ".join(
            f"{_q(c)} {types[c]}" + (" USING COMPRESSION zstd" if c in _RAW_TEXT_COLUMNS else "") for c in columns) + ")")
    rows = con.execute("SELECT count(*) FROM src.logs").fetchone()[0]
    start = time.perf_counter()
    con.execute("BEGIN")
    con.execute(f"INSERT INTO logs BY NAME SELECT {', '.join(map(_q, columns))} FROM src.logs")
    con.execute("COMMIT")
    con.execute("CHECKPOINT")
    rate = rows / (time.perf_counter() - start)
    con.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=300_000, help="records to generate (default 300k)")
    ap.add_argument("--keep", help="directory to keep the generated file and stores in")
    args = ap.parse_args()
    work, data = records_file(args.keep, args.records, "aoai-ceiling-")
    source = work / "normalized.duckdb"
    print("normalizing them once into a scratch store (untimed) …", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "aoai_monitor.cli", "ingest", str(data), "--store", str(source), "--quiet"],
                   check=True)
    with duckdb.connect(str(source), read_only=True) as con:
        all_columns = [r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                                 "WHERE table_name = 'logs' ORDER BY ordinal_position").fetchall()]
        filled = [c for c in all_columns
                  if con.execute(f"SELECT count({_q(c)}) > 0 FROM logs").fetchone()[0]]
    layouts = {
        f"(1) logs as it is, {len(all_columns)} columns": (all_columns, False),
        "(2) logs without event.original": ([c for c in all_columns if c != "event.original"], False),
        f"(3) narrow table, the {len(filled)} columns these rows fill": (filled, True),
    }
    before = floor(data)
    rates: dict[str, list[float]] = {name: [] for name in layouts}
    for run in range(2):
        for i, (name, (columns, narrow)) in enumerate(layouts.items()):
            print(f"[{run + 1}/2] {name} …", file=sys.stderr)
            rates[name].append(copy_rate(source, work / f"copy-{i}.duckdb", columns, narrow))
            for p in work.glob(f"copy-{i}.duckdb*"):
                os.remove(p)
    after = floor(data)
    fl = (before + after) / 2
    print(f"records: {args.records:,}, cores: {os.cpu_count()}")
    print(f"orjson floor: {fl:,.0f} records/s (before {before:,.0f}, after {after:,.0f})")
    for name, runs in rates.items():
        best = max(runs)
        print(f"{name:58s} {best:>10,.0f} rows/s = {best / fl:6.1%} of floor  (runs: {', '.join(f'{r:,.0f}' for r in runs)})")


if __name__ == "__main__":
    main()
