"""MTLTrainer: the documented flow for every zoo model, metric keys, callbacks, early stopping,
checkpoints, NaN detection, devices and ONNX parity."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from _trainer_helpers import MODEL_NAMES, build_model, make_data, one_thread
from mtl_models import Callback, DataGenerator, MTLTrainer, StopTraining, make_loader, resolve_device
from mtl_models.trainer.checkpoint import load_checkpoint


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def data():
    return make_data(2400)


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_fit_start(self, trainer):
        self.events.append(("start", None))

    def on_epoch_end(self, trainer, epoch, metrics):
        self.events.append(("epoch", epoch, metrics))

    def on_fit_end(self, trainer):
        self.events.append(("end", trainer.best_epoch))


# ONNX export takes seconds per model: one model stays in the fast set, the other four are marked slow
FLOW_PARAMS = [pytest.param(n, marks=() if n == "MMOE" else pytest.mark.slow) for n in MODEL_NAMES]


@pytest.mark.parametrize("name", FLOW_PARAMS)
def test_documented_flow_all_models(name, data, tmp_path):
    x, y = data
    dg = DataGenerator(x, y)
    train_dl, val_dl, test_dl = dg.generate_dataloader(split_ratio=[0.7, 0.1], batch_size=256)
    model = build_model(name)
    rec = Recorder()
    trainer = MTLTrainer(model=model, task_types=["classification", "classification"],
                         optimizer_params={"lr": 0.01, "weight_decay": 0.0001}, adaptive_params={"method": "uwl"},
                         n_epoch=3, earlystop_patience=10, device="auto", model_path=tmp_path / "saved" / "m",
                         callbacks=[rec], progress=False)
    trainer.fit(train_dl, val_dl)
    scores = trainer.evaluate(trainer.model, test_dl)
    assert set(scores) >= {"click", "conversion"}
    for task in ("click", "conversion"):
        assert set(scores[task]) == {"auc", "logloss"} and 0.7 < scores[task]["auc"] <= 1.0
    if name == "ESMM":  # pCVR judged on clicked impressions only
        assert set(scores["cvr"]) == {"auc", "logloss"} and 0.5 < scores["cvr"]["auc"] <= 1.0
    else:
        assert set(scores) == {"click", "conversion"}
    # Torch-RecHub's scores[i]: task i's AUC, in task order (ESMM's extra "cvr" has no position)
    assert [scores[0], scores[1]] == [scores["click"]["auc"], scores["conversion"]["auc"]] == scores.primary()
    with pytest.raises(IndexError, match="out of range: the model has 2 tasks"):
        scores[2]

    onnx_path = trainer.export_onnx(tmp_path / f"{name}.onnx")
    preds = trainer.predict(trainer.model, test_dl)  # the loader also yields labels
    assert preds.shape == (len(test_dl.y), 2) and preds.dtype == np.float32
    assert np.all((preds >= 0) & (preds <= 1))
    sess = ort.InferenceSession(str(onnx_path))
    assert [i.name for i in sess.get_inputs()] == [f.name for f in model.features]
    onnx_out = sess.run(None, {k: v.numpy() for k, v in test_dl.x.items()})[0]
    assert onnx_out.shape == preds.shape and np.abs(onnx_out - preds).max() <= 1e-5

    assert (tmp_path / "saved" / "m" / "best.pt").exists() and (tmp_path / "saved" / "m" / "last.pt").exists()
    kinds = [e[0] for e in rec.events]
    assert kinds == ["start", "epoch", "epoch", "epoch", "end"]
    metrics = rec.events[1][2]
    for key in ("train/click/loss", "train/conversion/loss", "train/loss", "val/click/auc", "val/click/logloss",
                "val/conversion/auc", "val/monitor", "weight/click", "weight/conversion"):
        assert key in metrics and math.isfinite(metrics[key])
    assert metrics["val/monitor"] == pytest.approx((metrics["val/click/auc"] + metrics["val/conversion/auc"]) / 2)
    assert len(trainer.history) == 3 and trainer.history[0] == metrics


@pytest.mark.slow
def test_compiled_training_matches_eager(data, tmp_path):
    """``compile=True`` (Inductor) trains the same model as eager: per-epoch losses and validation AUCs agree to
    float32 noise, and the best checkpoint holds the plain model's keys (no ``_orig_mod.`` prefix). The last batch
    of each epoch is smaller and below the table-product size rule, so a second graph is compiled on the way.

    The MLPs here have no BatchNorm: with it, two eager runs whose initial weights differ by a relative 1e-6 gave
    the same losses to 4 decimals but validation AUCs 0.008-0.026 apart after the first epoch (running statistics of
    7 steps), so AUCs cannot show float32 noise; tests/test_fast_paths.py compares the compiled BatchNorm graphs'
    outputs and gradients with eager's directly."""
    import torch._dynamo

    from _trainer_helpers import features
    from mtl_models import SharedBottom

    def unnormalised() -> SharedBottom:
        torch.manual_seed(0)
        return SharedBottom(features(), ["classification"] * 2, bottom_params={"dims": [32, 16], "norm": None},
                            tower_params_list=[{"dims": [8], "norm": None}] * 2)

    x, y = data
    train_dl, val_dl, _ = DataGenerator(x, y).generate_dataloader(split_ratio=[0.7, 0.1], batch_size=256)
    assert len(train_dl.y) % 256 != 0
    runs = {}
    for compiled in (False, True):
        torch._dynamo.reset()
        trainer = MTLTrainer(unnormalised(), optimizer_params={"lr": 0.01}, n_epoch=2, device="cpu",
                             model_path=tmp_path / str(compiled), progress=False, compile=compiled, seed=0)
        trainer.fit(train_dl, val_dl)
        runs[compiled] = trainer
    for eager_epoch, compiled_epoch in zip(runs[False].history, runs[True].history):
        for key in ("train/loss", "val/click/auc", "val/conversion/auc"):
            assert compiled_epoch[key] == pytest.approx(eager_epoch[key], abs=2e-3), key
    saved = load_checkpoint(tmp_path / "True" / "best.pt")["model"]
    assert set(saved) == set(unnormalised().state_dict())


