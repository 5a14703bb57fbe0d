"""DataGenerator / TensorLoader: seeded splits, per-epoch permutations, table inputs, contiguous batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from mtl_models import DataGenerator, TensorLoader, make_loader
from mtl_models.metrics import logloss, mae, rmse, roc_auc


def _data(n: int = 1000):
    rng = np.random.default_rng(1)
    x = {"a": np.arange(n, dtype=np.int64), "b": rng.normal(size=n).astype(np.float32)}
    y = {"click": (rng.random(n) < 0.3).astype(np.float32), "buy": (rng.random(n) < 0.1).astype(np.float32)}
    return x, y


def _rows(loader) -> np.ndarray:
    return torch.cat([xb["a"] for xb, _ in loader]).numpy()


def test_split_is_seeded_disjoint_and_complete():
    x, y = _data()
    tr, va, te = DataGenerator(x, y).generate_dataloader(split_ratio=[0.7, 0.1], batch_size=64)
    a, b, c = _rows(tr), _rows(va), _rows(te)
    assert (len(a), len(b), len(c)) == (700, 100, 200)
    assert sorted(np.concatenate([a, b, c]).tolist()) == list(range(1000))
    tr2, va2, te2 = DataGenerator(x, y).generate_dataloader(split_ratio=[0.7, 0.1], batch_size=64)
    assert np.array_equal(np.sort(a), np.sort(_rows(tr2))) and np.array_equal(b, _rows(va2))
    _, va3, _ = DataGenerator(x, y, seed=7).generate_dataloader(split_ratio=[0.7, 0.1], batch_size=64)
    assert not np.array_equal(b, _rows(va3))
    assert tr.task_names == ["click", "buy"] and te.task_names == ["click", "buy"]


def test_labels_follow_their_rows():
    x, y = _data()
    tr, _, _ = DataGenerator(x, y).generate_dataloader(split_ratio=[0.5, 0.2], batch_size=100)
    for xb, yb in tr:
        idx = xb["a"].numpy()
        assert yb.shape == (len(idx), 2) and yb.dtype == torch.float32
        assert np.array_equal(yb[:, 0].numpy(), y["click"][idx]) and np.array_equal(yb[:, 1].numpy(), y["buy"][idx])
        assert np.allclose(xb["b"].numpy(), x["b"][idx])


def test_shuffle_differs_per_epoch_and_is_reproducible_by_epoch():
    x, y = _data()
    loader = make_loader(x, y, batch_size=128, shuffle=True, seed=3)
    e0, e1 = _rows(loader), _rows(loader)
    assert not np.array_equal(e0, e1) and sorted(e0.tolist()) == list(range(1000))
    loader.set_epoch(1)
    assert np.array_equal(_rows(loader), e1)
    other = make_loader(x, y, batch_size=128, shuffle=True, seed=3)
    assert np.array_equal(_rows(other), e0)
    plain = make_loader(x, y, batch_size=128)
    assert np.array_equal(_rows(plain), np.arange(1000))


def test_batches_are_views_of_contiguous_tensors():
    x, y = _data(300)
    loader = make_loader(x, y, batch_size=128)
    batches = list(loader)
    assert [len(xb["a"]) for xb, _ in batches] == [128, 128, 44] and len(loader) == 3
    xb, yb = batches[1]
    assert xb["a"].is_contiguous() and xb["a"].untyped_storage().data_ptr() == loader.x["a"].untyped_storage().data_ptr()
    assert xb["a"].dtype == torch.int64 and xb["b"].dtype == torch.float32
    assert len(make_loader(x, y, batch_size=128, drop_last=True)) == 2


def test_pandas_and_pyarrow_inputs_match_dicts():
    x, y = _data(200)
    ref = make_loader(x, y, batch_size=50)
    for table_x, table_y in [(pd.DataFrame(x), pd.DataFrame(y)), (pa.table(x), pa.table(y))]:
        loader = make_loader(table_x, table_y, batch_size=50)
        assert loader.task_names == ["click", "buy"]
        for (xa, ya), (xb, yb) in zip(loader, ref):
            assert torch.equal(xa["a"], xb["a"]) and torch.equal(xa["b"], xb["b"]) and torch.equal(ya, yb)
    both = pd.DataFrame({**x, **y})
    gen = DataGenerator(both[["a", "b"]], both[["click", "buy"]])
    assert gen.task_names == ["click", "buy"] and gen.x["a"].dtype == torch.int64


def test_make_loader_selects_features_and_works_without_labels():
    x, y = _data(100)
    loader = make_loader(x, None, batch_size=40, features=["b"])
    batches = list(loader)
    assert all(isinstance(b, dict) and list(b) == ["b"] for b in batches) and len(batches) == 3


def test_given_val_and_test_sets_and_errors():
    x, y = _data(100)
    tr, va, te = DataGenerator(x, y).generate_dataloader(x_val=x, y_val=y, x_test=x, y_test=y, batch_size=10)
    assert len(va) == 10 and not va.shuffle and tr.shuffle
    with pytest.raises(ValueError, match="split_ratio"):
        DataGenerator(x, y).generate_dataloader(batch_size=10)
    with pytest.raises(ValueError, match="rows"):
        TensorLoader({"a": torch.zeros(5)}, torch.zeros(4, 1))
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(x, y, batch_size=0)


def test_metrics_match_references():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.3
    s = np.round(rng.random(500), 1)  # many ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(roc_auc(np.zeros(5), np.arange(5)))
    assert logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)
    assert rmse([0, 0], [3, 4]) == pytest.approx(np.sqrt(12.5)) and mae([0, 0], [3, -4]) == pytest.approx(3.5)
