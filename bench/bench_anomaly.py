"""Precision and recall of the anomaly detector on a labelled generated set.

    python bench/bench_anomaly.py                      # 3 weeks of training + 1 labelled week, seeds 1-3
    python bench/bench_anomaly.py --seeds 1 --scale 1

Traffic comes from aoai_monitor.alerting.simulate (diurnal and weekly load, four deployments). The test
week carries random incidents of every kind the detector should see (latency spikes, 429 bursts, outages
with no data, 5xx bursts, token surges, traffic surges) at random hours, day or night. Labels: every
(deployment, measure, bucket) an incident overlaps, for the measures it disturbs (simulate.KINDS).
Reported per sensitivity: bucket-level precision and recall, and incident-level recall (an incident counts
as found when at least one of its labelled buckets is flagged).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aoai_monitor.alerting import simulate as sim  # noqa: E402
from aoai_monitor.alerting.anomaly import SENSITIVITY, AnomalyConfig, score, train  # noqa: E402
from aoai_monitor.store import Store  # noqa: E402

H = 3_600_000
DAY = 24 * H
FACTORS = {"latency": (3.0, 6.0), "throttle": (1.5, 2.5), "outage": (1.0, 1.0), "errors": (0.1, 0.3),
           "tokens": (4.0, 10.0), "traffic": (2.5, 4.0)}


def incidents(rng: random.Random, start: int, end: int, per_kind: int) -> list[sim.Incident]:
    out = []
    for kind, (lo, hi) in FACTORS.items():
        for _ in range(per_kind):
            dep = "gpt-4o-ptu" if kind == "throttle" else rng.choice([d.name for d in sim.DEPLOYMENTS])
            s = start + rng.randrange((end - start - 3 * H) // (15 * 60_000)) * 15 * 60_000
            out.append(sim.Incident(kind, dep, s, s + rng.choice((1, 2)) * H, round(rng.uniform(lo, hi), 2)))
    return out


def labels(incs: list[sim.Incident], bucket: int) -> dict[tuple[str, str, int], int]:
    """(deployment, measure, bucket) → index of the incident it belongs to."""
    out = {}
    for i, inc in enumerate(incs):
        deps = [d.name for d in sim.DEPLOYMENTS if inc.active(d, inc.start_ms)]
        for dep in deps:
            for measure in sim.KINDS[inc.kind]:
                for b in range(inc.start_ms // bucket * bucket, inc.end_ms, bucket):
                    out[(dep, measure, b)] = i
    return out


def run(seed: int, scale: float, weeks: int, workdir: Path) -> list[dict]:
    rng = random.Random(seed)
    end = int(datetime(2025, 4, 7, tzinfo=timezone.utc).timestamp() * 1000)  # a Monday
    test_start = end - 7 * DAY
    incs = incidents(rng, test_start, end, per_kind=3)
    t0 = time.perf_counter()
    logs, _ = sim.generate(test_start - weeks * 7 * DAY, end, tuple(incs), seed=seed, scale=scale)
    store = Store(workdir / f"anomaly-{seed}.duckdb")
    store.pricer = None
    sim.load_into(store, logs, [])
    build_s = time.perf_counter() - t0
    rows = []
    for sensitivity in SENSITIVITY:
        cfg = AnomalyConfig(sensitivity=sensitivity, training_ms=weeks * 7 * DAY)
        t1 = time.perf_counter()
        model = train(store.cursor(), cfg, test_start)
        flagged = score(store.cursor(), cfg, model, test_start, end)
        took = time.perf_counter() - t1
        truth = labels(incs, cfg.bucket_ms)
        hits = {(d["aoai.deployment"], d["anomaly.metric"], d["@timestamp"]) for d in flagged}
        tp = len(hits & truth.keys())
        found = {truth[h] for h in hits & truth.keys()}
        rows.append({"seed": seed, "sensitivity": sensitivity, "flagged": len(hits), "labelled": len(truth), "tp": tp,
                     "precision": tp / len(hits) if hits else 1.0, "recall": tp / len(truth),
                     "incident_recall": len(found) / len(incs), "missed": sorted({incs[i].kind for i in set(range(len(incs))) - found}),
                     "train_score_s": took, "build_s": build_s, "logs": len(logs)})
    store.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (one generated set each)")
    ap.add_argument("--scale", type=float, default=0.5, help="traffic multiplier (1.0: peaks of 6–12 requests/min)")
    ap.add_argument("--weeks", type=int, default=3, help="weeks of training history before the labelled week")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            results += run(seed, args.scale, args.weeks, Path(tmp))
    print(f"{'seed':>4} {'sensitivity':>11} {'flagged':>7} {'labelled':>8} {'precision':>9} {'recall':>6} "
          f"{'incidents found':>15}  missed kinds")
    for r in results:
        print(f"{r['seed']:>4} {r['sensitivity']:>11} {r['flagged']:>7} {r['labelled']:>8} {r['precision']:>9.3f} "
              f"{r['recall']:>6.3f} {r['incident_recall']:>15.3f}  {', '.join(r['missed']) or '-'}")
    print("\nmean over seeds:")
    for s in SENSITIVITY:
        rs = [r for r in results if r["sensitivity"] == s]
        print(f"  {s:>6}: precision {sum(r['precision'] for r in rs) / len(rs):.3f}, bucket recall "
              f"{sum(r['recall'] for r in rs) / len(rs):.3f}, incident recall {sum(r['incident_recall'] for r in rs) / len(rs):.3f}")
    r0 = results[0]
    print(f"\n{r0['logs']:,} log documents per set (built in {r0['build_s']:.0f} s); "
          f"train + score one week: {sum(r['train_score_s'] for r in results) / len(results):.2f} s")


if __name__ == "__main__":
    main()
