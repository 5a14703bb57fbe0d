"""Part 1: quality on UCI Adult (tasks income > 50K and never-married), test AUC per task over seeds.

Table A, one fixed config (the one of bench/bench_training.py: every column a sparse feature, numerics in 16
train-quantile bins, embed 16, MLP [128, 64] with BatchNorm, towers [32], Adam lr 1e-3, batch 1024, a fixed
number of epochs, no early stopping) for: every mtl_models model, the same model in Torch-RecHub 0.9.0, a
single-task baseline per task (SharedBottom with one tower: the same MLP, one task) and scikit-learn's
HistGradientBoostingClassifier (one model per task, raw columns, categoricals native) — trained on adult.data,
tested on adult.test.

Table B, the pipeline's tuned models: ``workflow.data.prepare`` (adult: train/val split of adult.data, test =
adult.test), ``workflow.search`` per model with ``configs/adult.yaml``'s search space (the numeric encoding
searched with the rest) and a fixed budget, then ``workflow.training.train`` with the best params over seeds; the
champion is chosen on validation (mean val AUC), reported on test, next to HistGradientBoosting trained on the
same prepared train split. Table C, one row per numeric encoding: one model searched the same way with the
encoding fixed (``standard`` = today's standardised / log1p values fed as they are).

Table D, defaults only: ``configs/adult.yaml`` as it ships, which has no search space (the default space of
``workflow.search.space`` fitted to the data), with its own budget and training, over the same seeds, against
HistGradientBoosting on the same prepared split. ``--set 'tables=["defaults"]'`` runs table D alone and keeps
tables A-C from the published results (they say when they were measured).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench import bench_training as bt
from bench.environment import environment, load_average
from mtl_models import zoo

ADULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "adult"
TASKS = ["income", "never_married"]
# (label, bench_training model name, auxiliary weight for ours)
OUR_MODELS = [(m, m, None) for m in bt.MODELS] + [("AITM (calibration 0)", "AITM", 0.0)]
RECHUB_MODELS = bt.RECHUB_MODELS
PIPELINE_MODELS = zoo.names()
ENCODINGS = ["standard", "bins", "piecewise_linear", "periodic"]
ADULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "adult.yaml"
PUBLISHED = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "results.json"
# configs/adult.yaml's search space before the default space took it over: tables B and C keep measuring it
TUNED_SPACE = {
    "common": {"numeric_encoding": ["bins", "piecewise_linear", "periodic"], "bin_source": "tree", "n_bins": [8, 16, 32],
               "numeric_embed_dim": [8, 16], "periodic_sigma": {"low": 0.05, "high": 1.0, "log": True},
               "embed_dim": [8, 16], "lr": {"low": 5.0e-4, "high": 3.0e-3, "log": True},
               "lr_schedule": ["constant", "cosine"], "optimizer": "adamw",
               "weight_decay": {"low": 1.0e-5, "high": 1.0e-2, "log": True}, "dropout": {"low": 0.0, "high": 0.3},
               "norm": "none", "batch_size": 256, "weighting": ["equal", "uwl"],
               "tower_dims": {"depth": [1, 2], "widths": [32, 64]}},
    "shared_bottom": {"bottom_dims": {"depth": [1, 2], "widths": [64, 128, 256]}},
    "mmoe": {"n_expert": {"low": 2, "high": 4}, "expert_dims": {"depth": [1, 2], "widths": [64, 128]}},
    "ple": {"n_level": 1, "n_expert_specific": {"low": 1, "high": 2}, "n_expert_shared": {"low": 1, "high": 2},
            "expert_dims": {"depth": [1, 2], "widths": [64, 128]}},
    "aitm": {"bottom_dims": {"depth": [1, 2], "widths": [64, 128, 256]}, "attention_dim": [16, 32]}}


def _quiet():
    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def load(data_dir: Path = ADULT):
    x, y, xt, yt, feats, vocab = bt.load_adult(Path(data_dir))
    return {"x": x, "y": y, "xt": xt, "yt": yt}, feats, vocab


def train_ours(name: str, data, feats, vocab, seed: int, epochs: int, aux=None, tasks=TASKS) -> dict[str, float]:
    """An mtl_models model through MTLTrainer; ``tasks`` of one name = the single-task baseline."""
    from mtl_models import MTLTrainer, SharedBottom, SparseFeature, make_loader

    torch.manual_seed(seed)
    if len(tasks) == 1:
        features = [SparseFeature(c, vocab[c], bt.EMBED) for c in feats]
        model = SharedBottom(features, ["classification"], {"dims": bt.DIMS, "norm": "batch"},
                             [{"dims": bt.TOWER, "norm": "batch"}])
    else:
        model = bt.ours(name, feats, vocab)
    y = {t: data["y"][t] for t in tasks}
    yt = {t: data["yt"][t] for t in tasks}
    loader = make_loader(data["x"], y, bt.BATCH, shuffle=True, seed=seed)
    test = make_loader(data["xt"], yt, 8192)
    with tempfile.TemporaryDirectory(prefix="bench-q-") as tmp:
        trainer = MTLTrainer(model, optimizer_params={"lr": bt.LR}, n_epoch=epochs, earlystop_patience=epochs + 1,
                             device="cpu", model_path=tmp, progress=False, seed=seed, auxiliary_weight=aux)
        trainer.fit(loader)
        # fixed epochs, as Torch-RecHub's loop: evaluate the last epoch's weights
        s = trainer.evaluate(trainer.model, test)
    return {t: float(s[t]["auc"]) for t in tasks}


def train_rechub(name: str, data, feats, vocab, seed: int, epochs: int) -> dict[str, float]:
    """Torch-RecHub 0.9.0's model and trainer at the same config (bench_training's builder and label layout)."""
    from torch_rechub.trainers import MTLTrainer as RTrainer
    from torch_rechub.utils.data import DataGenerator as RGen

    torch.manual_seed(seed)
    model = bt.rechub(name, feats, vocab)
    cols, types = bt.rechub_labels(name)
    y, yt = cols(data["y"]), cols(data["yt"])
    with _quiet(), tempfile.TemporaryDirectory(prefix="bench-q-trh-") as tmp:
        train_dl, _, _ = RGen(data["x"], y).generate_dataloader(x_val=data["xt"], y_val=yt, x_test=data["xt"],
                                                                 y_test=yt, batch_size=bt.BATCH)
        _, test_dl, _ = RGen(data["xt"], yt).generate_dataloader(x_val=data["xt"], y_val=yt, x_test=data["xt"],
                                                                 y_test=yt, batch_size=8192)
        trainer = RTrainer(model, types, optimizer_params={"lr": bt.LR, "weight_decay": 0.0}, n_epoch=epochs,
                           device="cpu", model_path=tmp)
        for _ in range(epochs):
            trainer.train_one_epoch(train_dl)
        s = trainer.evaluate(model, test_dl)
    s = [s[1], s[2]] if name == "ESMM" else s
    return {t: float(v) for t, v in zip(TASKS, s)}


def _raw_adult(data_dir: Path):
    read = dict(header=None, names=bt.COLUMNS, sep=",", skipinitialspace=True, na_values="?", keep_default_na=False)
    train = pd.read_csv(data_dir / "adult.data", **read)
    test = pd.read_csv(data_dir / "adult.test", skiprows=1, **read)
    frames, labels = [], []
    for df in (train, test):
        labels.append({"income": df["income"].str.rstrip(".").eq(">50K").to_numpy(np.float32),
                       "never_married": df["marital-status"].eq("Never-married").to_numpy(np.float32)})
        frames.append(df.drop(columns=["income", "marital-status"]))
    for c in frames[0].columns:  # categoricals with the training categories, numerics as numbers
        if c not in bt.NUMERIC:
            cats = pd.Index(frames[0][c].dropna().unique())
            for f in frames:
                f[c] = pd.Categorical(f[c], categories=cats)
    return frames[0], labels[0], frames[1], labels[1]


def hgb_auc(x, y, xt, yt, seed: int, tasks=TASKS) -> dict[str, float]:
    """scikit-learn's HistGradientBoostingClassifier with its defaults, one model per task."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    out = {}
    for t in tasks:
        clf = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=seed)
        clf.fit(x, y[t])
        out[t] = float(roc_auc_score(yt[t], clf.predict_proba(xt)[:, 1]))
    return out


