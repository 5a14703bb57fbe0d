"""A search budget the user can set (issue 29, point 5): ``search.timeout`` seconds per model's search (no trial
starts after it), ``search.trial_timeout`` seconds per trial (training stops after the epoch that passes it) and
``search.max_params`` (a larger sampled model is skipped untrained and not counted); the result says what the
budget did, in words the run's summary repeats."""

from __future__ import annotations

import optuna
import pytest

from _data_helpers import prepare_small_funnel
from pipeline.config import ConfigError, load_config
from workflow.search import open_storage, search, workers
from workflow.search.objective import count_parameters

# only embed_dim changes a sampled model's size: the default space's numeric encodings are pinned to plain values
SPACE = {"common": {"embed_dim": [4, 64], "tower_dims": [8], "lr": 0.01, "batch_size": 512,
                    "numeric_encoding": "standard", "n_bins": 32, "numeric_embed_dim": 8},
         "shared_bottom": {"bottom_dims": [16]}}
KW = dict(model_name="shared_bottom", n_epoch=1, pruner="none", search_space=SPACE, device="cpu", threads=1,
          progress=False, plots=False)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_small_funnel(tmp_path_factory.mktemp("budget-data") / "prepared", seed=3)


def test_the_time_budget_stops_the_search_and_says_so(prepared, tmp_path) -> None:
    cut = search(prepared, work_dir=tmp_path / "a", n_trials=5, timeout=1e-9, **KW)
    assert (cut.n_complete, cut.budget_note) == (0, "search.timeout 1e-09 s stopped the search after 0 of 5 trials")
    some = search(prepared, work_dir=tmp_path / "b", n_trials=200, timeout=3, **KW)
    assert 1 <= some.n_complete < 200
    assert some.budget_note == f"search.timeout 3 s stopped the search after {some.n_complete} of 200 trials"
    assert search(prepared, work_dir=tmp_path / "c", n_trials=1, timeout=600, **KW).budget_note == ""


def test_the_trial_cap_stops_training_after_an_epoch(prepared, tmp_path) -> None:
    result = search(prepared, work_dir=tmp_path, n_trials=2, trial_timeout=1e-9, **{**KW, "n_epoch": 3})
    assert (result.n_complete, result.n_capped, result.epochs_spent) == (2, 2, 2)  # 1 epoch each, not 3
    assert result.budget_note == "search.trial_timeout 1e-09 s stopped 2 trial(s) early"


def test_models_over_max_params_are_skipped_untrained_and_not_counted(prepared, tmp_path, monkeypatch) -> None:
    small = count_parameters(prepared, "shared_bottom", {"embed_dim": 4, "tower_dims": [8], "bottom_dims": [16]})
    large = count_parameters(prepared, "shared_bottom", {"embed_dim": 64, "tower_dims": [8], "bottom_dims": [16]})
    assert small < large
    result = search(prepared, work_dir=tmp_path / "a", n_trials=3, max_params=small, **KW)
    study = optuna.load_study(study_name="shared_bottom-search", storage=open_storage(None, tmp_path / "a"))
    trained = [t for t in study.trials if t.state.name == "COMPLETE"]
    skipped = [t for t in study.trials if t.user_attrs.get("mtlp:oversize")]
    assert result.n_complete == len(trained) == 3 and result.n_pruned == 0  # skipped trials are not counted
    assert all(t.params["embed_dim"] == 4 for t in trained) and all(t.params["embed_dim"] == 64 for t in skipped)
    assert all(t.user_attrs["mtlp:oversize"] == large and t.state.name == "PRUNED" for t in skipped)
    assert result.n_oversize == len(skipped) and result.best_params["embed_dim"] == 4
    monkeypatch.setattr(workers, "MAX_OVERSIZE_IN_A_ROW", 3)
    with pytest.raises(RuntimeError, match=r"search.max_params 10: 3 sampled shared_bottom models in a row had more "
                                           r"parameters; raise it or narrow search.space"):
        search(prepared, work_dir=tmp_path / "b", n_trials=2, max_params=10, **KW)


def test_budget_keys_are_config_keys() -> None:
    config = load_config({"search": {"timeout": 120, "trial_timeout": 30.5, "max_params": 200_000}})
    assert (config.search.timeout, config.search.trial_timeout, config.search.max_params) == (120, 30.5, 200_000)
    for key, bad in (("timeout", 0), ("trial_timeout", -1), ("max_params", 0)):
        with pytest.raises(ConfigError, match=rf"search.{key} must be > 0"):
            load_config({"search": {key: bad}})
    with pytest.raises(ConfigError, match="search.max_params must be .*, got float 1.5"):
        load_config({"search": {"max_params": 1.5}})
