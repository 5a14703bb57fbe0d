"""The model zoo: its entries are the only list of models, and a sixth model registered at run time goes through
the pipeline's search, train and export steps with nothing else edited (docs/models.md, "Adding a model")."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import pytest
import torch
from torch import Tensor, nn

from mtl_models import MultiTaskModel, SparseFeature, zoo
from mtl_models.layers import MLP, build_tower
from mtl_models.onnx_export import example_inputs

REPO = Path(__file__).resolve().parents[1]


# ---- the sixth model, written as the guide says: one model class on the public blocks, one zoo entry ----------

class GatedBottom(MultiTaskModel):
    """One shared bottom; each task scales the bottom's output by its own sigmoid gate before its tower."""

    def __init__(self, features, task_types, bottom_params: Mapping[str, Any],
                 tower_params_list: Sequence[Mapping[str, Any]], gate_scale: float = 1.0) -> None:
        super().__init__(features, task_types)
        self.bottom = MLP(self.input_dim, bottom_params, argument="bottom_params")
        width = self.bottom.output_dim
        self.gates = nn.ModuleList(nn.Linear(width, width) for _ in range(self.n_task))
        self.towers = nn.ModuleList(build_tower(width, p, f"tower_params_list[{i}]")
                                    for i, p in enumerate(tower_params_list))
        self.gate_scale = float(gate_scale)

    def forward(self, x: Mapping[str, Tensor]) -> Tensor:
        shared = self.bottom(self.embedding(x))  # [B, width]
        raw = [tower(shared * torch.sigmoid(self.gate_scale * gate(shared)))  # [B, 1] per task
               for gate, tower in zip(self.gates, self.towers)]
        return self.head(torch.cat(raw, dim=1))  # [B, n_task]


def build_gated_bottom(features, task_types, p: Mapping[str, Any]) -> MultiTaskModel:
    return GatedBottom(features, task_types, bottom_params=zoo.mlp(p["bottom_dims"], p),
                       tower_params_list=zoo.towers(p, len(task_types)), gate_scale=p["gate_scale"])


GATED_BOTTOM = zoo.ZooEntry(
    name="gated_bottom", model_class=GatedBottom, builder=build_gated_bottom,
    defaults={"bottom_dims": [64, 32], "gate_scale": 1.0},
    space={"bottom_dims": {"depth": [1, 2], "widths": [8, 16], "shape": "funnel"},
           "gate_scale": {"low": 0.5, "high": 2.0}})


@pytest.fixture()
def gated_bottom():
    zoo.register(GATED_BOTTOM)
    yield GATED_BOTTOM.name
    zoo.unregister(GATED_BOTTOM.name)


# ---- the zoo itself ----------------------------------------------------------------------------------------

def test_the_built_in_models_and_their_own_keys() -> None:
    assert zoo.names() == ["shared_bottom", "esmm", "mmoe", "ple", "aitm"]
    assert zoo.defaults("ple") == {"tower_dims": [32], "dropout": 0.1, "activation": "relu", "norm": "none",
                                   "n_level": 2, "n_expert_specific": 2, "n_expert_shared": 2, "expert_dims": [128, 64]}
    assert zoo.space("mmoe")["n_expert"] == {"low": 2, "high": 8}
    for entry in zoo.entries():  # plain data: a space survives JSON (the config file and the study's settings)
        assert json.loads(json.dumps(entry.space)) == zoo.space(entry.name)
        assert set(entry.space) <= set(zoo.defaults(entry.name))
    assert [e.single_task for e in zoo.entries()] == [None, "shared_bottom", None, None, "shared_bottom"]


def test_build_overlays_defaults_and_rejects_foreign_keys() -> None:
    features = [SparseFeature("a", 10, 4), SparseFeature("b", 5, 4)]
    torch.manual_seed(0)
    mmoe = zoo.build("mmoe", features, ["classification", "regression"], {"n_expert": 3, "expert_dims": [8]})
    assert mmoe.n_expert == 3 and mmoe.experts.output_dim == 8 and mmoe.towers[0][0].out_features == 32
    assert mmoe(example_inputs(mmoe, batch_size=4)).shape == (4, 2)
    with pytest.raises(ValueError, match=r"unknown hyperparameters for mmoe: \['bottom_dims'\]"):
        zoo.build("mmoe", features, ["classification"], {"bottom_dims": [8]})
    with pytest.raises(ValueError, match=r"^unknown model 'mmoe2'; choose from \['shared_bottom', "):
        zoo.get("mmoe2")


def test_register_checks_the_entry_and_unregister_removes_it(gated_bottom: str) -> None:
    assert zoo.names()[-1] == gated_bottom and zoo.get(gated_bottom) is GATED_BOTTOM
    with pytest.raises(ValueError, match="model 'gated_bottom' is already in the zoo"):
        zoo.register(GATED_BOTTOM)
    bad = [(dict(name="Gated Bottom"), "use lower case letters"),
           (dict(name="x", model_class=nn.Linear), "model_class must be a MultiTaskModel subclass"),
           (dict(name="x", space={"gate_sharpness": [1, 2]}), r"space keys \['gate_sharpness'\] have no default"),
           (dict(name="x", single_task="nope"), "single_task 'nope' is not in the zoo")]
    for change, message in bad:
        fields = {**GATED_BOTTOM.__dict__, **change}
        with pytest.raises(ValueError, match=message):
            zoo.register(zoo.ZooEntry(**fields))
    assert "x" not in zoo.names()