def tuned_space(encoding: str | None = None) -> dict:
    """The hand-tuned Adult space (``TUNED_SPACE``, tables B and C); with ``encoding``, that numeric encoding
    fixed instead of searched."""
    import copy

    space = copy.deepcopy(TUNED_SPACE)
    if encoding is not None:
        space.setdefault("common", {})["numeric_encoding"] = encoding
    return space


def _prepared_frame(prepared: Path, split: str, spec):
    import pyarrow.parquet as pq

    table = pq.read_table(prepared / f"{split}.parquet").to_pandas()
    x = table[spec.feature_names].copy()
    for f in spec.sparse_features:
        x[f.name] = pd.Categorical(x[f.name])
    return x, {t: table[t].to_numpy(np.float32) for t in spec.label_names}


def defaults_budget() -> dict:
    """``configs/adult.yaml`` as it ships, read as ``mtlp run`` reads it: its search budget, its training, and its
    search space (none: the default space fitted to the data) with trials at the training's batch size."""
    import yaml

    from pipeline.config import load_config
    from workflow.search.space import with_default

    cfg = yaml.safe_load(ADULT_CONFIG.read_text())
    s, t = cfg.get("search", {}), cfg.get("train", {})
    # the model list as `mtlp run` resolves it (the config says `{exclude: [esmm]}`, not names)
    return {"models": load_config(ADULT_CONFIG).models, "n_trials": s.get("n_trials", 4), "n_epoch": s.get("n_epoch", 2),
            "pruner": s.get("pruner", "median"), "train_epochs": t.get("n_epoch", 5), "patience": t.get("patience", 2),
            "batch_size": t.get("batch_size", 1024), "config_space": s.get("space") or None,
            "space": with_default(s.get("space") or None, "batch_size", t.get("batch_size", 1024))}


