"""Search benchmark on Adult: the same number of trials with and without pruning; epochs spent and best score.

Each arm is a fresh study with the same sampler seed, search space and training seed; only the pruner differs.
With the default random sampler every arm draws the very same configurations, so a gap in best score is the
pruner's doing alone (with ``--sampler tpe`` the arms' later trials diverge, as the pruned trials feed TPE).
Target: a pruned search spends at most 50% of the unpruned search's epochs for a best validation score
(val/monitor) within 0.003 of it (or better).

    .venv/bin/python bench/bench_search.py                         # defaults below, ~5-10 minutes on 2 CPUs
    .venv/bin/python bench/bench_search.py --sampler tpe --n-trials 12 --pruners median,asha,percentile

Writes bench/results/search_bench.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# a space that trains in a few seconds per epoch on CPU; the search axes of the issue, narrower widths
BENCH_SPACE = {
    "common": {"embed_dim": [4, 8], "batch_size": 1024,
               "tower_dims": {"depth": [1, 2], "widths": [8, 16]}},
    "mmoe": {"n_expert": {"low": 2, "high": 6}, "expert_dims": {"depth": [1, 2], "widths": [16, 32, 64]}},
    "ple": {"n_level": {"low": 1, "high": 2}, "n_expert_specific": {"low": 1, "high": 3},
            "n_expert_shared": {"low": 1, "high": 3}, "expert_dims": {"depth": [1, 2], "widths": [32, 64, 128]}},
    "shared_bottom": {"bottom_dims": {"depth": [1, 3], "widths": [32, 64, 128]}},
}

PRUNERS = {
    "none": "none",
    "median": {"type": "median", "n_startup_trials": 3, "n_warmup_steps": 0},
    "median-default": "median",
    "hyperband": {"type": "hyperband", "min_resource": 1, "reduction_factor": 3},
    # asynchronous successive halving: after epoch 1 keep the top third of the trials that got there, and so on
    "asha": {"type": "asha", "min_resource": 1, "reduction_factor": 3},
    # aggressive: prune a trial whose best value so far is in the bottom 75% at its epoch
    "percentile": {"type": "percentile", "percentile": 75.0, "n_startup_trials": 2, "n_warmup_steps": 0},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "adult"))
    ap.add_argument("--model", default="mmoe")
    ap.add_argument("--n-trials", type=int, default=16)
    ap.add_argument("--n-epoch", type=int, default=6)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--pruners", default="median,percentile", help=f"pruned arms, from {sorted(PRUNERS)}")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--sampler", default="random", choices=["random", "tpe"],
                    help="random (default): every arm evaluates the very same configurations, so a difference in "
                         "best score is due to pruning alone; tpe: the arms' later trials differ")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "search_bench.json"))
    args = ap.parse_args(argv)

    import torch

    from workflow.data.prepare import prepare
    from workflow.search import search

    threads = args.threads
    torch.set_num_threads(threads)
    arms = ["none"] + [a for a in args.pruners.split(",") if a and a != "none"]
    unknown = [a for a in arms if a not in PRUNERS]
    if unknown:
        raise SystemExit(f"unknown pruner arms {unknown}; choose from {sorted(PRUNERS)}")

    rows = []
    with tempfile.TemporaryDirectory(prefix="mtlp-bench-search-") as tmp:
        prepared = Path(tmp) / "adult"
        t0 = time.perf_counter()
        spec = prepare("adult", prepared, data_dir=args.data_dir, seed=args.seed)
        print(f"prepared adult in {time.perf_counter() - t0:.1f}s: rows {spec.rows}, tasks {spec.label_names}",
              flush=True)
        for arm in arms:
            start = time.perf_counter()
            res = search(prepared, args.model, Path(tmp) / f"search-{arm}", n_trials=args.n_trials,
                         n_epoch=args.n_epoch, patience=args.patience, pruner=PRUNERS[arm], seed=args.seed,
                         search_space=BENCH_SPACE, device="cpu", threads=threads, progress=True, plots=False,
                         sampler=args.sampler)
            rows.append({"arm": arm, "pruner": PRUNERS[arm], "epochs_spent": res.epochs_spent,
                         "best_value": res.best_value, "best_trial": res.best_trial_number,
                         "n_complete": res.n_complete, "n_pruned": res.n_pruned, "n_failed": res.n_failed,
                         "seconds": round(time.perf_counter() - start, 1), "best_params": res.best_params})

    base = rows[0]
    for r in rows:
        r["epoch_fraction"] = r["epochs_spent"] / base["epochs_spent"]
        r["best_delta"] = r["best_value"] - base["best_value"]
        # a pruned search that finds a better model than the unpruned one also passes
        r["meets_target"] = None if r is base else (r["epoch_fraction"] <= 0.5 and r["best_delta"] >= -0.003)

    report = {"model": args.model, "dataset": "adult", "sampler": args.sampler, "n_trials": args.n_trials,
              "n_epoch": args.n_epoch,
              "patience": args.patience, "seed": args.seed, "threads": threads, "space": BENCH_SPACE,
              "machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "cpus": os.cpu_count(), "platform": platform.platform()},
              "target": "epochs <= 50% of unpruned, best val/monitor >= unpruned - 0.003",
              "arms": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))

    print(f"\nsearch benchmark: {args.model} on Adult, {args.sampler} sampler, {args.n_trials} trials x {args.n_epoch} epochs "
          f"(patience {args.patience}), objective val/monitor (mean AUC of income, never_married)")
    print(f"{'arm':<16}{'epochs':>8}{'fraction':>10}{'best val':>10}{'delta':>9}{'complete':>10}{'pruned':>8}"
          f"{'seconds':>9}  target")
    for r in rows:
        target = "-" if r["meets_target"] is None else ("met" if r["meets_target"] else "MISSED")
        print(f"{r['arm']:<16}{r['epochs_spent']:>8}{r['epoch_fraction']:>10.2f}{r['best_value']:>10.4f}"
              f"{r['best_delta']:>+9.4f}{r['n_complete']:>10}{r['n_pruned']:>8}{r['seconds']:>9.1f}  {target}")
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
