"""The training step over prepared Parquet: the model folder it writes, export parity, reload fidelity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _zoo_helpers import small_params
from mtl_models import zoo
from workflow.training.model_factory import build_model, default_params, resolve_params
from workflow.data.prepare import prepare
from workflow.training.artifacts import load_trained
from workflow.training.evaluate import predict_prepared
from workflow.training.export import export
from workflow.training.train import train

SMALL = {"embed_dim": 4, "tower_dims": [8], "batch_size": 512}
ARCH = {"esmm": {"bottom_dims": [16]}, "mmoe": {"n_expert": 2, "expert_dims": [16]},
        "ple": {"n_level": 1, "n_expert_specific": 1, "n_expert_shared": 1, "expert_dims": [16]}}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "funnel"
    prepare("synthetic-funnel", out, seed=3, options={"n_rows": 6000, "n_users": 300, "n_items": 100})
    return out


def test_factory_rejects_unknown_models_and_keys(prepared) -> None:
    with pytest.raises(ValueError, match="unknown model 'mmoe2'"):
        default_params("mmoe2")
    with pytest.raises(ValueError, match=r"unknown hyperparameters for mmoe: \['bottom_dims'\]"):
        resolve_params("mmoe", {"bottom_dims": [8]})


@pytest.mark.parametrize("name", zoo.names())
def test_factory_builds_each_model_for_the_spec(prepared, name: str) -> None:
    from workflow.data.feature_spec import FeatureSpec
    spec = FeatureSpec.load(prepared / "feature_spec.json")
    model = build_model(name, spec, {**SMALL, **small_params(name)})
    assert model.n_task == len(spec.label_names)
    assert [f.name for f in model.features] == spec.feature_names
    assert all(getattr(f, "embed_dim", 1) in (1, 4) for f in model.features)


def test_train_writes_a_self_contained_model_folder(prepared, tmp_path) -> None:
    out = tmp_path / "mmoe"
    result = train(prepared, "mmoe", out, params={**SMALL, **ARCH["mmoe"]}, n_epoch=2, patience=1, progress=False, seed=7)
    assert {"model.pt", "params.json", "metrics.json", "feature_spec.json"} <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".staging")]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test_score"] == pytest.approx(result.test_score)
    assert len(saved["history"]) == len(result.history) >= 1
    # test_score is the mean of the tasks' AUCs (both funnel tasks are classification)
    expected = np.mean([result.test_metrics[t]["auc"] for t in result.task_names])
    assert result.test_score == pytest.approx(expected)
    assert 0.5 < result.test_metrics["click"]["auc"] <= 1.0

    model, spec, meta = load_trained(out)
    assert meta["model_name"] == "mmoe" and meta["params"]["n_expert"] == 2
    preds = predict_prepared(out, prepared, "test")
    assert preds.shape == (spec.rows["test"], 2)
    assert np.all((preds > 0) & (preds < 1))

    exported = export(out, prepared)
    assert exported.onnx_path.is_file() and exported.parity_max_abs_diff <= 1e-5
    assert exported.n_rows_checked == min(2048, spec.rows["test"])


def test_val_score_is_the_restored_checkpoints_validation_mean_and_plots_are_drawn(prepared, tmp_path) -> None:
    from sklearn.metrics import roc_auc_score

    from workflow.training.artifacts import split_labels

    out = tmp_path / "ple"
    result = train(prepared, "ple", out, params={**SMALL, **ARCH["ple"]}, n_epoch=3, patience=1, progress=False,
                   seed=5, plots=True)
    model, spec, _ = load_trained(out)
    labels, preds = split_labels(prepared, "val", spec), predict_prepared(out, prepared, "val")  # [N_val, 2]
    aucs = [roc_auc_score(labels[:, j], preds[:, j]) for j in range(len(spec.label_names))]
    assert result.val_score == pytest.approx(float(np.mean(aucs)), abs=1e-6)
    assert result.val_score != pytest.approx(result.test_score, abs=1e-9)
    assert json.loads((out / "metrics.json").read_text())["val_score"] == pytest.approx(result.val_score)
    drawn = sorted(p.name for p in (out / "plots").iterdir())
    assert drawn == ["roc_click.png", "roc_conversion.png", "training_curves.png"]
    assert all((out / "plots" / name).read_bytes()[:4] == b"\x89PNG" for name in drawn)
    train(prepared, "ple", tmp_path / "quiet", params={**SMALL, **ARCH["ple"]}, n_epoch=1, progress=False)
    assert not (tmp_path / "quiet" / "plots").exists()  # search trials and baselines draw nothing


def test_same_seed_same_model(prepared, tmp_path) -> None:
    params = {**SMALL, **ARCH["esmm"]}
    a = train(prepared, "esmm", tmp_path / "a", params=params, n_epoch=1, progress=False, seed=11)
    b = train(prepared, "esmm", tmp_path / "b", params=params, n_epoch=1, progress=False, seed=11)
    wa = torch.load(a.checkpoint_path, weights_only=True)
    wb = torch.load(b.checkpoint_path, weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.test_metrics == b.test_metrics


def test_missing_prepared_data_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="run the prepare step first"):
        train(tmp_path / "nothing", "mmoe", tmp_path / "out", n_epoch=1, progress=False)


def test_esmm_off_a_funnel_is_refused_before_its_search_or_training(adult_dir, tmp_path) -> None:
    """ESMM trains and is scored on income x never_married, a question other models are not asked: its
    val_score would win or lose the champion on a different label. The search and the train step refuse it."""
    from workflow.search.run import search
    from workflow.training.artifacts import read_spec, split_labels

    prep = tmp_path / "adult"
    prepare("adult", prep, data_dir=adult_dir, seed=7)
    labels = split_labels(prep, "train", read_spec(prep))  # [N, 2]: income, never_married
    off_funnel = int(((labels[:, 1] == 1) & (labels[:, 0] == 0)).sum())
    assert 0 < off_funnel < len(labels)
    expected = (rf"esmm trains on targets derived from the labels, which differ from label 'never_married' on "
                rf"{off_funnel:,} of {len(labels):,} train rows of dataset 'adult'.*leave esmm out of models")
    with pytest.raises(ValueError, match=expected):
        search(prep, "esmm", tmp_path / "search", n_trials=2, n_epoch=1, progress=False, plots=False)
    assert list((tmp_path / "search").iterdir()) == []  # refused before a study or a trial existed
    with pytest.raises(ValueError, match=expected):
        train(prep, "esmm", tmp_path / "out", n_epoch=1, progress=False)
    assert not (tmp_path / "out" / "model.pt").exists()
    result = train(prep, "aitm", tmp_path / "aitm", params={**SMALL, "bottom_dims": [16]}, n_epoch=1, progress=False)
    assert set(result.test_metrics) == {"income", "never_married"}  # the other funnel-shaped model trains on the labels
