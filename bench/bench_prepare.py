"""Benchmark of the data-prep step on synthetic-funnel: generation + encoding + Parquet writing.

Each size runs in its own subprocess so that its peak RSS is its own: VmHWM, which exec starts afresh (ru_maxrss
would carry the parent's peak over to the child). "Data in memory" is the size of the written columns as
fixed-width arrays (rows x bytes per row, i.e. the Arrow tables written, which have no nulls); targets: >= 1M
rows/s end to end and whole-process peak RSS <= 3x that size. The baseline is the child's peak RSS after its
imports (python, numpy, pyarrow.parquet, workflow.data.prepare), before any data. Writes
bench/results/bench_prepare.json and prints a table.

    .venv/bin/python bench/bench_prepare.py [--sizes 1000000 10000000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

CHILD = r"""
import json, resource, shutil, sys, tempfile, time
from pathlib import Path


def peak_kib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


import pyarrow.parquet as pq
from workflow.data.prepare import prepare

n_rows = int(sys.argv[1])
baseline_kib = peak_kib()
work = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
try:
    start, cpu_start = time.perf_counter(), time.process_time()
    spec = prepare("synthetic-funnel", work / "out", seed=0, options={"n_rows": n_rows})
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = peak_kib()
    schema = pq.read_schema(work / "out" / "train.parquet")
    bytes_per_row = sum(field.type.byte_width for field in schema)
    disk = sum(p.stat().st_size for p in (work / "out").iterdir())
finally:
    shutil.rmtree(work, ignore_errors=True)
print(json.dumps({"n_rows": n_rows, "seconds": seconds, "rows_per_s": n_rows / seconds,
                  "cpu_seconds": cpu_seconds, "rows_per_cpu_s": n_rows / cpu_seconds,
                  "peak_rss_bytes": peak * 1024, "baseline_rss_bytes": baseline_kib * 1024,
                  "data_bytes": bytes_per_row * n_rows, "bytes_per_row": bytes_per_row, "parquet_bytes": disk,
                  "columns": len(schema)}))
"""


def run_size(n_rows: int) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(n_rows)], cwd=REPO, capture_output=True, text=True,
                            check=True)
    record = json.loads(result.stdout.strip().splitlines()[-1])
    record["peak_over_data"] = record["peak_rss_bytes"] / record["data_bytes"]
    record["growth_over_data"] = (record["peak_rss_bytes"] - record["baseline_rss_bytes"]) / record["data_bytes"]
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=1, help="runs per size; the fastest is reported")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    records = []
    for n_rows in args.sizes:
        runs = [run_size(n_rows) for _ in range(args.repeats)]
        best = min(runs, key=lambda r: r["seconds"])
        best["all_seconds"] = [r["seconds"] for r in runs]
        records.append(best)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "bench_prepare.json"
    out.write_text(json.dumps({"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                           "platform": platform.platform()},
                               "load_average": {"start": load_start, "end": os.getloadavg()[0]},
                               "results": records}, indent=1))
    print(f"{'rows':>12} {'seconds':>8} {'rows/s':>12} {'rows/CPU-s':>12} {'peak RSS MiB':>13} {'base MiB':>9} "
          f"{'data MiB':>9} {'peak/data':>9} {'(peak-base)/data':>16} {'parquet MiB':>11}")
    for r in records:
        print(f"{r['n_rows']:>12,} {r['seconds']:>8.2f} {r['rows_per_s']:>12,.0f} {r['rows_per_cpu_s']:>12,.0f} "
              f"{r['peak_rss_bytes'] / 2**20:>13.0f} {r['baseline_rss_bytes'] / 2**20:>9.0f} "
              f"{r['data_bytes'] / 2**20:>9.0f} {r['peak_over_data']:>9.2f} {r['growth_over_data']:>16.2f} "
              f"{r['parquet_bytes'] / 2**20:>11.0f}")
    print(f"load average (1 min): {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, "
          f"on {os.cpu_count()} CPUs")
    print(f"targets: >= 1,000,000 rows/s and peak/data <= 3.0; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
