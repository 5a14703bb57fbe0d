"""Numeric encodings of dense features: the feature objects, the layers' values, the bins the spec fits on the
train split, every model built from a spec with each encoding, ONNX parity and raw-row serving."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workflow.data.encoders import DenseEncoder, TREE_BIN_COUNTS, fit_dense, fit_tree_edges
from workflow.data.errors import DataError
from workflow.data.feature_spec import NUMERIC_ENCODINGS, FeatureSpec
from workflow.training.model_factory import build_model
from mtl_models import DenseFeature, SharedBottom, SparseFeature, zoo
from mtl_models.features import Periodic, PiecewiseLinear, QuantileBins
from mtl_models.layers import FeatureEmbedding
from mtl_models.layers.numeric import QuantileBinEmbeddings

# (encoding, bin_source): every kind the pipeline can build, tree bins for the binned kinds once
ENCODINGS = [("standard", "quantile"), ("bins", "quantile"), ("bins", "tree"), ("piecewise_linear", "quantile"),
             ("piecewise_linear", "tree"), ("periodic", "quantile"), ("gated_bins", "tree")]


def test_dense_feature_checks_its_encoding() -> None:
    assert DenseFeature("x").encoding is None and DenseFeature("x", 3).embed_dim == 3  # the seed's calls
    with pytest.raises(ValueError, match="edges of feature 'x'"):
        DenseFeature("x", 4, PiecewiseLinear((1.0, 0.5)))  # not increasing
    with pytest.raises(ValueError, match="edges of feature 'x'"):
        DenseFeature("x", 4, QuantileBins((0.0,)))  # one edge is no bin
    with pytest.raises(ValueError, match="sigma of feature 'x'"):
        DenseFeature("x", 4, Periodic(8, 0.0))
    with pytest.raises(ValueError, match="encoding of feature 'x'"):
        DenseFeature("x", 4, "piecewise_linear")


def test_quantile_bins_look_up_the_bin_of_each_value() -> None:
    layer = QuantileBinEmbeddings([(0.0, 1.0, 2.0, 3.0), (-1.0, 1.0)], embed_dim=2)
    x = torch.tensor([[-5.0, 0.0], [0.999, 1.0], [1.0, 7.0], [2.5, -3.0], [9.0, 0.5]])
    out = layer(x)  # [5, 2 * 2]
    # feature 0 has bins 0..2 (rows 0..2); below the first edge is bin 0, an inner edge starts the upper bin,
    # above the last edge is the last bin; feature 1 has one bin (row 3)
    rows = torch.tensor([[0, 3], [0, 3], [1, 3], [2, 3], [2, 3]])
    torch.testing.assert_close(out, layer.table.weight[rows].flatten(1), rtol=0, atol=0)


def test_piecewise_linear_starts_as_a_linear_map_and_is_continuous() -> None:
    """Version B of the package: ``x * w + b + relu(ple(x) @ W)`` with W zero at init, so training starts from a
    linear embedding; and the encoding is continuous at the edges."""
    torch.manual_seed(0)
    emb = FeatureEmbedding([DenseFeature("x", 4, PiecewiseLinear((-1.0, 0.0, 2.0)))])
    inner = emb.numeric.blocks[0].inner
    x = torch.linspace(-3, 3, 61)
    out = emb({"x": x})  # [61, 4]
    w, b = inner.linear0.weight[0], inner.linear0.bias[0]
    torch.testing.assert_close(out, x[:, None] * w + b)
    with torch.no_grad():
        inner.linear.weight.normal_()
    at = torch.tensor([0.0])
    left, right = emb({"x": at - 1e-4}), emb({"x": at + 1e-4})
    assert (left - right).abs().max() < 1e-2 and not torch.equal(emb({"x": x}), out)


@pytest.mark.parametrize("kind", ["bins", "gated_bins", "piecewise_linear", "periodic"])
def test_table_product_path_stays_exact_with_encoded_dense_features(kind: str) -> None:
    """Encoded dense columns ride in the lookup's dense part, which the product path multiplies as plain columns."""
    torch.manual_seed(0)
    edges = (-2.0, -0.5, 0.0, 0.7, 2.0)
    enc = {"bins": QuantileBins(edges), "gated_bins": QuantileBins(edges, gated=True),
           "piecewise_linear": PiecewiseLinear(edges), "periodic": Periodic(6, 0.5)}[kind]
    emb = FeatureEmbedding([SparseFeature("user", 40, 16), DenseFeature("price"),
                            DenseFeature("age", 5, enc), DenseFeature("hours", 3, enc)]).train()
    g = torch.Generator().manual_seed(1)
    x = {"user": torch.randint(0, 40, (512,), generator=g), "price": torch.rand(512, generator=g),
         "age": torch.randn(512, generator=g), "hours": torch.randn(512, generator=g)}
    lookup = emb.lookup(x)
    assert lookup.uses_products() and emb.output_dim == 16 + 1 + 5 + 3
    weight = torch.randn(24, emb.output_dim, requires_grad=True)
    fast = lookup.linear(weight)
    fast_grads = torch.autograd.grad(fast.pow(2).sum(), [weight, *emb.parameters()])
    slow = F.linear(emb(x), weight)
    slow_grads = torch.autograd.grad(slow.pow(2).sum(), [weight, *emb.parameters()])
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    for a, b in zip(fast_grads, slow_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_dense_encoder_keeps_train_quantiles_and_tree_bins() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 100, 4000)
    enc = fit_dense("x", "x", x)
    edges = enc.bin_edges(4)
    expected = enc.transform_numbers(np.quantile(x, [0, 0.25, 0.5, 0.75, 1.0]))
    np.testing.assert_allclose(edges, expected, atol=2e-2)  # quantiles at 1/256 resolution of 4,000 values
    assert all(a < b for a, b in zip(edges, edges[1:]))
    y = (x > 70).astype(np.float32)  # the label flips at 70: a tree bin edge must sit there
    fit_tree_edges(enc, enc.transform_numbers(x), [y])
    assert sorted(enc.tree_edges) == sorted(str(n) for n in TREE_BIN_COUNTS)
    at_70 = float(enc.transform_numbers(np.array([70.0]))[0])
    assert min(abs(e - at_70) for e in enc.bin_edges(8, "tree")) < 0.01
    back = DenseEncoder.from_dict(enc.to_dict())
    assert back.bin_edges(16, "tree") == enc.bin_edges(16, "tree") and back.bin_edges(7) == enc.bin_edges(7)


