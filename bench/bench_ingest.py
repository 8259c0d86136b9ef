"""Ingest throughput, as ratios against baselines measured in the same run (the machine is noisy).

    python bench/bench_ingest.py --records 1000000

(a) floor: orjson.loads over the same lines (no normalization, no storage);
(b) baseline: the straightforward path — per-record Python normalize, then batched row insert;
(c) ours: `aoai-monitor ingest` as a separate process (whole process: start-up, reading, the fast path,
    Python fallback, commit), with its peak RSS, alone and with its worker processes; with --files N, of the
    same records split into N files in a storage-archive layout (insights-logs-…/y=/m=/d=/h=/m=00/PT1H.json).
(a) and (b) are timed before and after (c); the ratios divide by their means.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from aoai_monitor.spool import PREFIX, SHARED_MEMORY  # noqa: E402
from bench.gen_records import write  # noqa: E402


def floor(path: Path) -> float:
    start = time.perf_counter()
    n = 0
    with open(path, "rb") as f:
        for line in f:
            orjson.loads(line)
            n += 1
    return n / (time.perf_counter() - start)


def baseline(path: Path, store_path: Path, limit: int) -> float:
    """Per-record Python normalize + insert, the way a first implementation would do it."""
    from aoai_monitor.normalize import Normalized, decode_line, normalize_decoded
    from aoai_monitor.store import Store

    store = Store(store_path)
    start = time.perf_counter()
    n = 0
    batch = Normalized()
    with open(path, "rb") as f:
        for line in f:
            normalize_decoded(decode_line(line), "bench", batch)
            n += 1
            if batch.records >= 20_000:
                store.commit(batch.logs, batch.metrics, batch.rejects)
                batch = Normalized()
            if n >= limit:
                break
    store.commit(batch.logs, batch.metrics, batch.rejects)
    elapsed = time.perf_counter() - start
    store.close()
    return n / elapsed


def _tree(pid: int) -> list[int]:
    """pid and its descendants (the ingest's worker processes), from /proc."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for children in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in children.read_text().split()]
            except OSError:
                pass
    return out


def _proc_mb(pid: int, file: str, field: str) -> float:
    """A kB figure of /proc/<pid>/<file> in MB (0 once the process is gone).

    The ingest's own RSS comes from `status` (VmRSS), cheap to read every 20 ms; the PSS of it and its forked
    workers, which adds up to what they use together (their RSS would count shared pages twice), comes from
    `smaps_rollup` (Pss), which walks the page tables under the process's memory lock: read every 20 ms, it
    slowed the ingest by a fifth.
    """
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _spool_mb(pid: int) -> float:
    """MB of worker results waiting in the ingest's /dev/shm spool (aoai_monitor.spool): memory that is in no
    process's RSS until the ingest maps it."""
    total = 0
    for f in SHARED_MEMORY.glob(f"{PREFIX}{pid}-*/*"):
        try:
            total += f.stat().st_size
        except OSError:
            pass  # consumed meanwhile
    return total / (1 << 20)


def ours(path: Path, store_path: Path, records: int) -> tuple[float, float, float, float]:
    """Rate, peak RSS of the ingest process (sampled every 20 ms), peak memory of it with its workers and its
    spool (sum of PSS plus the spool's files, sampled every 0.5 s: conservative, a mapped file counts twice),
    and the spool's peak (every 20 ms). (getrusage's RUSAGE_CHILDREN is no use here: a child's maxrss counts this process's
    pages it shared between fork and exec.)"""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "aoai_monitor.cli", "ingest", str(path), "--store", str(store_path),
                             "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    own = total = spool = 0.0
    ticks = 0
    while proc.poll() is None:
        own = max(own, _proc_mb(proc.pid, "status", "VmRSS"))
        spooled = _spool_mb(proc.pid)
        spool = max(spool, spooled)
        if ticks % 25 == 0:
            total = max(total, spooled + sum(_proc_mb(pid, "smaps_rollup", "Pss") for pid in _tree(proc.pid)))
        ticks += 1
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(proc.stderr.read())
    return records / elapsed, own, total, spool


def records_file(keep: str | None, records: int, prefix: str) -> tuple[Path, Path]:
    """(work directory, its NDJSON file of `records` generated records): the file is reused when kept from an
    earlier run; stores left there are removed."""
    work = Path(keep or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"records-{records}.ndjson"
    if not data.exists():
        print(f"generating {records:,} records → {data}", file=sys.stderr)
        with open(data, "wb") as f:
            write(records, f)
    for p in work.glob("*.duckdb*"):
        os.remove(p)
    return work, data


def archive_dir(data: Path, files: int) -> Path:
    """The records of `data` split into `files` PT1H.json files of about equal size, in hourly folders as
    diagnostic settings archive them (made once, kept next to the data)."""
    root = data.parent / f"archive-{files}"
    if root.exists():
        return root
    with open(data, "rb") as f:
        lines = f.readlines()
    per = -(-len(lines) // files)
    for i in range(files):
        hour = root / "insights-logs-requestresponse" / f"y=2025/m=11/d={1 + i // 24:02d}/h={i % 24:02d}/m=00"
        hour.mkdir(parents=True)
        (hour / "PT1H.json").write_bytes(b"".join(lines[i * per:(i + 1) * per]))
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000, help="records to generate (default 200k)")
    ap.add_argument("--baseline-records", type=int, default=100_000, help="records the slow baseline processes")
    ap.add_argument("--keep", help="directory to keep the generated file and stores in")
    ap.add_argument("--files", type=int, default=1,
                    help="ingest the records as this many PT1H.json files of a storage-archive directory (default 1: "
                         "the one NDJSON file)")
    args = ap.parse_args()
    work, data = records_file(args.keep, args.records, "aoai-bench-")
    target = data if args.files <= 1 else archive_dir(data, args.files)
    size_mb = data.stat().st_size / 1e6
    # The floor and the baseline are timed before and after ours: this machine's speed drifts by up to 2x within
    # minutes, and the ratios use the mean of the two (both are printed, so a drift shows).
    before = floor(data)
    limit = min(args.baseline_records, args.records)
    base_before = baseline(data, work / "baseline.duckdb", limit)
    rate, rss, rss_total, spool = ours(target, work / "ours.duckdb", args.records)
    for p in work.glob("baseline.duckdb*"):
        os.remove(p)
    base_after = baseline(data, work / "baseline.duckdb", limit)
    after = floor(data)
    fl = (before + after) / 2
    base = (base_before + base_after) / 2
    print(f"records: {args.records:,} ({size_mb:,.0f} MB, {size_mb * 1e6 / args.records:,.0f} B/record"
          f"{f', in {args.files:,} files' if args.files > 1 else ''}), cores: {os.cpu_count()}")
    print(f"(a) orjson floor:        {fl:>12,.0f} records/s  (before {before:,.0f}, after {after:,.0f})")
    print(f"(b) baseline (Python):   {base:>12,.0f} records/s  = {base / fl:6.1%} of floor  (before {base_before:,.0f}, after {base_after:,.0f})")
    print(f"(c) aoai-monitor ingest: {rate:>12,.0f} records/s  = {rate / fl:6.1%} of floor, {rate / base:4.1f}x baseline, "
          f"peak RSS {rss:,.0f} MB, with its workers and spool {rss_total:,.0f} MB (PSS; spool peak {spool:,.0f} MB)")


if __name__ == "__main__":
    main()
