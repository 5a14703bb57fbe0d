"""The streaming Parquet loader: every row once per epoch, a seeded reshuffle, data-parallel shards, the size rule
of ``split_loader``, the train step and ONNX parity check on streamed (sharded) splits, and bad shards named."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mtl_models.parquet_loader import ParquetLoader


def _write_shards(folder: Path, n: int, n_files: int, row_group: int) -> list[str]:
    """``n`` rows numbered 0..n-1 (``id`` int64, ``v`` float32, label ``y``) over ``n_files`` files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, part in enumerate(np.array_split(np.arange(n), n_files)):
        table = pa.table({"id": part.astype(np.int64), "v": part.astype(np.float32) / 10,
                          "y": (part % 2).astype(np.float32)})
        path = folder / f"part-{k:05d}.parquet"
        pq.write_table(table, path, row_group_size=row_group)
        paths.append(str(path))
    return paths


def _ids(loader, epoch: int) -> list[list[int]]:
    loader.set_epoch(epoch)
    return [xb["id"].tolist() for xb, _ in loader]


def test_each_epoch_reads_every_row_once_in_a_seeded_order(tmp_path):
    paths = _write_shards(tmp_path, 1003, 3, row_group=50)
    loader = ParquetLoader(paths, ["id", "v"], ["y"], batch_size=64, shuffle=True, seed=5, buffer_rows=200)
    e0, e1 = _ids(loader, 0), _ids(loader, 1)
    assert len(e0) == len(loader) == 16 and [len(b) for b in e0[:-1]] == [64] * 15
    for epoch in (e0, e1):
        assert sorted(sum(epoch, [])) == list(range(1003))
    assert e0 != e1 and e0 == _ids(loader, 0)  # reshuffled per epoch, reproducible from the epoch alone
    first = e0[0]
    assert max(first) - min(first) > 200  # the buffer mixes row groups (and shard order), not one slice of the file
    xb, yb = next(iter(loader))
    assert xb["id"].dtype == torch.int64 and xb["v"].dtype == torch.float32 and yb.shape == (64, 1)
    assert torch.equal(yb[:, 0], (xb["id"] % 2).float()) and torch.allclose(xb["v"], xb["id"].float() / 10)


def test_unshuffled_reads_the_files_in_order(tmp_path):
    paths = _write_shards(tmp_path, 1000, 2, row_group=128)
    loader = ParquetLoader(paths, ["id"], batch_size=300, buffer_rows=100)
    batches = [b["id"].tolist() for b in loader]
    assert [len(b) for b in batches] == [300, 300, 300, 100]
    assert sum(batches, []) == list(range(1000))


@pytest.mark.parametrize("n, world, row_group", [(1000, 2, 64), (1001, 2, 64), (997, 4, 100), (90, 4, 1000)])
def test_training_shards_read_their_own_row_groups_with_equal_steps(tmp_path, n, world, row_group):
    loader = ParquetLoader(_write_shards(tmp_path, n, 1, row_group), ["id"], ["y"], batch_size=64, shuffle=True,
                           seed=3, buffer_rows=128)
    for epoch in (0, 1):
        shards = [_ids(loader.shard(r, world), epoch) for r in range(world)]
        assert len({len(s) for s in shards}) == 1, "every rank must run the same number of steps"
        assert len(shards[0]) == len(loader.shard(0, world))
        rows = [sum(s, []) for s in shards]
        assert set().union(*map(set, rows)) == set(range(n))  # nothing lost; padding only repeats a rank's rows
        sets = [set(r) for r in rows]
        assert all(not a & b for i, a in enumerate(sets) for b in sets[i + 1:])  # each rank reads its own rows


@pytest.mark.parametrize("row_group", [40, 5000])  # 5000: one row group, fewer than ranks: it is cut in slices
def test_evaluation_shards_cover_each_row_once_in_file_order(tmp_path, row_group):
    loader = ParquetLoader(_write_shards(tmp_path, 1003, 1, row_group), ["id"], ["y"], batch_size=100)
    parts = [sum(_ids(loader.shard(r, 3, pad=False), 0), []) for r in range(3)]
    assert sum(parts, []) == list(range(1003)) and all(parts)  # every rank has rows: each joins the gathers