def _tuned_model(prepared: Path, work: Path, m: str, cfg: dict, encoding: str | None = None,
                 defaults: dict | None = None) -> tuple[dict, list]:
    """One model searched and trained over seeds: with ``configs/adult.yaml``'s former tuned space (tables B and
    C), or with ``defaults`` (``defaults_budget()``: the config as it ships, the pipeline's own budget)."""
    from workflow.search import search
    from workflow.training.train import train

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    tag = f"{m}-{'defaults' if defaults else encoding or 'searched'}"
    if defaults:
        budget = dict(n_trials=defaults["n_trials"], n_epoch=defaults["n_epoch"], pruner=defaults["pruner"],
                      search_space=defaults["space"])
        fit = dict(n_epoch=defaults["train_epochs"], patience=defaults["patience"])
        fixed = {"batch_size": defaults["batch_size"]}
    else:
        budget = dict(n_trials=cfg["tuned_trials"], n_epoch=cfg["tuned_search_epochs"], pruner="median",
                      patience=cfg.get("tuned_patience", 2), search_space=tuned_space(encoding))
        fit = dict(n_epoch=cfg["tuned_train_epochs"], patience=cfg.get("tuned_patience", 2))
        fixed = {}
    with _quiet():
        res = search(prepared, m, work / f"search-{tag}", seed=42, device="cpu", progress=False, plots=False, **budget)
    info = {"best_params": res.best_params, "best_val": res.best_value, "n_complete": res.n_complete,
            "n_pruned": res.n_pruned, "epochs_spent": res.epochs_spent, "seconds": round(time.perf_counter() - t0, 1)}
    rows = []
    for seed in cfg.get("tuned_seeds", cfg["seeds"]):
        with _quiet():
            tr = train(prepared, m, work / f"train-{tag}-{seed}", params={**res.best_params, **fixed}, device="cpu",
                       seed=seed, progress=False, **fit)
        rows.append({"model": m, "impl": "mtl-pipeline defaults" if defaults else "mtl-pipeline tuned", "seed": seed,
                     "val_score": tr.best_score,
                     "table": "defaults" if defaults else "encoding" if encoding else "pipeline",
                     "encoding": res.best_params.get("numeric_encoding", "standard"),
                     "auc": {t: float(tr.test_metrics[t]["auc"]) for t in TASKS},
                     "best_epoch": tr.best_epoch, "seconds": round(tr.train_seconds, 1), "load": load_average()})
    return info, rows