def test_bin_edges_of_a_point_mass_and_of_old_specs() -> None:
    x = np.zeros(1000)
    x[:50] = np.arange(50) + 1.0  # 95 % zeros: quantile bins collapse onto few edges
    enc = fit_dense("gain", "gain", x)
    edges = enc.bin_edges(32)
    assert 2 <= len(edges) < 10 and len(set(edges)) == len(edges)
    assert fit_dense("c", "c", np.ones(10)).bin_edges(8) == (0.0,)  # constant: one edge, no bin
    old = DenseEncoder.from_dict({k: v for k, v in enc.to_dict().items() if k not in ("quantiles", "tree_edges")})
    with pytest.raises(DataError, match="'gain' has no train quantiles"):
        old.bin_edges(8)
    with pytest.raises(DataError, match="'gain' has no tree bins"):
        old.bin_edges(8, "tree")
    fit_tree_edges(enc, enc.transform_numbers(x), [(x > 10).astype(np.float32)])
    with pytest.raises(DataError, match="n_bins=5"):
        enc.bin_edges(5, "tree")


@pytest.fixture(scope="module")
def small_prepared(tmp_path_factory):
    """A generated two-task table with heavy-tailed and constant numerics, prepared as a user's CSV would be."""
    from workflow.data.datasets.base import build_from_raw, RawTables, TableSchema
    from workflow.data.encoders import LabelSpec
    from workflow.data.prepare import write_outputs
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 600
    gain = np.where(rng.random(n) < 0.9, 0.0, rng.exponential(5000, n))
    frame = pd.DataFrame({"city": rng.choice(["a", "b", "c"], n), "age": rng.integers(18, 80, n).astype(float),
                          "gain": gain, "flat": np.full(n, 3.0)})
    frame["click"] = ((frame.age > 40) | (gain > 3000)).astype(int)
    frame["buy"] = (rng.random(n) < 0.3).astype(int)
    schema = TableSchema(sparse=["city"], dense=["age", "gain", "flat"], log1p=["gain"],
                         labels=[LabelSpec("click", "classification", "click"),
                                 LabelSpec("buy", "classification", "buy")])
    prepared = build_from_raw("small", RawTables(schema=schema, train=frame, test=None, test_fraction=0.2),
                              seed=0, val_fraction=0.1)
    out = tmp_path_factory.mktemp("numeric") / "prepared"
    write_outputs(prepared, out)
    return out, frame


