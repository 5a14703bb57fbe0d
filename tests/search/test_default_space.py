"""The default search space carries what worked on Adult, fits itself to the data, and configs only narrow it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mtl_models import zoo
from pipeline.config import load_config
from workflow.data.encoders import fit_dense, fit_tree_edges
from workflow.search.space import build_space, default_space, with_default

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_default_space_holds_the_encodings_and_the_training_levers() -> None:
    for name in zoo.names():
        space = default_space(name)
        assert {"bins", "gated_bins", "periodic"} == set(space["numeric_encoding"])
        assert space["bin_source"] == "tree" and set(space["n_bins"]) == {16, 32}
        assert space["optimizer"] == "adamw" and space["weight_decay"]["log"] and space["weight_decay"]["low"] > 0
        assert set(space["lr_schedule"]) == {"constant", "cosine"}
        assert {"periodic_sigma", "numeric_embed_dim", "embed_dim", "tower_dims"} <= set(space)
        widths = space.get("bottom_dims", space.get("expert_dims"))["widths"]
        assert len(widths) > 1  # widths are searched


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_only_narrows_the_default(path: Path) -> None:
    config = load_config(path)
    for model in config.models:
        assert build_space(model, config.search.space).widened == [], (path.name, model)


def test_a_widening_config_is_applied_and_named_a_narrowing_one_is_not() -> None:
    narrow = build_space("mmoe", {"common": {"lr": {"low": 1.5e-3, "high": 3e-3, "log": True}, "weighting": ["uwl"],
                                             "numeric_encoding": "bins", "batch_size": 256, "dropout": None},
                                  "mmoe": {"n_expert": {"low": 2, "high": 4},
                                           "expert_dims": {"depth": [1, 1], "widths": [64, 128]}}})
    assert narrow.widened == [] and narrow.specs["numeric_encoding"] == "bins" and "dropout" not in narrow.specs
    wide = build_space("mmoe", {"common": {"lr": {"low": 1e-5, "high": 1e-3, "log": True},
                                           "weighting": ["equal", "gradnorm"], "optimizer": ["adam", "adamw"]},
                                "mmoe": {"expert_dims": {"depth": [1, 4], "widths": [64]}, "n_expert": 12}})
    assert wide.widened == ["expert_dims", "lr", "n_expert", "optimizer", "weighting"]
    assert wide.specs["weighting"] == ["equal", "gradnorm"]  # applied as written


def _spec(n_sparse: int, n_dense: int, rows: int, task_types=("classification", "classification")):
    rng = np.random.default_rng(0)
    dense = []
    for i in range(n_dense):
        x = rng.normal(size=2000)
        enc = fit_dense(f"d{i}", f"d{i}", x)
        if "classification" in task_types:
            fit_tree_edges(enc, enc.transform_numbers(x), [(x > 0.3).astype(np.float32)])
        dense.append(enc)
    sparse = [SimpleNamespace(name=f"s{i}") for i in range(n_sparse)]
    return SimpleNamespace(features=sparse + dense, task_types=list(task_types), rows={"train": rows})


def test_default_space_fits_itself_to_the_data() -> None:
    adult_like = default_space("shared_bottom", _spec(8, 6, 26_000))
    assert adult_like["bottom_dims"]["widths"] == [64, 128, 256]  # 14 columns: 16 each -> 256
    assert adult_like["n_bins"] == [16, 32] and adult_like["bin_source"] == "tree"
    few = default_space("mmoe", _spec(2, 1, 5_000))
    assert few["expert_dims"]["widths"] == [16, 32, 64]  # 3 columns: the floor of 64
    assert few["n_bins"] == [8, 16]  # few rows: coarser bins
    wide = default_space("mmoe", _spec(60, 4, 500_000))
    assert wide["expert_dims"]["widths"] == [128, 256, 512] and wide["n_bins"] == [16, 32, 64]
    regression = default_space("mmoe", _spec(2, 2, 5_000, ("regression", "regression")))
    assert regression["bin_source"] == "quantile"  # no label to grow trees on
    no_dense = default_space("mmoe", _spec(5, 0, 5_000))
    assert not {"numeric_encoding", "bin_source", "n_bins", "numeric_embed_dim", "periodic_sigma"} & set(no_dense)
    assert build_space("mmoe", {"common": {"n_bins": [16]}}, data=_spec(8, 6, 26_000)).widened == []
    assert build_space("mmoe", {"common": {"n_bins": [8, 16]}}, data=_spec(8, 6, 26_000)).widened == ["n_bins"]


def test_trials_train_at_the_final_batch_unless_the_space_names_it() -> None:
    assert with_default(None, "batch_size", 256) == {"batch_size": 256}
    assert with_default({"lr": 0.01}, "batch_size", 256) == {"lr": 0.01, "batch_size": 256}
    assert with_default({"mmoe": {"n_expert": 2}}, "batch_size", 256) == {"mmoe": {"n_expert": 2},
                                                                         "common": {"batch_size": 256}}
    assert with_default({"mmoe": {"batch_size": [128, 512]}}, "batch_size", 256) == {"mmoe": {"batch_size": [128, 512]}}
