"""The store's own ceiling: how fast DuckDB takes log rows that are already normalized, against the orjson floor.

    python bench/bench_store_ceiling.py --records 300000

No ingest design can store records faster than the store takes finished rows, so this bounds what
`aoai-monitor ingest` can reach with a given table layout. The records (bench/gen_records.py's mix) are
ingested once into a scratch store, untimed. Their rows are then copied into fresh stores, timed from
BEGIN to the end of a CHECKPOINT (rows compressed into the file), in three layouts:

  (1) the `logs` table as it is, every column (event.original included);
  (2) the same table without event.original (the raw record text Elastic's integration keeps);
  (3) a narrow table holding only the columns these rows fill, event.original included.

Two more runs size a design where DuckDB also parses: (4) the raw lines read by DuckDB itself, parsed with
from_json and put through an approximation of the fast path's rules in SQL (not the product's exact rules:
no admission checks, no gateway records, which it skips), on 2 threads within 240 MB, into the real table;
(5) the same with DuckDB's own NDJSON reader (read_json with the columns named), which is faster but cannot
keep each record's text, so event.original stays empty: an upper bound for any all-SQL design.

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
from aoai_monitor.store.duckdb_store import _RAW_TEXT_COLUMNS, CHECKPOINT_THRESHOLD, _open_file, _q  # noqa: E402
from bench.bench_ingest import floor, records_file  # noqa: E402


def copy_rate(source: Path, target: Path, columns: list[str], narrow: bool) -> float:
    """Rows per second copying `columns` of the source store's logs into a new store's logs table (the store's
    own DDL, or with `narrow` a table of those columns alone, typed and compressed the same way)."""
    Store(target).close()  # the real DDL, settings as the store opens it
    con = _open_file(str(target), read_only=False)  # the store's row group size, as its writers open it
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


_TOP_JSON = ('{"category":"VARCHAR","resourceId":"VARCHAR","time":"VARCHAR","operationName":"VARCHAR",'
             '"durationMs":"DOUBLE","properties":"VARCHAR","callerIpAddress":"VARCHAR","correlationId":"VARCHAR",'
             '"location":"VARCHAR","resultSignature":"VARCHAR","event":"VARCHAR","Tenant":"VARCHAR"}')
_PROPS_JSON = ('{"apiName":"VARCHAR","requestTime":"BIGINT","requestLength":"DOUBLE","responseTime":"BIGINT",'
               '"responseLength":"DOUBLE","objectId":"VARCHAR","streamType":"VARCHAR","modelDeploymentName":"VARCHAR",'
               '"modelName":"VARCHAR","modelVersion":"VARCHAR"}')
_PARSE_IN_SQL = """
INSERT INTO logs BY NAME
WITH r AS (SELECT line, from_json(line, '{top}') AS t
           FROM read_csv('{src}', columns={{'line': 'VARCHAR'}}, delim='\x1e', quote='', escape='', header=false,
                         auto_detect=false)),
s AS (SELECT line, t, from_json(t.properties, '{props}') AS p, lower(t.resourceId) AS rid
      FROM r WHERE t.category IN ('RequestResponse', 'Audit'))
SELECT md5(concat_ws(chr(31), t.category, t.resourceId, t.time, t.operationName, t.correlationId, t.resultSignature,
                     CAST(CAST(t.durationMs AS BIGINT) AS VARCHAR), '', CAST(p.requestTime AS VARCHAR),
                     CAST(p.responseTime AS VARCHAR), p.objectId))::UUID AS id,
  strptime(left(t.time, 23), '%Y-%m-%dT%H:%M:%S.%g') AS "@timestamp",
  t.category AS "azure.open_ai.category", t.operationName AS "azure.open_ai.operation_name",
  t.Tenant AS "azure.open_ai.tenant", t.callerIpAddress AS "azure.open_ai.caller_ip_address",
  t.correlationId AS "azure.open_ai.correlation_id", t.location AS "azure.open_ai.location",
  t.resultSignature AS "azure.open_ai.result_signature", t.event AS "azure.open_ai.event",
  p.apiName AS "azure.open_ai.properties.api_name", p.requestTime AS "azure.open_ai.properties.request_time",
  p.requestLength AS "azure.open_ai.properties.request_length", p.responseTime AS "azure.open_ai.properties.response_time",
  p.responseLength AS "azure.open_ai.properties.response_length",
  nullif(p.objectId, '') AS "azure.open_ai.properties.object_id", p.streamType AS "azure.open_ai.properties.stream_type",
  p.modelDeploymentName AS "azure.open_ai.properties.model_deployment_name",
  p.modelName AS "azure.open_ai.properties.model_name", p.modelVersion AS "azure.open_ai.properties.model_version",
  rid AS "azure.resource.id", split_part(rid, '/', 3) AS "azure.subscription_id", split_part(rid, '/', 3) AS "cloud.account.id",
  split_part(rid, '/', 5) AS "azure.resource.group",
  split_part(rid, '/', 7) || '/' || split_part(rid, '/', 8) AS "azure.resource.provider",
  split_part(rid, '/', 9) AS "azure.resource.name", line AS "event.original",
  t.operationName AS "aoai.operation", p.modelDeploymentName AS "aoai.deployment", p.modelName AS "aoai.model",
  p.modelVersion AS "aoai.model_version", CAST(round(t.durationMs * 1e6) AS BIGINT) AS "event.duration",
  t.durationMs AS "aoai.duration_ms", TRY_CAST(trim(t.resultSignature) AS BIGINT) AS "aoai.status_code",
  CASE WHEN TRY_CAST(trim(t.resultSignature) AS BIGINT) < 400 THEN 'success' ELSE 'failure' END AS "event.outcome",
  CASE WHEN contains(p.apiName, 'version') THEN regexp_extract(p.apiName, '([^ ]*)$', 1) END AS "aoai.api_version",
  lower(p.streamType) = 'streaming' AS "aoai.stream", 'azure' AS "cloud.provider", 'logs' AS "data_stream.type",
  'azure_openai.logs' AS "data_stream.dataset", now()::TIMESTAMP AS "event.ingested", 'bench' AS "aoai.source"