@pytest.mark.parametrize("encoding, bin_source", ENCODINGS)
def test_every_model_builds_and_runs_with_each_encoding(small_prepared, encoding: str, bin_source: str) -> None:
    prepared, _ = small_prepared
    spec = FeatureSpec.load(prepared)
    params = {"numeric_encoding": encoding, "bin_source": bin_source, "n_bins": 8, "numeric_embed_dim": 4,
              "periodic_sigma": 0.5, "norm": "none"}
    x = {"city": torch.tensor([1, 2, 0]), "age": torch.tensor([-1.0, 0.0, 2.0]),
         "gain": torch.tensor([-0.3, 0.1, 3.0]), "flat": torch.zeros(3)}
    for name in zoo.names():
        model = build_model(name, spec, params).eval()
        dense = {f.name: f for f in model.features if isinstance(f, DenseFeature)}
        assert dense["flat"].encoding is None  # a constant column stays a plain value
        kinds = {"standard": type(None), "bins": QuantileBins, "gated_bins": QuantileBins,
                 "piecewise_linear": PiecewiseLinear, "periodic": Periodic}
        assert isinstance(dense["gain"].encoding, kinds[encoding])
        assert getattr(dense["gain"].encoding, "gated", False) == (encoding == "gated_bins")
        if encoding != "standard":
            assert dense["age"].embed_dim == 4
        out = model(x)
        assert out.shape == (3, 2) and torch.isfinite(out).all() and ((out > 0) & (out < 1)).all()


def test_unknown_encoding_is_named(small_prepared) -> None:
    spec = FeatureSpec.load(small_prepared[0])
    with pytest.raises(DataError, match="'splines'"):
        spec.to_features(numeric_encoding="splines")
    assert NUMERIC_ENCODINGS == ("standard", "bins", "gated_bins", "piecewise_linear", "periodic")


@pytest.mark.slow
@pytest.mark.parametrize("encoding, bin_source", ENCODINGS)
def test_trained_champion_exports_and_serves_raw_rows(small_prepared, tmp_path, encoding: str,
                                                      bin_source: str) -> None:
    """Train, export (the step's own parity check over real test rows, <= 1e-5), then the registered pyfunc's
    class answers raw rows, which it encodes through the shipped spec, as the torch model does."""
    pytest.importorskip("mlflow")
    from workflow import serving
    from workflow.serving.pyfunc_model import RawRowsMultiTaskModel
    from workflow.training.artifacts import load_trained
    from workflow.training.export import export
    from workflow.training.train import train

    prepared, frame = small_prepared
    params = {"numeric_encoding": encoding, "bin_source": bin_source, "n_bins": 8, "numeric_embed_dim": 4,
              "periodic_sigma": 0.5, "bottom_dims": [16], "tower_dims": [8], "batch_size": 128}
    out = tmp_path / "model"
    train(prepared, "shared_bottom", out, params=params, n_epoch=2, patience=2, device="cpu", progress=False)
    result = export(out, prepared)
    assert result.parity_max_abs_diff <= 1e-5 and result.n_rows_checked > 0

    pkg = serving.build_spec_package(tmp_path / "code")
    sys.path.insert(0, str(pkg.parent))
    try:
        served = RawRowsMultiTaskModel()
        served.load_context(SimpleNamespace(artifacts={"feature_spec": str(out / "feature_spec.json"),
                                                       "onnx_model": str(result.onnx_path)}))
        raw = frame.drop(columns=["click", "buy"]).head(50)
        got = served.predict(None, raw).to_numpy()
    finally:
        sys.path.remove(str(pkg.parent))
    model, spec, _ = load_trained(out)
    x = {k: torch.from_numpy(v) for k, v in spec.encode(raw).items()}
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.shape == (50, 2) and np.abs(got - expected).max() <= 1e-5


