"""The model zoo: its entries are the only list of models; the checks here are the zoo's invariants, for whatever
entries it holds, and a model added the way docs/models.md ("Adding a model") says, the guide's own code, is taken
in by configs, search space, factory, exports and docs checks (tests/test_model_guide.py runs the rest on it)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import _guide_model
import mtl_models
from mtl_models import SparseFeature, zoo
from mtl_models.onnx_export import example_inputs

REPO = Path(__file__).resolve().parents[1]
GUIDE = _guide_model.read_guide()
SHIPPED_CONFIGS = sorted((REPO / "configs").glob("*.yaml")) + [REPO / "deploy" / "cluster-config.yaml"]


@pytest.fixture()
def gated_bottom():
    """The guide's model (its code, read from docs/models.md), registered for one test."""
    if GUIDE.module_name in sys.modules:  # imported by the zoo itself
        pytest.skip("the guide's model is in the zoo already: this checkout followed the guide (test_model_guide.py)")
    entry = _guide_model.load_entry(GUIDE)
    zoo.register(entry)
    yield entry
    if entry.name in zoo.names():
        zoo.unregister(entry.name)
    _guide_model.forget(GUIDE)


# ---- the zoo itself ----------------------------------------------------------------------------------------

def _check_invariants(entry: zoo.ZooEntry) -> None:
    name = entry.name
    assert re.fullmatch(r"[a-z][a-z0-9_]*", name) and issubclass(entry.model_class, mtl_models.MultiTaskModel)
    # plain data: a space survives JSON (the config file and the study's settings), its keys have defaults
    assert json.loads(json.dumps(entry.space)) == zoo.space(name)
    assert set(entry.space) <= set(zoo.defaults(name))
    for key, value in zoo.defaults(name).items():  # the tests narrow every *_dims key (tests/_zoo_helpers.py)
        assert not key.endswith("_dims") or all(isinstance(w, int) and w > 0 for w in value), (name, key, value)
    features = [SparseFeature("a", 10, 4), SparseFeature("b", 5, 4)]
    torch.manual_seed(0)
    model = zoo.build(name, features, ["classification", "classification"]).eval()
    assert type(model) is entry.model_class and model.n_task == 2
    out = model(example_inputs(model, batch_size=3))
    assert out.shape == (3, 2) and torch.all((out > 0) & (out < 1))
    one_task = entry.single_task or name  # the single-task baseline's model takes one task
    assert zoo.get(one_task).single_task in (None, one_task)
    assert zoo.build(one_task, features, ["classification"])(example_inputs(model, batch_size=3)).shape == (3, 1)


def test_every_entry_keeps_the_zoo_invariants() -> None:
    assert len(zoo.names()) == len(set(zoo.names())) >= 1
    for entry in zoo.entries():
        _check_invariants(entry)


def test_the_guides_model_keeps_them_too(gated_bottom) -> None:
    assert zoo.names()[-1] == gated_bottom.name
    _check_invariants(gated_bottom)


def test_the_built_in_entries_own_keys() -> None:
    """What the built-in entries say (not which models there are: a sixth changes none of this)."""
    assert zoo.defaults("ple") == {"tower_dims": [32], "dropout": 0.1, "activation": "relu", "norm": "none",
                                   "n_level": 2, "n_expert_specific": 2, "n_expert_shared": 2, "expert_dims": [128, 64]}
    assert zoo.space("mmoe")["n_expert"] == {"low": 2, "high": 8}
    assert zoo.get("esmm").single_task == zoo.get("aitm").single_task == "shared_bottom"
    assert zoo.get("shared_bottom").single_task is None


def test_every_zoo_model_is_exported_by_its_class_name() -> None:
    for entry in zoo.entries():
        assert getattr(mtl_models, entry.model_class.__name__) is entry.model_class
        assert entry.model_class.__name__ in mtl_models.__all__


def docs_missing(root: Path, entries) -> list[str]:
    """Where the docs that list the models do not name one: README's mtl_models bullet (the class) and
    docs/search.md's "Search space" section (the class and each of its own space keys)."""
    readme = (root / "README.md").read_text()
    bullet = readme[readme.index("- **`mtl_models`**"):]
    bullet = bullet[:bullet.find("\n- ", 1)]
    search = (root / "docs" / "search.md").read_text()
    section = search[search.index("## Search space"):]
    section = section[:section.find("\n## ", 1)]
    missing = []
    for e in entries:
        cls = e.model_class.__name__
        if not re.search(rf"\b{cls}\b", bullet):
            missing.append(f"README.md: the mtl_models bullet does not name {cls}")
        absent = [k for k in [cls, *(f"`{k}`" for k in e.space)] if k not in section]
        if absent:
            missing.append(f"docs/search.md: the Search space section does not name {', '.join(absent)} ({e.name})")
    return missing


def test_the_docs_name_every_zoo_model() -> None:
    assert docs_missing(REPO, zoo.entries()) == []


def test_the_docs_check_names_a_model_the_docs_lack(gated_bottom) -> None:
    assert docs_missing(REPO, [gated_bottom]) == [
        "README.md: the mtl_models bullet does not name GatedBottom",
        "docs/search.md: the Search space section does not name GatedBottom, `gate_scale` (gated_bottom)"]


# ---- configs: every shipped one takes a new model, unless it excludes one on purpose ----------------------------