def test_bad_shards_are_named(tmp_path):
    paths = _write_shards(tmp_path / "ok", 100, 2, 50)
    other = tmp_path / "ok" / "part-00002.parquet"
    pq.write_table(pa.table({"id": np.arange(5), "v": np.ones(5, np.float32)}), other)  # no label column
    with pytest.raises(ValueError, match=r"part-00002\.parquet lacks column\(s\) \['y'\]"):
        ParquetLoader(paths + [str(other)], ["id", "v"], ["y"])
    corrupt = tmp_path / "ok" / "part-00003.parquet"
    corrupt.write_bytes(b"not parquet at all" * 10)
    with pytest.raises(ValueError, match=r"part-00003\.parquet cannot be read as parquet"):
        ParquetLoader(paths + [str(corrupt)], ["id", "v"], ["y"])


def test_fsspec_urls_are_read(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    paths = _write_shards(tmp_path, 300, 2, 100)
    fs = fsspec.filesystem("memory")
    urls = []
    for p in paths:
        fs.pipe(f"/bucket/{Path(p).name}", Path(p).read_bytes())
        urls.append(f"memory://bucket/{Path(p).name}")
    assert sum(_ids(ParquetLoader(urls, ["id"], ["y"], batch_size=64), 0), []) == list(range(300))


# ------------------------------------------------------------------ the train step on streamed splits
@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from workflow.data.prepare import prepare

    out = tmp_path_factory.mktemp("stream") / "prepared"
    prepare("synthetic-funnel", out, seed=3, options={"n_rows": 6000, "n_users": 300, "n_items": 100})
    return out


def _resharded(prepared: Path, dest: Path, rows_per_file: int) -> Path:
    """The same prepared data with each split as a folder of shards (what the streaming prepare writes)."""
    dest.mkdir()
    shutil.copy(prepared / "feature_spec.json", dest / "feature_spec.json")
    for split in ("train", "val", "test"):
        table = pq.read_table(prepared / f"{split}.parquet")
        (dest / split).mkdir()
        for k, start in enumerate(range(0, table.num_rows, rows_per_file)):
            pq.write_table(table.slice(start, rows_per_file), dest / split / f"part-{k:05d}.parquet",
                           row_group_size=250)
    return dest


def test_size_rule_picks_the_loader_and_both_see_the_same_rows(prepared, tmp_path):
    from mtl_models import TensorLoader
    from workflow.training.artifacts import read_spec, split_bytes, split_loader

    spec = read_spec(prepared)
    cols = spec.feature_names + spec.label_names
    size = split_bytes(prepared, "test", cols)
    assert size == 600 * sum(pq.read_schema(prepared / "test.parquet").field(c).type.byte_width for c in cols)
    memory = split_loader(prepared, "test", spec, 256, stream_above_bytes=size)
    streamed = split_loader(prepared, "test", spec, 256, stream_above_bytes=size - 1)
    assert isinstance(memory, TensorLoader) and isinstance(streamed, ParquetLoader)
    for (xa, ya), (xb, yb) in zip(memory, streamed, strict=True):  # unshuffled: the same batches, file order
        assert all(torch.equal(xa[k], xb[k]) for k in spec.feature_names) and torch.equal(ya, yb)


def test_train_and_export_stream_sharded_splits(prepared, tmp_path, monkeypatch):
    from workflow.training.export import export
    from workflow.training.train import train

    sharded = _resharded(prepared, tmp_path / "sharded", rows_per_file=1000)
    common = dict(params={"batch_size": 512}, n_epoch=2, patience=2, device="cpu", progress=False, seed=0)
    in_memory = train(prepared, "mmoe", tmp_path / "memory", **common)
    monkeypatch.setenv("MTLP_STREAM_ABOVE_BYTES", "0")  # every split streams
    read_whole = []
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: read_whole.append(a) or pytest.fail("read a whole table"))
    streamed = train(sharded, "mmoe", tmp_path / "streamed", **common)
    assert read_whole == []
    assert len(streamed.history) == 2 and set(streamed.test_metrics) == {"click", "conversion"}
    assert np.isfinite(streamed.history[-1]["train/loss"]) and np.isfinite(streamed.test_metrics["click"]["auc"])
    # the streamed test split is the in-memory one, row for row: one model predicts the same on both
    from workflow.training.evaluate import predict_prepared

    on_stream = predict_prepared(tmp_path / "memory", sharded)
    monkeypatch.delenv("MTLP_STREAM_ABOVE_BYTES")
    monkeypatch.undo()
    assert np.array_equal(on_stream, predict_prepared(tmp_path / "memory", prepared))
    assert streamed.test_metrics != in_memory.test_metrics  # trained on another order: a different model
    exported = export(tmp_path / "streamed", sharded)
    assert exported.n_rows_checked == 600 and exported.parity_max_abs_diff <= 1e-5