def test_a_registered_model_is_known_to_config_space_and_factory(gated_bottom: str, prepared: Path) -> None:
    from pipeline.config import ConfigError, load_config
    from workflow.data.feature_spec import FeatureSpec
    from workflow.search.space import build_space, default_space
    from workflow.training.model_factory import build_model, single_task_family

    assert load_config({"models": [gated_bottom, "mmoe"]}).models == [gated_bottom, "mmoe"]
    assert {"gate_scale", "bottom_dims", "lr", "embed_dim"} <= set(default_space(gated_bottom))
    space = build_space(gated_bottom, {"common": {"n_expert": {"low": 2, "high": 4}}, gated_bottom: {"gate_scale": 1.5}})
    assert space.specs["gate_scale"] == 1.5 and "n_expert" not in space.specs  # common keys it lacks are skipped
    assert single_task_family(gated_bottom) == gated_bottom and single_task_family("esmm") == "shared_bottom"
    model = build_model(gated_bottom, FeatureSpec.load(prepared / "feature_spec.json"), {"gate_scale": 0.5})
    assert isinstance(model, GatedBottom) and model.gate_scale == 0.5 and model.n_task == 2
    zoo.unregister(gated_bottom)
    try:
        with pytest.raises(ConfigError, match="models: unknown model 'gated_bottom'"):
            load_config({"models": [gated_bottom]})
    finally:
        zoo.register(GATED_BOTTOM)


def test_mtl_models_imports_no_optuna_mlflow_or_kfp() -> None:
    code = ("import sys, mtl_models, mtl_models.zoo\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('optuna', 'mlflow', 'kfp')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


# ---- the sixth model through the steps the pipeline graph calls ----------------------------------------------

@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from workflow.data.prepare import prepare

    out = tmp_path_factory.mktemp("zoo") / "funnel"
    prepare("synthetic-funnel", out, seed=5, options={"n_rows": 5000, "ctr": 0.3, "cvr": 0.3, "n_users": 100,
                                                      "n_items": 50})
    return out


@pytest.mark.slow
def test_a_sixth_model_goes_through_search_train_and_export(gated_bottom: str, prepared: Path, tmp_path,
                                                           monkeypatch) -> None:
    from mlflow import MlflowClient

    from workflow import steps
    from workflow.training.artifacts import load_trained

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    work_dir = tmp_path / "run"
    steps.start_pipeline_run({"tracking": {"experiment": "zoo"}}, work_dir, "sixth")
    model_run = steps.start_model_run("sixth", "zoo", gated_bottom, work_dir)
    fixed = {"embed_dim": 4, "tower_dims": [8], "weighting": "equal", "lr": 0.01, "batch_size": 256}
    search = {"n_trials": 3, "n_epoch": 1, "pruner": "none", "space": {"common": dict(fixed)}}
    best = steps.search_step(prepared, gated_bottom, work_dir, model_run, search, seed=0, device="cpu", run_name="sixth")
    assert 0.5 <= best["gate_scale"] <= 2.0 and best["bottom_dims"] in ([8], [16], [8, 8], [16, 8])
    assert {k: best[k] for k in fixed} == fixed

    db = f"sqlite:///{work_dir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=db, registry_uri=db)
    trials = client.search_runs([client.get_experiment_by_name("zoo").experiment_id],
                                filter_string=f"tags.`mlflow.parentRunId` = '{model_run}' and tags.`mtlp.role` = 'trial'")
    assert len(trials) == 3
    objectives = [t.data.metrics["trial/objective_0"] for t in trials]
    assert all(0.0 <= v <= 1.0 for v in objectives), objectives  # each trial's mean validation AUC

    result = steps.train_step(prepared, gated_bottom, tmp_path / "trained", model_run, work_dir, best_params=best,
                              n_epoch=3, patience=1, device="cpu", seed=0, single_task=True)
    assert result.model_name == gated_bottom and result.params["gate_scale"] == best["gate_scale"]
    aucs = [result.test_metrics[t]["auc"] for t in result.task_names]
    assert result.task_names == ["click", "conversion"] and all(0.0 <= a <= 1.0 for a in aucs)
    assert min(aucs) > 0.55, aucs  # generated clicks and conversions depend on the user and item: it learnt
    assert math.isclose(result.test_score, sum(aucs) / 2)
    logged = client.get_run(model_run).data.metrics  # the one-task form of a model with no `single_task`: itself
    assert all(0.0 <= logged[f"single_task/{t}/auc"] <= 1.0 for t in result.task_names)
    assert load_trained(work_dir / "single-task" / gated_bottom / "click")[2]["model_name"] == gated_bottom
    model, _, meta = load_trained(result.out_dir)
    assert isinstance(model, GatedBottom) and meta["model_name"] == gated_bottom

    parity = steps.export_step(result.out_dir, prepared, model_run, work_dir)
    assert 0.0 <= parity <= 1e-5 and (result.out_dir / "model.onnx").stat().st_size > 0
    assert client.get_run(model_run).data.metrics["onnx/parity_max_abs_diff"] == pytest.approx(parity)


def test_the_bench_builds_any_zoo_model_and_compares_only_what_torch_rechub_has(gated_bottom: str) -> None:
    from bench import bench_training as bt

    feats, vocab = ["a", "b"], {"a": 5, "b": 7}
    model = bt.ours("GatedBottom", feats, vocab)
    assert isinstance(model, GatedBottom) and [m.out_features for m in model.bottom if isinstance(m, nn.Linear)] == bt.DIMS
    assert any(isinstance(m, nn.BatchNorm1d) for m in model.modules())  # bench_training's MLPs keep BatchNorm
    assert bt.ours("ESMM", feats, vocab).bottom is None  # as Torch-RecHub's ESMM: towers on the embeddings
    with pytest.raises(ValueError, match="Torch-RecHub 0.9.0 has no GatedBottom"):
        bt.rechub("GatedBottom", feats, vocab)
