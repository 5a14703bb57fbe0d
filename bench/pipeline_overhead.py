"""Part 6: search with and without pruning (bench/bench_search.py's arms), and the local pipeline's wall time.

- Pruning: ``bench_search.main`` (Adult, MMOE, random sampler: every arm draws the same configurations).
- ``mtlp run``: ``pipeline.local.run_local`` on a config (the default one in full mode), per-task durations
  from the KFP local runner's own log lines; then the reference: the same ``workflow.steps`` functions called
  directly in one fresh process (its interpreter start and imports included, as the local run's are), in the
  graph's order (start, prepare, per model: model run, search, train,
  report, export, register; promote; summary), each step timed. Overhead = local runner / direct - 1.
  The local runner forks each task from a warm worker (``pipeline.warm_worker``); with ``cold`` the run is
  repeated with KFP's own launcher (a fresh interpreter per task) for comparison.
- The fixed cost of one cold KFP task: a fresh ``python3`` importing what a task imports (torch, mlflow, the
  steps module), timed in subprocesses.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.environment import load_average

REPO = Path(__file__).resolve().parents[1]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _TaskClock(logging.Filter):
    """On the root logger (KFP's local runner swaps the handlers, never the filters): task start/end times."""

    def __init__(self):
        super().__init__()
        self.events = []

    def filter(self, record):
        msg = _ANSI.sub("", str(record.getMessage()))
        m = re.match(r"(Executing task|Task) '?([^' ]+)'?( finished)?", msg)
        if m and (m.group(1) == "Executing task" or m.group(3)):
            self.events.append((record.created, "start" if m.group(1) == "Executing task" else "end", m.group(2)))
        return True


def task_durations(events) -> list[dict]:
    open_, out = {}, []
    for t, kind, name in events:
        if kind == "start":
            open_.setdefault(name, []).append(t)
        elif open_.get(name):
            out.append({"task": name, "seconds": t - open_[name].pop(0)})
    return out


def _step_name(task: str) -> str:
    for key in ("start-run", "prepare", "start-model-run", "search", "train", "report", "export", "register",
                "promote", "summarize"):
        if key in task:
            return key
    return task


def run_local_timed(config, work: Path, warm_worker: bool = True) -> dict:
    from pipeline.local import run_local

    clock = _TaskClock()
    root = logging.getLogger()
    root.addFilter(clock)
    t0 = time.perf_counter()
    try:
        res = run_local(config, run_name="bench-local", runs_root=work, caching=False, warm_worker=warm_worker)
    finally:
        root.removeFilter(clock)
    total = time.perf_counter() - t0
    # the worker's own clock where there is one: KFP's log times a task from when its thread waits for a turn
    tasks = ([{"task": function.replace("_", "-"), "seconds": seconds} for function, seconds in res.task_seconds]
             if res.task_seconds else task_durations(clock.events))
    by_step: dict[str, float] = {}
    for t in tasks:
        by_step[_step_name(t["task"])] = by_step.get(_step_name(t["task"]), 0.0) + t["seconds"]
    return {"seconds": total, "runner_seconds": res.seconds, "tasks": tasks, "by_step": by_step, "n_tasks": len(tasks),
            "timed_by": "worker" if res.task_seconds else "kfp-log"}


def run_direct(config, work: Path) -> dict:
    """The graph's steps as plain calls in this process, in order, timed per step."""
    from workflow import steps
    from pipeline.config import config_to_dict

    cfg = config_to_dict(config)
    work_dir = str((work / "bench-direct").resolve())
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    run_name, uri = "bench-direct", config.tracking.uri
    by_step: dict[str, float] = {}

    def timed(step, fn, *a, **k):
        t = time.perf_counter()
        out = fn(*a, **k)
        by_step[step] = by_step.get(step, 0.0) + time.perf_counter() - t
        return out

    t0 = time.perf_counter()
    parent = timed("start-run", steps.start_pipeline_run, cfg, work_dir, run_name, uri)
    prepared = Path(work_dir) / "prepared"
    ds = config.dataset
    timed("prepare", steps.prepare_step, ds.name, prepared, ds.data_dir, ds.seed, ds.val_fraction, ds.options, parent,
          work_dir, uri)
    search_cfg = {k: v for k, v in cfg["search"].items() if k != "storage"}
    versions, results = [], {}
    for m in config.models:
        run_id = timed("start-model-run", steps.start_model_run, run_name, config.tracking.experiment, m, work_dir, uri)
        best = timed("search", steps.search_step, prepared, m, work_dir, run_id,
                     {**search_cfg, "storage": config.search.storage}, seed=config.train.seed,
                     device=config.train.device, tracking_uri=uri, run_name=run_name)
        trained = Path(work_dir) / "trained" / m
        fixed = {"batch_size": config.train.batch_size, **config.train.params.get(m, {})}
        timed("train", steps.train_step, prepared, m, trained, run_id, work_dir, best_params=best, fixed_params=fixed,
              n_epoch=config.train.n_epoch, patience=config.train.patience, device=config.train.device,
              seed=config.train.seed, tracking_uri=uri)
        flat = timed("report", steps.report_step, trained, Path(work_dir) / f"{m}.html", Path(work_dir) / f"{m}.md")
        results[m] = flat
        timed("export", steps.export_step, trained, prepared, run_id, work_dir, uri)
        versions.append(timed("register", steps.register_step, trained, run_id, config.registered_model, work_dir,
                              run_name, uri))
    decision = timed("promote", steps.promote_step, versions, config.registered_model, work_dir,
                     config.promotion.metric, config.promotion.margin, uri)
    timed("summarize", steps.summary_step, parent, results, decision, config.registered_model, work_dir,
          Path(work_dir) / "summary_out.md", uri)
    return {"seconds": time.perf_counter() - t0, "by_step": by_step}


def run_direct_fresh(config, work: Path) -> dict:
    """``run_direct`` in a new interpreter, timed from outside: a pipeline run starts cold, so the baseline pays
    its imports once too (the local runner's warm worker pays them once as well)."""
    import multiprocessing

    t0 = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        out = pool.apply(run_direct, (config, work))
    out["seconds_in_process"] = out["seconds"]
    out["seconds"] = time.perf_counter() - t0
    return out


TASK_IMPORTS = "import torch, mlflow, kfp, workflow.steps, workflow.search, workflow.training.train"


def task_startup(n: int) -> dict:
    """Seconds for a fresh interpreter to import what a pipeline task imports (the local runner's per-task cost)."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", TASK_IMPORTS], cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    bare = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], cwd=REPO, check=True, capture_output=True)
        bare.append(time.perf_counter() - t)
    return {"imports": TASK_IMPORTS, "seconds": times, "median": sorted(times)[len(times) // 2],
            "bare_python_median": sorted(bare)[len(bare) // 2]}


def run(cfg: dict, log=print) -> dict:
    import os

    from bench import bench_search
    from pipeline.config import load_config

    out: dict = {"config": cfg}
    with tempfile.TemporaryDirectory(prefix="bench-p6-") as tmp:
        tmp = Path(tmp)
        if cfg.get("search"):
            s = cfg["search"]
            path = tmp / "search.json"
            t0 = time.perf_counter()
            bench_search.main(["--n-trials", str(s["n_trials"]), "--n-epoch", str(s["n_epoch"]), "--pruners", s["pruners"],
                               "--threads", "1", "--out", str(path)])
            out["search"] = json.loads(path.read_text())
            out["search"]["wall_seconds"] = time.perf_counter() - t0
            out["search"]["load"] = load_average()
            log("  pruning arms: " + ", ".join(f"{a['arm']} {a['epochs_spent']} epochs best {a['best_value']:.4f} "
                                               f"{a['seconds']}s" for a in out["search"]["arms"]))
        config = load_config(cfg["pipeline_config"])
        for key, value in (cfg.get("overrides") or {}).items():  # "models": [...], "search.n_trials": 1...
            target, attr = (getattr(config, key.split(".")[0]), key.split(".")[1]) if "." in key else (config, key)
            setattr(target, attr, value)
        config.train.device = "cpu"
        env_backup = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ.pop("MLFLOW_TRACKING_URI", None)  # each path gets its own SQLite store in its work dir
        try:
            out["startup"] = task_startup(cfg["startup_repeats"])
            log(f"  one task's interpreter + imports: {out['startup']['median']:.2f}s")
            first = cfg.get("order", "direct-first")
            pair = [("direct", run_direct_fresh), ("local", run_local_timed)]
            if first == "local-first":
                pair.reverse()
            # ABBA order over `rounds` rounds: neither path always runs first (or on a warmer page cache)
            paths = [step for r in range(cfg.get("rounds", 1)) for step in (pair if r % 2 == 0 else pair[::-1])]
            if cfg.get("cold"):  # KFP's own launcher, a fresh interpreter per task: what the warm worker saves
                paths.append(("local_cold", lambda c, w: run_local_timed(c, w, warm_worker=False)))
            runs: dict[str, list[dict]] = {}
            for i, (name, fn) in enumerate(paths):
                (tmp / f"{name}-{i}").mkdir()
                result = fn(config, tmp / f"{name}-{i}")
                result["load"] = load_average()
                runs.setdefault(name, []).append(result)
                log(f"  {name}: {result['seconds']:.1f}s " + json.dumps({k: round(v, 1) for k, v in result['by_step'].items()}))
            for name, results in runs.items():  # a path's wall time: the mean over its runs; steps from the first
                walls = [r["seconds"] for r in results]
                out[name] = {**results[0], "seconds": sum(walls) / len(walls), "all_seconds": walls}
        finally:
            if env_backup is not None:
                os.environ["MLFLOW_TRACKING_URI"] = env_backup
        out["overhead"] = out["local"]["seconds"] / out["direct"]["seconds"] - 1
        if "local_cold" in out:
            out["overhead_cold"] = out["local_cold"]["seconds"] / out["direct"]["seconds"] - 1
        out["pipeline_config_used"] = {"models": list(config.models), "dataset": config.dataset.name,
                                       "options": dict(config.dataset.options), "search": {"n_trials": config.search.n_trials,
                                       "n_epoch": config.search.n_epoch}, "train": {"n_epoch": config.train.n_epoch}}
    return out


def config(quick: bool) -> dict:
    default = str(REPO / "configs" / "default.yaml")
    if quick:
        return {"search": None, "pipeline_config": default, "startup_repeats": 1,
                "overrides": {"models": ["shared_bottom"], "dataset.options": {"n_rows": 4000, "n_users": 500, "n_items": 200},
                              "search.n_trials": 1, "search.n_epoch": 1, "train.n_epoch": 1}}
    # the default config with two of its five models: on a busy 2-core machine the local runner's 39 tasks of the
    # full default run take longer than this suite's time box; 18 tasks show the same per-task cost
    # pruning at docs/search.md's setting (16 trials x 10 epochs): with few epochs per trial there is little to prune
    return {"search": {"n_trials": 16, "n_epoch": 10, "pruners": "median"}, "pipeline_config": default,
            "startup_repeats": 3, "cold": True, "rounds": 2, "overrides": {"models": ["shared_bottom", "mmoe"]}}