def test_every_shipped_config_runs_a_new_zoo_model(gated_bottom, tmp_path) -> None:
    from pipeline.cli import main
    from pipeline.config import load_config

    name = gated_bottom.name
    for path in SHIPPED_CONFIGS:
        assert name in load_config(path).models, f"{path.relative_to(REPO)} lists its models: say all or exclude"
    assert load_config(None).models == load_config({}).models == zoo.names()  # make run, mtlp compile
    assert main(["compile", "-o", str(tmp_path / "p.yaml")]) == 0  # mtlp compile without --config
    spec = yaml.safe_load_all((tmp_path / "p.yaml").read_text()).__next__()
    assert spec["root"]["inputDefinitions"]["parameters"]["models"]["defaultValue"] == zoo.names()
    assert name in zoo.names()
    # the deliberate exclusions stay: ESMM is refused on data that is no funnel (docs/models.md)
    for config in ("adult", "census-income", "adult-regression"):
        assert "esmm" not in load_config(REPO / "configs" / f"{config}.yaml").models
    assert yaml.safe_load((REPO / "configs" / "adult.yaml").read_text())["models"] == {"exclude": ["esmm"]}


def test_models_all_exclude_and_a_list() -> None:
    from pipeline.config import ConfigError, load_config

    assert load_config({"models": "all"}).models == zoo.names()
    assert load_config({"models": {"exclude": ["esmm", "aitm"]}}).models == [
        n for n in zoo.names() if n not in ("esmm", "aitm")]
    assert load_config({"models": ["ple", "mmoe"]}).models == ["ple", "mmoe"]
    for bad, message in [("some", r"^models must be a list of model names, 'all' or \{exclude: \[...\]\}, got 'some'$"),
                         ({"exclude": ["mmoe2"]}, r"^models.exclude: unknown model\(s\) \['mmoe2'\]; choose from"),
                         ({"include": ["mmoe"]}, r"^models: a mapping takes one key, exclude: \[names\]"),
                         ({"exclude": zoo.names()}, r"^models: choose at least one of"),
                         (5, r"^models must be a list of model names, 'all' or \{exclude: \[...\]\}, got 5$"),
                         (["mmoe", 3], r"^models must be a list of model names.*got \['mmoe', 3\]$")]:
        with pytest.raises(ConfigError, match=message):
            load_config({"models": bad})


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


def test_register_checks_the_entry_and_unregister_removes_it(gated_bottom) -> None:
    assert zoo.names()[-1] == gated_bottom.name and zoo.get(gated_bottom.name) is gated_bottom
    with pytest.raises(ValueError, match="model 'gated_bottom' is already in the zoo"):
        zoo.register(gated_bottom)
    bad = [(dict(name="Gated Bottom"), "use lower case letters"),
           (dict(name="x", model_class=nn.Linear), "model_class must be a MultiTaskModel subclass"),
           (dict(name="x", space={"gate_sharpness": [1, 2]}), r"space keys \['gate_sharpness'\] have no default"),
           (dict(name="x", single_task="nope"), "single_task 'nope' is not in the zoo")]
    for change, message in bad:
        fields = {**gated_bottom.__dict__, **change}
        with pytest.raises(ValueError, match=message):
            zoo.register(zoo.ZooEntry(**fields))
    assert "x" not in zoo.names()


def test_a_registered_model_is_known_to_config_space_and_factory(gated_bottom, prepared: Path) -> None:
    from pipeline.config import ConfigError, load_config
    from workflow.data.feature_spec import FeatureSpec
    from workflow.search.space import build_space, default_space
    from workflow.training.model_factory import build_model, single_task_family

    name = gated_bottom.name
    assert load_config({"models": [name, "mmoe"]}).models == [name, "mmoe"]
    assert {"gate_scale", "bottom_dims", "lr", "embed_dim"} <= set(default_space(name))
    space = build_space(name, {"common": {"n_expert": {"low": 2, "high": 4}}, name: {"gate_scale": 1.5}})
    assert space.specs["gate_scale"] == 1.5 and "n_expert" not in space.specs  # common keys it lacks are skipped
    assert single_task_family(name) == name and single_task_family("esmm") == "shared_bottom"
    model = build_model(name, FeatureSpec.load(prepared / "feature_spec.json"), {"gate_scale": 0.5})
    assert isinstance(model, gated_bottom.model_class) and model.gate_scale == 0.5 and model.n_task == 2
    zoo.unregister(name)
    try:
        with pytest.raises(ConfigError, match="models: unknown model 'gated_bottom'"):
            load_config({"models": [name]})
    finally:
        zoo.register(gated_bottom)


def test_mtl_models_imports_no_optuna_mlflow_or_kfp() -> None:
    code = ("import sys, mtl_models, mtl_models.zoo\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('optuna', 'mlflow', 'kfp')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from workflow.data.prepare import prepare

    out = tmp_path_factory.mktemp("zoo") / "funnel"
    prepare("synthetic-funnel", out, seed=5, options={"n_rows": 600, "n_users": 50, "n_items": 20})
    return out


def test_the_bench_builds_any_zoo_model_and_compares_only_what_torch_rechub_has(gated_bottom) -> None:
    from bench import bench_training as bt

    feats, vocab = ["a", "b"], {"a": 5, "b": 7}
    model = bt.ours("GatedBottom", feats, vocab)
    assert isinstance(model, gated_bottom.model_class)
    assert [m.out_features for m in model.bottom if isinstance(m, nn.Linear)] == bt.DIMS
    assert any(isinstance(m, nn.BatchNorm1d) for m in model.modules())  # bench_training's MLPs keep BatchNorm
    assert bt.ours("ESMM", feats, vocab).bottom is None  # as Torch-RecHub's ESMM: towers on the embeddings
    with pytest.raises(ValueError, match="Torch-RecHub 0.9.0 has no GatedBottom"):
        bt.rechub("GatedBottom", feats, vocab)