def run_tuned(cfg: dict, log, pool, then=lambda: None) -> dict:
    """Submit the searches to ``pool``, call ``then`` (which may queue more work behind them), collect."""
    from workflow.data.feature_spec import FeatureSpec
    from workflow.data.prepare import prepare

    rows, searches = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-tuned-") as tmp:
        prepared = Path(tmp) / "adult"
        prepare("adult", prepared, data_dir=str(cfg["data_dir"]), seed=42)
        spec = FeatureSpec.load(prepared / "feature_spec.json")
        jobs = [(m, None) for m in cfg["tuned_models"]] + [(cfg["encoding_model"], e) for e in cfg.get("encodings", [])]
        # the pipeline's five searches first (the longer ones), then one per encoding
        futures = {(m, e): pool.submit(_tuned_model, prepared, Path(tmp), m, cfg, e) for m, e in jobs}
        then()
        x, y = _prepared_frame(prepared, "train", spec)
        xt, yt = _prepared_frame(prepared, "test", spec)
        for seed in cfg.get("tuned_seeds", cfg["seeds"]):
            rows.append({"model": "HistGradientBoosting", "impl": "sklearn (prepared split)", "seed": seed,
                         "auc": hgb_auc(x, y, xt, yt, seed), "load": load_average()})
        for (m, e), fut in futures.items():
            key = m if e is None else f"{m} [{e}]"
            searches[key], model_rows = fut.result()
            rows += model_rows
            log(f"  tuned {key}: search best val {searches[key]['best_val']:.4f} in {searches[key]['seconds']}s; "
                "test " + ", ".join(str(r["auc"]) for r in model_rows))
    return {"rows": rows, "searches": searches}


def run_defaults(cfg: dict, log, pool) -> dict:
    """The defaults-only table: each model of ``configs/adult.yaml`` searched and trained as the config ships (no
    search space), over ``tuned_seeds``, beside HistGradientBoosting on the same prepared train split."""
    from workflow.data.feature_spec import FeatureSpec
    from workflow.data.prepare import prepare

    budget = {**defaults_budget(), **cfg.get("defaults_overrides", {})}  # --quick: a smaller budget
    env = environment()  # at the start, as every part's record
    rows, searches = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-defaults-") as tmp:
        prepared = Path(tmp) / "adult"
        prepare("adult", prepared, data_dir=str(cfg["data_dir"]), seed=42)
        spec = FeatureSpec.load(prepared / "feature_spec.json")
        models = cfg.get("defaults_models") or budget["models"]
        futures = {m: pool.submit(_tuned_model, prepared, Path(tmp), m, cfg, None, budget) for m in models}
        x, y = _prepared_frame(prepared, "train", spec)
        xt, yt = _prepared_frame(prepared, "test", spec)
        for seed in cfg.get("tuned_seeds", cfg["seeds"]):
            rows.append({"model": "HistGradientBoosting", "impl": "sklearn (prepared split)", "seed": seed,
                         "table": "defaults", "auc": hgb_auc(x, y, xt, yt, seed), "load": load_average()})
        for m, fut in futures.items():
            searches[m], model_rows = fut.result()
            rows += model_rows
            log(f"  defaults {m}: search best val {searches[m]['best_val']:.4f} in {searches[m]['seconds']}s; "
                "test " + ", ".join(str(r["auc"]) for r in model_rows))
    return {"rows": rows, "searches": searches, "budget": budget, "seeds": cfg.get("tuned_seeds", cfg["seeds"]),
            "env": env}


def _previous_part1(path: Path) -> dict:
    """The last published part 1 record (``docs/benchmarks/results.json``), whose tables a defaults-only run keeps."""
    import json

    rec = json.loads(Path(path).read_text())["parts"]["1"]
    # a record that was itself a defaults-only run carries tables A-C's own measurement: keep that one
    carried = rec["result"].get("carried") or {k: rec.get(k) for k in ("env_start", "seconds", "load_average_end", "mode")}
    return {**rec["result"], "carried": carried}


_DATA: dict = {}


def _job(kind: str, label: str, name: str, aux, seed: int, epochs: int, tasks) -> dict:
    torch.set_num_threads(1)
    data, feats, vocab = _DATA["data"], _DATA["feats"], _DATA["vocab"]
    t0 = time.perf_counter()
    if kind == "rechub":
        auc, impl = train_rechub(name, data, feats, vocab, seed, epochs), "Torch-RecHub 0.9.0"
    else:
        auc, impl = train_ours(name, data, feats, vocab, seed, epochs, aux, tasks), "mtl_models"
    return {"model": label, "impl": impl, "seed": seed, "auc": auc, "seconds": round(time.perf_counter() - t0, 1),
            "load": load_average()}


