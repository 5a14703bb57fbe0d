"""The same call gives Torch-RecHub's quality: with its parameter dicts (no ``"norm"`` key) our SharedBottom and
MMOE reach Torch-RecHub 0.9.0's test AUC on UCI Adult, trained side by side here.

Config (issue 19): tasks income > 50K and never-married; 13 sparse features (every column but marital-status,
numeric ones in 16 train-quantile bins: ``bench.bench_training.load_adult``) plus 5 standardised dense ones
(the numeric columns but fnlwgt, a census sampling weight); embeddings 16 wide; bottom / experts [128, 64],
towers [32], dropout 0.1; Adam lr 1e-3, batch 1024, 4 epochs, no early stopping; trained on adult.data,
tested on adult.test. Both libraries see the same rows and features, with the same seeds.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from _trainer_helpers import one_thread

REPO = Path(__file__).resolve().parents[1]
ADULT = Path(os.environ.get("MTLP_SHARED_DATA", REPO.parent / "shared" / "data")) / "adult"
DENSE = ["age", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
TASKS = ["income", "never_married"]
MLP = {"dims": [128, 64], "dropout": 0.1}  # Torch-RecHub's keys only: BatchNorm is each library's default
TOWERS = [{"dims": [32], "dropout": 0.1}] * 2
EMBED, BATCH, LR, EPOCHS, N_EXPERT = 16, 1024, 1e-3, 4, 8
SEEDS = [0, 1]
TOLERANCE = 0.002

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (ADULT / "adult.data").is_file(), reason=f"Adult raw files not at {ADULT}")]


def load() -> dict:
    """Train / test columns: the 13 sparse ids of bench's loader, the 5 dense columns standardised on train."""
    from bench import bench_training as bt

    x, y, xt, yt, sparse, vocab = bt.load_adult(ADULT)
    read = dict(header=None, names=bt.COLUMNS, sep=",", skipinitialspace=True, usecols=DENSE)
    train = pd.read_csv(ADULT / "adult.data", **read).astype(np.float32)
    test = pd.read_csv(ADULT / "adult.test", skiprows=1, **read).astype(np.float32)
    mean, std = train.mean(), train.std()
    for c in DENSE:  # beside the binned sparse column of the same name
        x[f"{c}_z"] = ((train[c] - mean[c]) / std[c]).to_numpy(np.float32)
        xt[f"{c}_z"] = ((test[c] - mean[c]) / std[c]).to_numpy(np.float32)
    return {"x": x, "y": y, "xt": xt, "yt": yt, "sparse": sparse, "vocab": vocab}


def train_ours(name: str, data: dict, seed: int, tmp: Path) -> list[float]:
    """-> test AUC per task, through ``MTLTrainer`` and ``scores[i]`` (the path users run)."""
    from mtl_models import MMOE, DenseFeature, MTLTrainer, SharedBottom, SparseFeature, make_loader

    torch.manual_seed(seed)
    features = [SparseFeature(c, data["vocab"][c], EMBED) for c in data["sparse"]] + [DenseFeature(f"{c}_z") for c in DENSE]
    tt = ["classification"] * 2
    model = (SharedBottom(features, tt, MLP, TOWERS) if name == "SharedBottom"
             else MMOE(features, tt, N_EXPERT, MLP, TOWERS))
    train = make_loader(data["x"], {t: data["y"][t] for t in TASKS}, BATCH, shuffle=True, seed=seed)
    test = make_loader(data["xt"], {t: data["yt"][t] for t in TASKS}, 8192)
    trainer = MTLTrainer(model, optimizer_params={"lr": LR}, n_epoch=EPOCHS, earlystop_patience=EPOCHS + 1,
                         device="cpu", model_path=tmp, progress=False, seed=seed)
    trainer.fit(train)
    scores = trainer.evaluate(trainer.model, test)
    return [scores[0], scores[1]]


def train_rechub(name: str, data: dict, seed: int, tmp: Path) -> list[float]:
    """-> test AUC per task from Torch-RecHub 0.9.0's own model, data generator and trainer."""
    from torch_rechub.basic.features import DenseFeature, SparseFeature
    from torch_rechub.models import multi_task
    from torch_rechub.trainers import MTLTrainer
    from torch_rechub.utils.data import DataGenerator

    torch.manual_seed(seed)
    features = [SparseFeature(c, data["vocab"][c], EMBED) for c in data["sparse"]] + [DenseFeature(f"{c}_z") for c in DENSE]
    tt = ["classification"] * 2
    model = (multi_task.SharedBottom(features, tt, MLP, TOWERS) if name == "SharedBottom"
             else multi_task.MMOE(features, tt, N_EXPERT, MLP, TOWERS))
    y, yt = (np.stack([d[t] for t in TASKS], 1) for d in (data["y"], data["yt"]))  # [N, 2]
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):  # its progress bars
        train, _, _ = DataGenerator(data["x"], y).generate_dataloader(
            x_val=data["xt"], y_val=yt, x_test=data["xt"], y_test=yt, batch_size=BATCH)
        _, test, _ = DataGenerator(data["xt"], yt).generate_dataloader(
            x_val=data["xt"], y_val=yt, x_test=data["xt"], y_test=yt, batch_size=8192)
        trainer = MTLTrainer(model, tt, optimizer_params={"lr": LR, "weight_decay": 0.0}, n_epoch=EPOCHS,
                             device="cpu", model_path=str(tmp))
        for _ in range(EPOCHS):
            trainer.train_one_epoch(train)
        return [float(s) for s in trainer.evaluate(model, test)]


@pytest.fixture(scope="module")
def adult() -> dict:
    return load()


@pytest.mark.parametrize("name", ["SharedBottom", "MMOE"])
def test_default_mlps_reach_torch_rechubs_test_auc_on_adult(name: str, adult: dict, tmp_path: Path) -> None:
    """Mean test AUC over the seeds, per task: ours >= Torch-RecHub's - 0.002 (seeds 0-3 measured in
    docs/training.md: an AUC moves by up to 0.0018 between seeds; the libraries' means agree to 0.0002)."""
    with one_thread():  # the figures are AUCs, not speed; one thread is steadiest on a shared machine
        ours = np.mean([train_ours(name, adult, s, tmp_path / f"ours{s}") for s in SEEDS], axis=0)  # [2]
        theirs = np.mean([train_rechub(name, adult, s, tmp_path / f"trh{s}") for s in SEEDS], axis=0)  # [2]
    for task, a, b in zip(TASKS, ours, theirs):
        assert a >= b - TOLERANCE, f"{name} {task}: ours {a:.4f} < Torch-RecHub {b:.4f} - {TOLERANCE}"
        assert a > 0.85  # both learned: chance is 0.5; gradient boosting reaches about 0.93 / 0.97