def test_compile_takes_a_flag_or_torch_compile_arguments(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: calls.append(kwargs) or model)
    for flag in (True, {"mode": "max-autotune", "dynamic": False}, False, None):
        MTLTrainer(build_model("MMOE"), device="cpu", model_path=tmp_path, progress=False, compile=flag)
    assert calls == [{}, {"mode": "max-autotune", "dynamic": False}]  # False and None leave the model eager
    with pytest.raises(TypeError, match="compile must be a bool or a dict"):
        MTLTrainer(build_model("MMOE"), device="cpu", model_path=tmp_path, progress=False, compile="max-autotune")


def test_losses_esmm_targets_and_aitm_calibration(tmp_path):
    esmm = MTLTrainer(build_model("ESMM"), device="cpu", model_path=tmp_path, progress=False)
    y = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])  # conversion without click is not a CTCVR positive
    assert esmm.model.training_targets(y).tolist() == [[1, 1], [0, 0], [1, 0]]
    pred = torch.tensor([[0.9, 0.2], [0.3, 0.1], [0.6, 0.5]])
    expected = torch.nn.functional.binary_cross_entropy(pred, y, reduction="none").mean(0)
    assert torch.allclose(esmm.task_losses(pred, y), expected)
    aitm = MTLTrainer(build_model("AITM"), device="cpu", model_path=tmp_path, progress=False)
    assert aitm.auxiliary_weight == 0.6
    assert MTLTrainer(build_model("AITM"), device="cpu", model_path=tmp_path, progress=False,
                      auxiliary_weight=0.1).auxiliary_weight == 0.1
    mixed = MTLTrainer(build_model("SharedBottom", ["regression", "classification"]), device="cpu",
                       model_path=tmp_path, progress=False)
    p, t = torch.tensor([[2.0, 0.8], [0.0, 0.4]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    got = mixed.task_losses(p, t)
    assert got[0].item() == pytest.approx(1.0) and got[1].item() == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)


def _overfit_setup(tmp_path, **kwargs):
    x, y = make_data(800, seed=3)
    tr, va, _ = DataGenerator(x, y).generate_dataloader(split_ratio=[0.4, 0.3], batch_size=32)
    model = build_model("MMOE", kwargs.pop("task_types", ["classification", "classification"]))
    return tr, va, MTLTrainer(model, optimizer_params={"lr": 0.05}, n_epoch=8, device="cpu",
                              model_path=tmp_path, progress=False, seed=0, **kwargs)


def test_early_stopping_restores_the_best_epoch(tmp_path):
    tr, va, t = _overfit_setup(tmp_path, earlystop_patience=3)
    t.fit(tr, va)
    monitors = [h["val/monitor"] for h in t.history]
    assert t.best_epoch == int(np.argmax(monitors)) and t.best_score == pytest.approx(max(monitors))
    assert t.best_epoch < len(monitors) - 1  # a later epoch was worse and has been undone
    assert len(monitors) == min(8, t.best_epoch + 4)  # stopped once patience ran out
    scores = t.evaluate(t.model, va)
    restored = (scores["click"]["auc"] + scores["conversion"]["auc"]) / 2
    assert restored == pytest.approx(monitors[t.best_epoch], abs=1e-12)
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == t.best_epoch and best["best_score"] == pytest.approx(max(monitors))


def test_regression_monitor_keeps_lowest_rmse(tmp_path):
    x, y = make_data(800, seed=3, regression=True)
    tr, va, _ = DataGenerator(x, y).generate_dataloader(split_ratio=[0.4, 0.3], batch_size=32)
    t = MTLTrainer(build_model("SharedBottom", ["classification", "regression"]), optimizer_params={"lr": 0.05},
                   n_epoch=6, device="cpu", model_path=tmp_path, progress=False, monitor="val/value/rmse",
                   earlystop_patience=10)
    t.fit(tr, va)
    rmses = [h["val/value/rmse"] for h in t.history]
    assert [h["val/monitor"] for h in t.history] == rmses
    assert t.best_epoch == int(np.argmin(rmses)) and t.best_score == pytest.approx(-min(rmses))
    assert t.evaluate(t.model, va)["value"]["rmse"] == pytest.approx(min(rmses), abs=1e-9)
    assert set(t.evaluate(t.model, va)["value"]) == {"rmse", "mae"}


def test_stop_training_and_foreign_exceptions(tmp_path):
    x, y = make_data(600)
    tr, va, _ = DataGenerator(x, y).generate_dataloader(split_ratio=[0.6, 0.2], batch_size=64)

    class StopAt(Callback):
        def __init__(self, epoch, exc):
            self.epoch, self.exc, self.ended = epoch, exc, False

        def on_epoch_end(self, trainer, epoch, metrics):
            if epoch == self.epoch:
                raise self.exc

        def on_fit_end(self, trainer):
            self.ended = True

    stopper = StopAt(1, StopTraining("pruned"))
    t = MTLTrainer(build_model("SharedBottom"), n_epoch=5, device="cpu", model_path=tmp_path / "a",
                   progress=False, callbacks=[stopper])
    t.fit(tr, va)
    assert len(t.history) == 2 and stopper.ended

    class Pruned(Exception):
        pass

    foreign = StopAt(2, Pruned())
    t = MTLTrainer(build_model("SharedBottom"), n_epoch=5, device="cpu", model_path=tmp_path / "b",
                   progress=False, callbacks=[foreign])
    with pytest.raises(Pruned):
        t.fit(tr, va)
    assert not foreign.ended
    last = load_checkpoint(tmp_path / "b" / "last.pt")  # consistent: the epoch that raised is saved
    assert last["epoch"] == 2 and len(last["history"]) == 3
    assert set(last) >= {"model", "optimizer", "weighting", "epoch", "best_score", "rng"}


@pytest.mark.parametrize("check_every", [None, 4])  # None: every step on CPU; 4: the accelerator's deferred check
def test_non_finite_loss_names_task_and_step(tmp_path, check_every):
    x, y = make_data(600)
    x["d0"] = x["d0"].copy()
    x["d0"][2 * 64 + 5] = np.nan  # third batch
    tr = make_loader(x, y, batch_size=64)
    t = MTLTrainer(build_model("SharedBottom"), n_epoch=1, device="cpu", model_path=tmp_path, progress=False,
                   nan_check_every=check_every)
    with pytest.raises(FloatingPointError, match=r"click=nan.*epoch 0, step 2"):
        t.fit(tr)


def test_without_validation_monitors_train_loss_and_default_task_names(tmp_path):
    x, y = make_data(600)
    tr = make_loader(x, np.stack([y["click"], y["conversion"]], 1), batch_size=64, shuffle=True)
    t = MTLTrainer(build_model("PLE"), n_epoch=2, device="cpu", model_path=tmp_path, progress=True,
                   adaptive_params={"method": "equal", "weights": [1.0, 2.0]})
    t.fit(tr)
    assert t.task_names == ["task0", "task1"]
    assert [h["weight/task1"] for h in t.history] == [2.0, 2.0]
    assert all(h["val/monitor"] == h["train/loss"] for h in t.history)


def test_devices():
    assert resolve_device("auto") == torch.device("cpu") or torch.cuda.is_available()
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():  # the spec's device="cuda:0" runs on a laptop: the CPU, and a warning
        with pytest.warns(RuntimeWarning, match=r"'cuda:0' requested but CUDA is not available; using the CPU"):
            assert resolve_device("cuda:0") == torch.device("cpu")
    else:
        with pytest.raises(ValueError, match="only"):
            resolve_device("cuda:99")
    with pytest.raises(ValueError, match="available"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="task_types"):
        MTLTrainer(build_model("MMOE"), task_types=["classification", "regression"], device="cpu")


def test_scores_by_position_are_each_tasks_primary_metric_and_stay_a_plain_dict(tmp_path):
    """classification: AUC; regression: RMSE. JSON, pickle and dataclasses see the dict of every metric."""
    import dataclasses
    import json
    import pickle

    x, y = make_data(600, regression=True)
    loader = make_loader(x, y, batch_size=256)
    t = MTLTrainer(build_model("MMOE", ("classification", "regression")), n_epoch=1, device="cpu",
                   model_path=tmp_path, progress=False)
    t.fit(loader)
    scores = t.evaluate(t.model, loader)
    assert (scores[0], scores[1], scores[-1]) == (scores["click"]["auc"], scores["value"]["rmse"], scores["value"]["rmse"])
    plain = {"click": dict(scores["click"]), "value": dict(scores["value"])}
    assert json.loads(json.dumps(scores)) == plain and dict(scores) == plain
    assert pickle.loads(pickle.dumps(scores))[1] == scores[1]

    @dataclasses.dataclass
    class Result:
        metrics: dict

    assert dataclasses.asdict(Result(scores))["metrics"] == plain  # how components' TrainResult serialises it


def test_a_trailing_training_batch_of_one_row_is_skipped_with_a_warning(tmp_path, caplog):
    """BatchNorm (the default) cannot normalise one row: 257 rows at batch 128 train on 256 and say so once."""
    x, y = make_data(257)
    loader = make_loader(x, y, batch_size=128, shuffle=True)
    steps = []

    class Steps(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            steps.append(trainer._global_step)

    t = MTLTrainer(build_model("MMOE"), n_epoch=2, device="cpu", model_path=tmp_path, progress=False,
                   callbacks=[Steps()])
    with caplog.at_level("WARNING", logger="mtl_models.trainer"):
        t.fit(loader)
    assert steps == [2, 4]  # 3 batches per epoch, the 1-row one skipped
    warned = [r.getMessage() for r in caplog.records if "batch of 1 row" in r.getMessage()]
    assert len(warned) == 1 and "BatchNorm" in warned[0]


def test_training_batches_of_one_row_are_a_one_line_error_and_train_without_batch_norm(tmp_path):
    x, y = make_data(8)
    loader = make_loader(x, y, batch_size=1)
    t = MTLTrainer(build_model("SharedBottom"), n_epoch=1, device="cpu", model_path=tmp_path / "bn", progress=False)
    with pytest.raises(ValueError, match=r"^bottom_params: a training batch of 1 row cannot be batch-normalised.*"
                                         r"set bottom_params\['norm'\] to None$"):
        t.fit(loader)
    from mtl_models import SharedBottom
    from _trainer_helpers import features
    torch.manual_seed(0)
    plain = SharedBottom(features(), ["classification"] * 2, {"dims": [16], "norm": None},
                         [{"dims": [8], "norm": None}] * 2)
    t = MTLTrainer(plain, n_epoch=1, device="cpu", model_path=tmp_path / "plain", progress=False)
    t.fit(loader)
    assert t._global_step == 8  # every 1-row batch trained


def test_a_batch_of_one_row_predicts_as_it_does_inside_a_larger_batch(data, tmp_path):
    x, y = data
    t = MTLTrainer(build_model("PLE"), n_epoch=1, device="cpu", model_path=tmp_path, progress=False)
    t.fit(make_loader(x, y, batch_size=256, shuffle=True))
    first = {k: v[:5] for k, v in x.items()}
    together = t.predict(t.model, make_loader(first, batch_size=5))
    alone = t.predict(t.model, make_loader(first, batch_size=1))  # five batches of one row
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)


def test_mixed_precision_evaluates_and_predicts_in_float32(data, tmp_path):
    """bf16 autocast is for the training forward only: bf16 scores keep 8 significant bits, so a fresh model's
    nearly equal scores round to a few values (Adult, MMOE after 8 steps: AUC 0.505 against 0.866); evaluation
    must equal float32's."""
    x, y = data
    loader = make_loader(x, y, 512)
    model = build_model("MMOE")
    mixed = MTLTrainer(model, device="cpu", model_path=tmp_path / "bf16", progress=False, mixed_precision=True)
    plain = MTLTrainer(model, device="cpu", model_path=tmp_path / "fp32", progress=False, mixed_precision=False)
    assert mixed.mixed_precision and not plain.mixed_precision
    assert mixed.evaluate(model, loader)["click"] == plain.evaluate(model, loader)["click"]
    np.testing.assert_array_equal(mixed.predict(model, loader), plain.predict(model, loader))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # what evaluation computed before
        bf16 = model.eval()(loader.x).float().numpy()
    assert len(np.unique(bf16[:, 0])) < len(np.unique(plain.predict(model, loader)[:, 0])) / 4
