"""One command for the whole benchmark suite (or some parts), JSON results, then docs/benchmarks.md.

    .venv/bin/python -m bench.run                 # the full suite (about an hour on 2 busy CPU cores)
    .venv/bin/python -m bench.run --quick         # small sizes, 1 seed: under 10 minutes
    .venv/bin/python -m bench.run --parts 4,5     # some parts; the others keep their last results
    .venv/bin/python -m bench.run --report-only   # re-render docs/benchmarks.md from the JSON

Each part writes ``<out>/part<N>.json`` (its config, results, the environment before and after, wall time);
the report merges the part files into ``docs/benchmarks/results.json`` and renders from it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.environment import environment, load_average  # noqa: E402

PARTS = {1: "bench.quality", 2: "bench.mmoe_synthetic", 3: "bench.esmm_cvr", 4: "bench.throughput",
         5: "bench.inference", 6: "bench.pipeline_overhead", 7: "bench.scale",
         8: "bench.serving_load"}
TITLES = {1: "Quality on Adult", 2: "MMOE synthetic experiment", 3: "Entire-space CVR (ESMM)",
          4: "Training throughput", 5: "Inference: ONNX Runtime vs PyTorch", 6: "Search and pipeline wall time",
          7: "Scale: data bigger than memory", 8: "Serving under load"}
DEFAULT_OUT = REPO / "bench" / "results"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load_average()[0]:.1f}] {msg}", flush=True)


def run_part(n: int, quick: bool, out: Path, overrides: dict | None = None) -> dict:
    module = importlib.import_module(PARTS[n])
    cfg = module.config(quick)
    cfg.update(overrides or {})
    log(f"part {n} ({TITLES[n]}), {'quick' if quick else 'full'}: {cfg}")
    record = {"part": n, "title": TITLES[n], "mode": "quick" if quick else "full", "env_start": environment()}
    start = time.perf_counter()
    try:
        record["result"] = module.run(cfg, log)
        record["status"] = "ok"
    except Exception as e:  # one part failing still leaves the others' results and a report naming the failure
        traceback.print_exc()
        record["status"] = "failed"
        record["error"] = f"{type(e).__name__}: {e}"
    record["seconds"] = round(time.perf_counter() - start, 1)
    record["load_average_end"] = load_average()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"part{n}.json").write_text(json.dumps(record, indent=1, default=str))
    log(f"part {n} {record['status']} in {record['seconds']}s -> {out / f'part{n}.json'}")
    return record


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 seed (under 10 minutes)")
    ap.add_argument("--parts", default="1,2,3,4,5,6,7,8", help="comma-separated part numbers")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="folder for the part JSON files")
    ap.add_argument("--docs", default=str(REPO / "docs"), help="where benchmarks.md and benchmarks/ go")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override a part's config key, e.g. --set epochs=3 (applies to every part run)")
    ap.add_argument("--command", default=None, help="how the results were produced, as the page should state it")
    args = ap.parse_args(argv)
    out = Path(args.out)
    parts = [int(p) for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; choose from {sorted(PARTS)}")
    start = time.perf_counter()
    failed = []
    if not args.report_only:
        for n in parts:
            overrides = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.set)}
            if run_part(n, args.quick, out, overrides)["status"] != "ok":
                failed.append(n)
    if not args.no_report:
        from bench import report

        cmd = args.command or ("python -m bench.run" + (" --quick" if args.quick else "")
                               + (f" --parts {args.parts}" if args.parts != "1,2,3,4,5,6,7,8" else ""))
        docs = Path(args.docs)
        # the README's headline table follows the published page only, never a quick run rendered elsewhere
        readme = REPO / "README.md" if docs.resolve() == (REPO / "docs").resolve() else None
        path = report.render(out, docs, command=cmd, readme=readme)
        log(f"report written: {path}")
    log(f"done in {time.perf_counter() - start:.0f}s" + (f"; failed parts: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
