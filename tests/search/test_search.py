"""The search step: search spaces, a small pruned study whose best params feed training, MLflow nesting,
and a multi-objective study's Pareto front."""

from __future__ import annotations

import json
import math

import optuna
import pytest

from _data_helpers import prepare_small_funnel
from workflow.search import SUMMARY_FILE, dominates, search
from workflow.search.space import SearchSpace, build_space, default_space
from workflow.training.train import train

TINY_SPACE = {
    "common": {"embed_dim": [4, 8], "tower_dims": {"depth": [1, 2], "widths": [8, 16]},
               "lr": {"low": 1e-3, "high": 3e-2, "log": True}, "batch_size": 256,
               # the model defaults (standard values, Adam, constant lr): a tiny space, few keys
               **{k: None for k in ("numeric_encoding", "bin_source", "n_bins", "numeric_embed_dim", "periodic_sigma",
                                    "optimizer", "weight_decay", "lr_schedule")}},
    "mmoe": {"n_expert": {"low": 2, "high": 4}, "expert_dims": {"depth": [1, 2], "widths": [16, 32]}},
    "ple": {"n_level": {"low": 1, "high": 2}, "n_expert_specific": {"low": 1, "high": 2},
            "n_expert_shared": {"low": 1, "high": 2}, "expert_dims": {"depth": [1, 2], "widths": [16, 32]}},
    "shared_bottom": {"bottom_dims": {"depth": [1, 2], "widths": [16, 32]}},
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_small_funnel(tmp_path_factory.mktemp("search-data") / "prepared", seed=7)


# ----------------------------------------------------------------------------------------------- search spaces

def test_default_spaces_cover_what_each_model_has() -> None:
    assert {"n_expert", "expert_dims"} <= set(default_space("mmoe"))
    assert {"n_level", "n_expert_specific", "n_expert_shared", "expert_dims"} <= set(default_space("ple"))
    for name in ("shared_bottom", "esmm", "aitm"):
        space = default_space(name)
        assert "bottom_dims" in space and not {"n_expert", "expert_dims", "n_level"} & set(space)
    for name in ("mmoe", "ple", "shared_bottom"):
        assert {"lr", "dropout", "embed_dim", "weighting", "tower_dims"} <= set(default_space(name))
    assert default_space("mmoe")["n_expert"] == {"low": 2, "high": 8}
    assert default_space("mmoe")["weighting"] == ["equal", "uwl"]


def test_overrides_merge_skip_foreign_common_keys_and_reject_unknown_model_keys() -> None:
    space = build_space("shared_bottom", {"common": {"n_expert": {"low": 2, "high": 3}, "dropout": 0.2,
                                                     "weighting": None}})
    assert "n_expert" not in space.specs          # a model without experts ignores expert keys under common
    assert space.specs["dropout"] == 0.2 and "weighting" not in space.specs
    with pytest.raises(ValueError, match="n_expert"):
        build_space("shared_bottom", {"shared_bottom": {"n_expert": {"low": 2, "high": 3}}})
    with pytest.raises(ValueError, match="neither 'common' nor a model"):
        build_space("mmoe", {"common": {}, "lr": 0.1})
    with pytest.raises(ValueError, match="depth"):
        build_space("mmoe", {"mmoe": {"expert_dims": {"depth": [3, 1], "widths": [8]}}})
    flat = build_space("mmoe", {"lr": 0.01})   # one flat mapping applies to the model
    assert flat.specs["lr"] == 0.01


@pytest.mark.parametrize("shape", ["funnel", "constant", "free"])
def test_dims_sampling_shapes_and_fixed_trial_roundtrip(shape: str) -> None:
    space = build_space("mmoe", {"mmoe": {"expert_dims": {"depth": [1, 4], "widths": [16, 64, 256], "shape": shape}}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    for _ in range(15):
        trial = study.ask()
        params = space.sample(trial)
        dims = params["expert_dims"]
        assert 1 <= len(dims) <= 4 and all(w in (16, 32, 64, 128, 256) for w in dims)
        if shape == "constant":
            assert len(set(dims)) == 1
        if shape == "funnel":
            assert all(b == max(16, a // 2) for a, b in zip(dims, dims[1:]))
        if shape == "free":
            assert all(w in (16, 64, 256) for w in dims)
        assert 2 <= params["n_expert"] <= 16 and 1e-4 <= params["lr"] <= 1e-2
        assert space.params_of(trial.params) == params  # the trial's Optuna params give back the same flat params
        study.tell(trial, 0.0)


def test_searched_names_exclude_fixed_values() -> None:
    space = SearchSpace("mmoe", {"lr": 0.01, "n_expert": [2, 4], "expert_dims": [32, 16],
                                 "tower_dims": {"depth": 1, "widths": [8]}})
    assert set(space.searched()) == {"n_expert", "tower_dims"}


# ----------------------------------------------------------------------------------------------- small study

def test_small_study_prunes_and_its_best_params_feed_training(prepared, tmp_path) -> None:
    from workflow.tracking import setup_tracking, start_parent_run

    tracking = setup_tracking("search-test", work_dir=tmp_path / "mlflow")
    parent = start_parent_run(tracking, "p1")
    work = tmp_path / "search"
    aggressive = {"type": "percentile", "percentile": 90.0, "n_startup_trials": 1, "n_warmup_steps": 0}
    result = search(prepared, "mmoe", work, n_trials=6, n_epoch=3, patience=3, pruner=aggressive,
                    search_space=TINY_SPACE, device="cpu", threads=1, seed=3, parent_run_id=parent,
                    tracking_uri=tracking.uri, progress=False)

    assert result.n_complete + result.n_pruned == 6 and result.n_failed == 0
    assert result.n_pruned >= 1, "the aggressive pruner pruned nothing"
    study = optuna.load_study(study_name=result.study_name,
                              storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
                                  str(work / "optuna_journal.log"))))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert result.best_value == max(t.value for t in complete)
    assert all(t.user_attrs["epochs_run"] == len(t.intermediate_values) for t in pruned)
    assert result.epochs_spent == sum(t.user_attrs["epochs_run"] for t in study.trials)
    assert result.epochs_spent < 6 * 3

    summary = json.loads((work / SUMMARY_FILE).read_text())
    assert summary["n_pruned"] == result.n_pruned and summary["best_trial_number"] == result.best_trial_number
    assert {p.name for p in result.plot_paths} >= {"optimization_history.png", "param_importances.png"}
    assert all(p.stat().st_size > 1000 for p in result.plot_paths)

    # every trial is a nested run with its params and per-epoch values; the summary is on the parent
    client = tracking.client
    runs = client.search_runs([tracking.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(runs) == 6
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in runs}
    for t in study.trials:
        run = by_trial[t.number]
        assert run.data.params["n_expert"] == str(t.user_attrs["params"]["n_expert"])
        history = client.get_metric_history(run.info.run_id, "val/monitor")
        assert [m.step for m in history] == list(range(t.user_attrs["epochs_run"]))
        assert run.data.tags["optuna.state"] == t.state.name
    artifacts = {a.path for a in client.list_artifacts(parent, "search")}
    assert f"search/{SUMMARY_FILE}" in artifacts

    # the best params feed the final training
    best = study.trials[result.best_trial_number]
    assert result.best_params["n_expert"] == best.params["n_expert"]
    assert result.best_params["expert_dims"] == best.user_attrs["params"]["expert_dims"]
    final = train(prepared, "mmoe", tmp_path / "final", params=result.best_params, n_epoch=3, device="cpu",
                  progress=False, seed=3)
    assert final.params == result.best_params
    saved = json.loads((tmp_path / "final" / "params.json").read_text())
    assert saved["params"]["n_expert"] == best.params["n_expert"]
    # same params, data and seed as the trial: the final run reproduces the trial's best validation score
    assert math.isclose(final.best_score, result.best_value, abs_tol=1e-5)


def test_resume_keeps_finished_trials_and_counts_the_total(prepared, tmp_path) -> None:
    kw = dict(n_epoch=1, pruner="none", search_space=TINY_SPACE, device="cpu", threads=1, progress=False,
              model_name="shared_bottom", plots=False)
    first = search(prepared, work_dir=tmp_path, n_trials=2, **kw)
    assert first.n_complete == 2
    again = search(prepared, work_dir=tmp_path, n_trials=3, **kw)   # same study name: resumes
    assert again.n_complete == 3 and again.epochs_spent == 3
    with pytest.raises(ValueError, match="objective|metric_keys"):
        search(prepared, work_dir=tmp_path, n_trials=3, objective="click", **kw)


# ----------------------------------------------------------------------------------------------- multi-objective

def test_multi_objective_study_returns_a_non_dominated_pareto_front(prepared, tmp_path) -> None:
    result = search(prepared, "ple", tmp_path, n_trials=6, n_epoch=2, multi_objective=True, search_space=TINY_SPACE,
                    device="cpu", threads=1, seed=11, progress=False)
    assert result.directions == ["maximize", "maximize"]
    assert result.n_complete == 6 and result.n_pruned == 0
    front = result.pareto
    assert front, "empty Pareto front"
    values = [p["values"] for p in front]
    for i, a in enumerate(values):
        for j, b in enumerate(values):
            if i != j:  # checked here by hand, not with the module's own helper
                assert not (all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b)))
    # and every other complete trial is dominated by a trial on the front
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    on_front = {p["number"] for p in front}
    for t in summary["trials"]:
        if t["state"] == "COMPLETE" and t["number"] not in on_front:
            assert any(dominates(v, t["values"], result.directions) for v in values)
    assert result.best_trial_number in on_front
    assert "pareto_front.png" in {p.name for p in result.plot_paths}


def test_named_task_objective_and_dominates_helper(prepared, tmp_path) -> None:
    result = search(prepared, "shared_bottom", tmp_path, n_trials=2, n_epoch=1, objective="conversion",
                    pruner="hyperband", search_space=TINY_SPACE, device="cpu", threads=1, progress=False, plots=False)
    assert result.directions == ["maximize"]
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["metric_keys"] == ["val/conversion/auc"]
    assert 0.0 <= result.best_value <= 1.0
    assert dominates([1, 1], [1, 0], ["maximize", "maximize"]) and not dominates([1, 0], [0, 1], ["maximize"] * 2)
    assert dominates([0.5, 2.0], [0.5, 3.0], ["maximize", "minimize"])
    with pytest.raises(ValueError, match="objective"):
        search(prepared, "shared_bottom", tmp_path / "x", n_trials=1, objective="nope", progress=False)


def test_journal_trial_of_a_dead_worker_is_failed_and_retried(prepared, tmp_path) -> None:
    import socket
    import subprocess

    from workflow.search import open_storage

    kw = dict(n_epoch=1, pruner="none", search_space=TINY_SPACE, device="cpu", threads=1, progress=False,
              plots=False)
    first = search(prepared, "shared_bottom", tmp_path, n_trials=1, **kw)
    storage = open_storage(None, tmp_path, heartbeat_interval=None)  # no beats: this process only plants a trial
    study = optuna.load_study(study_name=first.study_name, storage=storage)
    # a trial left RUNNING by a worker process that no longer exists (same host, its pid gone)
    gone = subprocess.Popen(["true"])
    gone.wait()
    trial = study.ask()
    trial.suggest_int("bottom_depth", 1, 2)
    trial.set_user_attr("mtlp:owner", [socket.gethostname(), gone.pid, trial.number])

    result = search(prepared, "shared_bottom", tmp_path, n_trials=3, **kw)
    study = optuna.load_study(study_name=first.study_name, storage=open_storage(None, tmp_path))
    dead = study.trials[trial.number]
    assert dead.state == optuna.trial.TrialState.FAIL
    assert result.n_complete == 3 and result.n_failed == 1
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == trial.number]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
    assert retry[0].params["bottom_depth"] == dead.params["bottom_depth"]
