"""Part 3: entire-space CVR on synthetic-funnel (ESMM, Ma et al., SIGIR 2018).

Both arms see the same prepared data (``workflow.data.prepare``) and the pipeline's default architecture
(embed 16, bottom [128, 64], towers [32], dropout 0.1, Adam 1e-3, early stopping on validation):
- ESMM (``workflow.training.train.train``): pCTR and pCVR towers trained on all impressions through pCTCVR;
- the conventional CVR model: the same bottom and one tower, trained on clicked impressions only
  (label = conversion), early-stopped on clicked validation rows.
Both are scored on **all** test impressions against the generator's ground-truth pCVR: AUC with the true
pCVR as soft labels (the AUC expected if every impression were clicked and converted with its true pCVR),
Spearman correlation, log loss against the true probabilities, mean predicted / mean true pCVR and a
10-bin calibration error (ECE over quantile bins of the prediction), next to the usual AUC on clicked test
rows. The paper's claim: trained on clicks only, the CVR model is biased on the entire space; ESMM is not.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.environment import load_average


def soft_auc(p_true: np.ndarray, score: np.ndarray) -> float:
    """AUC when row i is positive with probability p_true[i]: positives weighted p, negatives 1 - p."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(score)), np.zeros(len(score))]
    return float(roc_auc_score(y, np.r_[score, score], sample_weight=np.r_[p_true, 1 - p_true]))


def calibration(p_true: np.ndarray, pred: np.ndarray, bins: int = 10) -> dict:
    order = np.argsort(pred, kind="stable")
    chunks = np.array_split(order, bins)
    ece = float(sum(len(c) * abs(pred[c].mean() - p_true[c].mean()) for c in chunks) / len(pred))
    curve = [[float(pred[c].mean()), float(p_true[c].mean())] for c in chunks]
    return {"mean_pred": float(pred.mean()), "mean_true": float(p_true.mean()),
            "pred_over_true": float(pred.mean() / p_true.mean()), "ece": ece, "curve": curve}


def scores(p_true: np.ndarray, pred: np.ndarray, click: np.ndarray, conv: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    from mtl_models.metrics import roc_auc

    eps = 1e-7
    q = np.clip(pred.astype(np.float64), eps, 1 - eps)
    clicked = click > 0.5
    return {"soft_auc_all": soft_auc(p_true, pred), "spearman_all": float(spearmanr(p_true, pred).statistic),
            "logloss_vs_true_all": float(-np.mean(p_true * np.log(q) + (1 - p_true) * np.log1p(-q))),
            "calibration_all": calibration(p_true, pred),
            "calibration_clicked": calibration(p_true[clicked], pred[clicked]),
            "auc_clicked_observed": float(roc_auc(conv[clicked], pred[clicked])),
            "soft_auc_clicked": soft_auc(p_true[clicked], pred[clicked])}


def _table(prepared: Path, split: str, spec, clicked_only: bool = False):
    import pyarrow.parquet as pq

    cols = spec.feature_names + ["click", "conversion", "true_pcvr", "true_pctr"]
    t = pq.read_table(prepared / f"{split}.parquet", columns=cols)
    d = {c: t.column(c).combine_chunks().to_numpy(zero_copy_only=False, writable=True) for c in cols}
    if clicked_only:
        keep = d["click"] > 0.5
        d = {c: v[keep] for c, v in d.items()}
    return d


def train_clicked_cvr(prepared: Path, spec, seed: int, cfg: dict, work: Path):
    """The conventional CVR model: SharedBottom with one tower, on clicked impressions only."""
    from mtl_models import MTLTrainer, SharedBottom, make_loader

    torch.manual_seed(seed)
    mlp = {"dims": [128, 64], "dropout": 0.1}
    model = SharedBottom(spec.to_features(embed_dim=16), ["classification"], mlp, [{"dims": [32], "dropout": 0.1}])
    tr, va = _table(prepared, "train", spec, True), _table(prepared, "val", spec, True)
    x = lambda d: {n: d[n] for n in spec.feature_names}  # noqa: E731
    train_dl = make_loader(x(tr), {"conversion": tr["conversion"]}, 1024, shuffle=True, seed=seed)
    val_dl = make_loader(x(va), {"conversion": va["conversion"]}, 8192)
    trainer = MTLTrainer(model, optimizer_params={"lr": 1e-3}, n_epoch=cfg["epochs"], earlystop_patience=2,
                         device="cpu", model_path=work, progress=False, seed=seed)
    trainer.fit(train_dl, val_dl)
    return trainer.model.eval(), int(len(tr["click"]))


def run(cfg: dict, log=print) -> dict:
    from workflow.data.feature_spec import FeatureSpec
    from workflow.data.prepare import prepare
    from workflow.training.artifacts import load_trained
    from workflow.training.train import train

    torch.set_num_threads(cfg.get("threads", 1))
    runs = []
    for seed in cfg["seeds"]:
        with tempfile.TemporaryDirectory(prefix="bench-esmm-") as tmp:
            prepared = Path(tmp) / "funnel"
            prepare("synthetic-funnel", prepared, seed=seed,
                    options={"n_rows": cfg["n_rows"], "n_users": cfg["n_users"], "n_items": cfg["n_items"]})
            spec = FeatureSpec.load(prepared / "feature_spec.json")
            test = _table(prepared, "test", spec)
            xt = {n: torch.from_numpy(test[n]) for n in spec.feature_names}
            t0 = time.perf_counter()
            res = train(prepared, "esmm", Path(tmp) / "esmm", n_epoch=cfg["epochs"], patience=2, device="cpu",
                        seed=seed, progress=False)
            model, _, _ = load_trained(Path(tmp) / "esmm")
            with torch.no_grad():
                p_esmm = model.predict_cvr(xt).numpy()
            esmm_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            cvr_model, n_clicked = train_clicked_cvr(prepared, spec, seed, cfg, Path(tmp) / "cvr")
            with torch.no_grad():
                p_cvr = cvr_model(xt)[:, 0].numpy()
            cvr_s = time.perf_counter() - t0
            truth = (test["true_pcvr"].astype(np.float64), test["click"], test["conversion"])
            run_ = {"seed": seed, "n_rows": cfg["n_rows"], "n_train_clicked": n_clicked, "n_test": len(p_cvr),
                    "esmm": {**scores(truth[0], p_esmm, truth[1], truth[2]), "seconds": round(esmm_s, 1),
                             "best_epoch": res.best_epoch, "test_metrics": res.test_metrics},
                    "cvr_clicked_only": {**scores(truth[0], p_cvr, truth[1], truth[2]), "seconds": round(cvr_s, 1)},
                    "load": load_average()}
            runs.append(run_)
            log(f"  seed {seed}: soft AUC all impressions ESMM {run_['esmm']['soft_auc_all']:.4f} vs clicked-only "
                f"{run_['cvr_clicked_only']['soft_auc_all']:.4f}; pred/true ESMM "
                f"{run_['esmm']['calibration_all']['pred_over_true']:.3f} vs "
                f"{run_['cvr_clicked_only']['calibration_all']['pred_over_true']:.3f}")
    return {"config": cfg, "runs": runs}


def config(quick: bool) -> dict:
    # fewer users and items than the generator's default (10k / 5k): enough clicks per id to learn pCVR
    if quick:
        return {"seeds": [0], "n_rows": 60_000, "n_users": 2_000, "n_items": 500, "epochs": 2}
    return {"seeds": [0], "n_rows": 400_000, "n_users": 2_000, "n_items": 500, "epochs": 4}