def run(cfg: dict, log=print) -> dict:
    """Tables A-C (``tables`` holds "fixed"), and the defaults-only table ("defaults"). Without "fixed", the other
    tables are carried over from ``previous`` (the published results) and say when they were measured."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    tables = cfg.get("tables", ["fixed", "defaults"])
    if "fixed" not in tables:
        out = _previous_part1(Path(cfg.get("previous", PUBLISHED)))
        with ProcessPoolExecutor(max_workers=cfg.get("workers", 1), mp_context=mp.get_context("fork")) as pool:
            out["defaults"] = run_defaults(cfg, log, pool)
        return out
    torch.set_num_threads(1)
    _DATA["data"], _DATA["feats"], _DATA["vocab"] = load(Path(cfg["data_dir"]))
    epochs = cfg["epochs"]
    jobs = []
    for seed in cfg["seeds"]:
        for label, name, aux in OUR_MODELS:
            if label in cfg["models"]:
                jobs.append(("ours", label, name, aux, seed, epochs, TASKS))
                if label in RECHUB_MODELS:
                    jobs.append(("rechub", label, name, None, seed, epochs, TASKS))
        for t in TASKS:
            jobs.append(("ours", f"single-task MLP ({t})", "SharedBottom", None, seed, epochs, [t]))
    rows = []
    # independent trainings in worker processes (1 torch thread each): the figures here are AUCs, not speed
    with ProcessPoolExecutor(max_workers=cfg.get("workers", 1), mp_context=mp.get_context("fork")) as pool:
        futures: list = []

        def table_a() -> None:  # queued behind the tuned searches, the longest jobs
            futures.extend(pool.submit(_job, *j) for j in jobs)

        tuned = run_tuned(cfg, log, pool, then=table_a) if cfg.get("tuned_models") else table_a()
        x, y, xt, yt = _raw_adult(Path(cfg["data_dir"]))
        for seed in cfg["seeds"]:
            rows.append({"model": "HistGradientBoosting", "impl": "sklearn", "seed": seed,
                         "auc": hgb_auc(x, y, xt, yt, seed), "load": load_average()})
        for i, f in enumerate(futures):
            rows.append(f.result())
            log(f"  {i + 1}/{len(futures)} {rows[-1]}")
        defaults = run_defaults(cfg, log, pool) if "defaults" in tables else None
    return {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.items()},
            "fixed_config": {"embed": bt.EMBED, "mlp": bt.DIMS, "tower": bt.TOWER, "batch": bt.BATCH, "lr": bt.LR,
                             "norm": "batch", "numeric": "16 train-quantile bins"},
            "rows": rows, "tuned": tuned, "tuned_space": tuned_space(), **({"defaults": defaults} if defaults else {})}


QUICK = {"seeds": [0], "epochs": 1, "models": ["SharedBottom", "MMOE"], "tuned_models": ["mmoe"], "tuned_trials": 2,
         "tuned_search_epochs": 1, "tuned_train_epochs": 2, "encodings": ["piecewise_linear"],
         "encoding_model": "shared_bottom", "workers": 2, "defaults_models": ["mmoe"],
         "defaults_overrides": {"n_trials": 2, "n_epoch": 1, "train_epochs": 2}}
# table B/C's budget is configs/adult.yaml's (8 trials x <= 6 epochs, then <= 15 epochs with patience 4)
FULL = {"seeds": [0, 1, 2], "epochs": 3, "models": [m[0] for m in OUR_MODELS], "tuned_models": PIPELINE_MODELS,
        "tuned_trials": 8, "tuned_search_epochs": 6, "tuned_train_epochs": 15, "tuned_patience": 4,
        "tuned_seeds": [0, 1, 2], "encodings": ENCODINGS, "encoding_model": "shared_bottom", "workers": 3}


def config(quick: bool) -> dict:
    cfg = dict(QUICK if quick else FULL)
    cfg["data_dir"] = str(ADULT)
    return cfg