FROM s
"""


# (5): the records as read_json's columns, `properties` a string (RequestResponse) or an object (Audit).
_READ_JSON = """r AS (SELECT NULL::VARCHAR AS line, {{'category': category, 'resourceId': resourceId, 'time': time,
  'operationName': operationName, 'durationMs': durationMs,
  'properties': CASE WHEN json_type(properties) = 'VARCHAR' THEN properties->>'$' ELSE properties::VARCHAR END,
  'callerIpAddress': callerIpAddress, 'correlationId': correlationId, 'location': location,
  'resultSignature': resultSignature, 'event': event, 'Tenant': Tenant}} AS t
FROM read_json('{src}', format = 'newline_delimited', columns = {{'category': 'VARCHAR', 'resourceId': 'VARCHAR',
  'time': 'VARCHAR', 'operationName': 'VARCHAR', 'durationMs': 'DOUBLE', 'properties': 'JSON',
  'callerIpAddress': 'VARCHAR', 'correlationId': 'VARCHAR', 'location': 'VARCHAR', 'resultSignature': 'VARCHAR',
  'event': 'VARCHAR', 'Tenant': 'VARCHAR'}})),
"""


def parse_in_sql_rate(data: Path, target: Path, lines: int, read_json: bool = False) -> float:
    """Records per second of (4), or with `read_json` of (5), over all the file's lines: DuckDB reads, parses and
    stores its RequestResponse/Audit records."""
    Store(target).close()
    con = _open_file(str(target), read_only=False)
    con.execute("SET threads = 2")
    con.execute("SET memory_limit = '240MB'")
    con.execute("SET preserve_insertion_order = false")
    start = time.perf_counter()
    src = str(data).replace("'", "''")
    sql = _PARSE_IN_SQL.format(top=_TOP_JSON, props=_PROPS_JSON, src=src)
    if read_json:
        sql = sql[:sql.index("WITH r AS")] + "WITH " + _READ_JSON.format(src=src) + sql[sql.index("s AS ("):]
    con.execute(sql)
    con.execute("CHECKPOINT")
    rate = lines / (time.perf_counter() - start)
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
    sql_runs = {"(4) DuckDB parsing the lines itself, 2 threads, 240 MB": False,
                "(5) the same with read_json, no event.original": True}
    for sql_name, read_json in sql_runs.items():
        rates[sql_name] = []
        for run in range(2):
            print(f"[{run + 1}/2] {sql_name} …", file=sys.stderr)
            rates[sql_name].append(parse_in_sql_rate(data, work / "sql.duckdb", args.records, read_json))
            for p in work.glob("sql.duckdb*"):
                os.remove(p)
    after = floor(data)
    fl = (before + after) / 2
    print(f"records: {args.records:,}, cores: {os.cpu_count()}")
    print(f"orjson floor: {fl:,.0f} records/s (before {before:,.0f}, after {after:,.0f})")
    for name, runs in rates.items():
        best = max(runs)
        print(f"{name:58s} {best:>10,.0f} records/s = {best / fl:6.1%} of floor  (runs: {', '.join(f'{r:,.0f}' for r in runs)})")


if __name__ == "__main__":
    main()
