"""Part 6: search pruning and the local runner's wall time against direct step calls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from workflow.reports.plots import pyplot, save_figure

from .common import _ok


def _pruning(s: dict) -> list[str]:
    lines = [f"**Pruning** (bench/bench_search.py: {s['model']} on Adult, {s['sampler']} sampler so every arm "
             f"evaluates the same configurations, {s['n_trials']} trials × {s['n_epoch']} epochs, patience {s['patience']}, "
             f"{s['threads']} thread):", "",
             "| arm | epochs spent | fraction | best val score | Δ vs none | complete / pruned | seconds |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {a['arm']} | {a['epochs_spent']} | {a['epoch_fraction']:.2f} | {a['best_value']:.4f} | "
              f"{a['best_delta']:+.4f} | {a['n_complete']} / {a['n_pruned']} | {a['seconds']} |" for a in s["arms"]]
    return lines + ["", f"That issue's target ({s['target']}): " + ", ".join(
        f"{a['arm']} {_ok(a['meets_target'])}" for a in s["arms"] if a["meets_target"] is not None) + ".", ""]


def _run_intro(res: dict, cold: dict | None) -> list[str]:
    used = res.get("pipeline_config_used", {})
    return [f"**`mtlp run`** ({Path(res['config']['pipeline_config']).name}"
            + (f" with overrides {json.dumps(res['config'].get('overrides'))}" if res["config"].get("overrides") else "")
            + f": {used.get('dataset')} {json.dumps(used.get('options'))}, models {used.get('models')}, search "
            f"{json.dumps(used.get('search'))}, train {json.dumps(used.get('train'))}), caching off. "
            "KFP's local runner (`pipeline.local.run_local`: each task a fork of one warm worker process that "
            "imported torch, MLflow and the steps once) vs the same `workflow.steps` functions called one after "
            "the other in one fresh Python process, its interpreter start and imports included as the local run's "
            "are (`bench.pipeline_overhead.run_direct_fresh`)"
            + ("; and, for comparison, the local runner with KFP's own launcher (`--cold-tasks`: a fresh "
               "`python3` per task)" if cold else "") + ". Seconds per step, summed over models:", "",
            "| step | local runner (sum of task durations) | direct calls |" + (" cold tasks |" if cold else ""),
            "|---|---|---|" + ("---|" if cold else "")]


def _step_rows(local: dict, direct: dict, cold: dict | None) -> list[str]:
    nan = float("nan")
    rows = [f"| {k} | {local['by_step'].get(k, nan):.1f} | {direct['by_step'].get(k, nan):.1f} |"
            + (f" {cold['by_step'].get(k, nan):.1f} |" if cold else "")
            for k in dict.fromkeys(list(direct["by_step"]) + list(local["by_step"]))]
    return rows + [f"| **total wall time** | **{local['seconds']:.1f}** | **{direct['seconds']:.1f}** |"
                   + (f" **{cold['seconds']:.1f}** |" if cold else ""), ""]


def _overhead(res: dict, cold: dict | None) -> list[str]:
    local, direct, over, st = res["local"], res["direct"], res["overhead"], res["startup"]
    n_tasks = local.get("n_tasks", 0)
    return [f"Local runner overhead over direct calls: **{over * 100:+.0f} %** (target ≤ 15 %: {_ok(over <= 0.15)})"
            + (f", from the mean wall time of {len(local['all_seconds'])} runs of each path in ABBA order (local "
               f"{', '.join(f'{x:.1f}' for x in local['all_seconds'])} s; direct "
               f"{', '.join(f'{x:.1f}' for x in direct.get('all_seconds', []))} s; per-step seconds from the first)"
               if len(local.get("all_seconds", [])) > 1 else "")
            + (f"; with a fresh interpreter per task it is {res['overhead_cold'] * 100:+.0f} %." if cold else "."),
            f"One cold task's fixed cost, measured here: a fresh interpreter importing torch, mlflow, kfp and the steps "
            f"module takes {st['median']:.1f} s (median of {len(st['seconds'])}; a bare `python3 -c pass` "
            f"{st['bare_python_median']:.2f} s), ≈ {n_tasks * st['median']:.0f} s over this run's {n_tasks} tasks; the warm "
            "worker pays it once."]


def _inside_tasks(local: dict, direct: dict) -> list[str]:
    """Where the worker timed the tasks: orchestration between them, and the steps slower inside them."""
    in_tasks = sum(local["by_step"].values())
    lines = [f"The local run's tasks themselves ran for {in_tasks:.1f} s (the worker's clock) of its "
             f"{local['seconds']:.1f} s; the other {local['seconds'] - in_tasks:.1f} s are the worker's start "
             "(the imports the first task waits for) and KFP's orchestration between tasks (resolving "
             "inputs, writing each task's executor input and output files, caching checks)."]
    slower = {k: local["by_step"][k] - direct["by_step"].get(k, 0.0) for k in local["by_step"]}
    worst = sorted((k for k in slower if slower[k] > 0.5), key=lambda k: -slower[k])[:3]
    if worst:
        lines.append("Inside the tasks the local run is slower at " + ", ".join(
            f"{k} (+{slower[k]:.1f} s)" for k in worst) + ": each task is a new process that starts cold "
            "where the direct process reuses what its earlier steps warmed (allocator and oneDNN caches, the "
            "ONNX exporter's first-call setup: a forked export of a small MMOE took 3.8–5.3 s against 3.4 s for "
            "a second export in one process), and a task that arrives while the worker is still importing "
            "(torch, the exporter) waits for that import to finish.")
    return lines


def _plot(local: dict, direct: dict, path: Path) -> None:
    ks = list(dict.fromkeys(list(direct["by_step"]) + list(local["by_step"])))
    fig, ax = pyplot().subplots(figsize=(7, 3.6))
    xs = np.arange(len(ks))
    ax.bar(xs - 0.2, [local["by_step"].get(k, 0) for k in ks], 0.4, label="KFP local runner")
    ax.bar(xs + 0.2, [direct["by_step"].get(k, 0) for k in ks], 0.4, label="direct calls")
    ax.set_xticks(xs, ks, rotation=30, fontsize=8)
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)


def part6(rec: dict, img: Path) -> tuple[list[str], dict]:
    res = rec["result"]
    local, direct, cold = res["local"], res["direct"], res.get("local_cold")
    lines = _pruning(res["search"]) if res.get("search") else []
    lines += _run_intro(res, cold) + _step_rows(local, direct, cold) + _overhead(res, cold)
    if local.get("timed_by") == "worker":
        lines += _inside_tasks(local, direct)
    _plot(local, direct, img / "pipeline_steps.png")
    n_tasks, expected = local.get("n_tasks", 0), 4 + 6 * len(res.get("pipeline_config_used", {}).get("models") or [])
    if n_tasks < expected:
        lines.append(f"({n_tasks} of the run's {expected} task durations were matched in the runner's log; the local "
                     "total is the wall time of the whole run and includes all of them.)")
    lines += ["", "![Pipeline steps](benchmarks/pipeline_steps.png)"]
    return lines, {"p6_overhead": res["overhead"], "p6_local": local["seconds"], "p6_direct": direct["seconds"],
                   "p6_startup": res["startup"]["median"]}