@pytest.mark.parametrize("model_name, family", [("mmoe", "mmoe"), ("aitm", "shared_bottom")])
def test_single_task_baselines_train_one_model_of_the_family_per_task(small_prepared, tmp_path, model_name: str,
                                                                       family: str) -> None:
    from workflow.training.artifacts import load_trained
    from workflow.training.train import single_task_baselines, train

    prepared, _ = small_prepared
    params = {"numeric_encoding": "bins", "bin_source": "tree", "n_bins": 8, "embed_dim": 4, "tower_dims": [8],
              "batch_size": 128, **({"expert_dims": [16], "n_expert": 2} if model_name == "mmoe" else
                                    {"bottom_dims": [16], "attention_dim": 8})}
    results = single_task_baselines(prepared, model_name, tmp_path, params, n_epoch=1, patience=1, device="cpu")
    assert list(results) == ["click", "buy"]
    for task, r in results.items():
        assert r.model_name == family and list(r.test_metrics) == [task] and 0.0 <= r.test_metrics[task]["auc"] <= 1.0
        model, spec, _ = load_trained(tmp_path / task)
        assert spec.label_names == [task] and model.task_types == ["classification"]
        assert model.features[1].encoding is not None  # the same numeric encoding as the multi-task model
    with pytest.raises(ValueError, match=r"tasks \['nope'\] must be a non-empty subset"):
        train(prepared, "shared_bottom", tmp_path / "x", tasks=["nope"], n_epoch=1, device="cpu", progress=False)


@pytest.mark.slow
def test_train_step_logs_single_task_baselines_on_the_model_run(small_prepared, tmp_path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    from workflow import steps

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    prepared, _ = small_prepared
    work = tmp_path / "run"
    steps.start_pipeline_run({"tracking": {"experiment": "e"}, "dataset": {"name": "small"}}, work, "r1")
    run_id = steps.start_model_run("r1", "e", "shared_bottom", work)
    result = steps.train_step(prepared, "shared_bottom", tmp_path / "trained", run_id, work,
                              best_params={"bottom_dims": [16], "tower_dims": [8], "batch_size": 128},
                              n_epoch=1, patience=1, device="cpu", single_task=True)
    metrics = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow.db'}").get_run(run_id).data.metrics
    for task in ("click", "buy"):
        assert 0.0 <= metrics[f"single_task/{task}/auc"] <= 1.0 and f"test/{task}/auc" in metrics
        assert (work / "single-task" / "shared_bottom" / task / "model.pt").is_file()
    assert result.task_names == ["click", "buy"]


def test_gated_bins_mix_the_bin_embedding_with_the_raw_value_through_a_learned_gate() -> None:
    """g * table[bin] + (1 - g) * (x w + b), g = sigmoid(gate): the gate's two ends are the plain bins and a linear
    map of the value, and inside one bin only the gated form still moves with the value."""
    from mtl_models.layers.numeric import QuantileBinEmbeddings

    torch.manual_seed(0)
    edges = [(-1.0, 0.0, 1.0)]
    gated, plain = QuantileBinEmbeddings(edges, 3, gated=True), QuantileBinEmbeddings(edges, 3)
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if k in plain.state_dict()})
    x = torch.tensor([[0.2], [0.7]])  # the same bin
    torch.testing.assert_close(plain(x)[0], plain(x)[1])
    assert not torch.allclose(gated(x)[0], gated(x)[1])
    with torch.no_grad():
        gated.gate.fill_(30.0)  # g -> 1: the bins alone
    torch.testing.assert_close(gated(x), plain(x))
    with torch.no_grad():
        gated.gate.fill_(-30.0)  # g -> 0: the value's linear map alone
    torch.testing.assert_close(gated(x), (x.unsqueeze(-1) * gated.raw_weight + gated.raw_bias).flatten(1))
