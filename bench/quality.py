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
from bench.environment import load_average
from mtl_models import zoo

ADULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "adult"
TASKS = ["income", "never_married"]
# (label, bench_training model name, auxiliary weight for ours)
OUR_MODELS = [(m, m, None) for m in bt.MODELS] + [("AITM (calibration 0)", "AITM", 0.0)]
RECHUB_MODELS = bt.RECHUB_MODELS
PIPELINE_MODELS = zoo.names()
ENCODINGS = ["standard", "bins", "piecewise_linear", "periodic"]
ADULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "adult.yaml"


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
    """``configs/adult.yaml``'s search space: what ``mtlp run --config configs/adult.yaml`` searches; with
    ``encoding``, that numeric encoding fixed instead of searched."""
    import copy

    import yaml

    space = copy.deepcopy(yaml.safe_load(ADULT_CONFIG.read_text())["search"]["space"])
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


def _tuned_model(prepared: Path, work: Path, m: str, cfg: dict, encoding: str | None = None) -> tuple[dict, list]:
    from workflow.search import search
    from workflow.training.train import train

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    tag = f"{m}-{encoding or 'searched'}"
    with _quiet():
        res = search(prepared, m, work / f"search-{tag}", n_trials=cfg["tuned_trials"],
                     n_epoch=cfg["tuned_search_epochs"], patience=cfg.get("tuned_patience", 2), pruner="median",
                     seed=42, search_space=tuned_space(encoding), device="cpu", progress=False, plots=False)
    info = {"best_params": res.best_params, "best_val": res.best_value, "n_complete": res.n_complete,
            "n_pruned": res.n_pruned, "epochs_spent": res.epochs_spent, "seconds": round(time.perf_counter() - t0, 1)}
    rows = []
    for seed in cfg.get("tuned_seeds", cfg["seeds"]):
        with _quiet():
            tr = train(prepared, m, work / f"train-{tag}-{seed}", params=res.best_params,
                       n_epoch=cfg["tuned_train_epochs"], patience=cfg.get("tuned_patience", 2), device="cpu",
                       seed=seed, progress=False)
        rows.append({"model": m, "impl": "mtl-pipeline tuned", "seed": seed, "val_score": tr.best_score,
                     "table": "encoding" if encoding else "pipeline",
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
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

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
    return {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.items()},
            "fixed_config": {"embed": bt.EMBED, "mlp": bt.DIMS, "tower": bt.TOWER, "batch": bt.BATCH, "lr": bt.LR,
                             "norm": "batch", "numeric": "16 train-quantile bins"},
            "rows": rows, "tuned": tuned, "tuned_space": tuned_space()}


QUICK = {"seeds": [0], "epochs": 1, "models": ["SharedBottom", "MMOE"], "tuned_models": ["mmoe"], "tuned_trials": 2,
         "tuned_search_epochs": 1, "tuned_train_epochs": 2, "encodings": ["piecewise_linear"],
         "encoding_model": "shared_bottom", "workers": 2}
# table B/C's budget is configs/adult.yaml's (8 trials x <= 6 epochs, then <= 15 epochs with patience 4)
FULL = {"seeds": [0, 1, 2], "epochs": 3, "models": [m[0] for m in OUR_MODELS], "tuned_models": PIPELINE_MODELS,
        "tuned_trials": 8, "tuned_search_epochs": 6, "tuned_train_epochs": 15, "tuned_patience": 4,
        "tuned_seeds": [0, 1, 2], "encodings": ENCODINGS, "encoding_model": "shared_bottom", "workers": 3}


def config(quick: bool) -> dict:
    cfg = dict(QUICK if quick else FULL)
    cfg["data_dir"] = str(ADULT)
    return cfg
