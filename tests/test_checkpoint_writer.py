"""CheckpointWriter: snapshots are isolated from later in-place updates, failures reach the caller, writes keep
their order, and MTLTrainer's background checkpoints equal its synchronous ones."""

from __future__ import annotations

import threading
from collections import OrderedDict

import pytest
import torch

from _trainer_helpers import build_model, make_data, one_thread
from mtl_models import DataGenerator, MTLTrainer
from mtl_models.trainer import checkpoint as checkpoint_module
from mtl_models.trainer.checkpoint import CheckpointWriter, load_checkpoint


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


@pytest.fixture
def gated_save(monkeypatch):
    """``save_checkpoint`` held until the test opens the gate: the write is deterministically still pending."""
    gate, started = threading.Event(), threading.Event()
    real = checkpoint_module.save_checkpoint

    def slow_save(path, state):
        started.set()
        assert gate.wait(10), "the test never opened the gate"
        return real(path, state)

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", slow_save)
    return gate, started


def test_snapshot_is_isolated_from_in_place_updates(tmp_path, gated_save):
    gate, started = gated_save
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    history = [{"loss": 1.0}]
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "history": history,
             "nested": [torch.arange(4.0), (torch.ones(2), "tag")]}
    expected = {"weight": model.weight.detach().clone(), "exp_avg": opt.state[model.weight]["exp_avg"].clone()}

    with CheckpointWriter() as writer:
        writer.submit(tmp_path / "c.pt", state)
        assert started.wait(10)
        model(torch.ones(4, 3)).sum().backward()  # what the next epoch does while the write is pending
        opt.step()
        with torch.no_grad():
            model.weight.add_(100.0)
            state["nested"][0].zero_()
            state["nested"][1][0].fill_(7.0)
        history.append({"loss": 0.5})
        assert not (tmp_path / "c.pt").exists()
        gate.set()
        writer.wait()

    saved = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(saved["model"]["weight"], expected["weight"])
    assert not torch.equal(saved["model"]["weight"], model.weight.detach())
    assert torch.equal(saved["optimizer"]["state"][0]["exp_avg"], expected["exp_avg"])
    assert saved["history"] == [{"loss": 1.0}]
    assert torch.equal(saved["nested"][0], torch.arange(4.0))
    assert torch.equal(saved["nested"][1][0], torch.ones(2)) and saved["nested"][1][1] == "tag"
    assert isinstance(saved["model"], OrderedDict)
    assert saved["model"]._metadata == model.state_dict()._metadata  # state_dict versions survive the copy


def test_failed_write_is_raised_by_wait_and_the_writer_recovers(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    bad = blocker / "c.pt"
    with CheckpointWriter() as writer:
        writer.submit(bad, {"w": torch.ones(2)})
        with pytest.raises(OSError) as info:
            writer.wait()
        assert any(str(bad) in note for note in getattr(info.value, "__notes__", [str(bad)]))
        writer.wait()  # the error was reported once; nothing pending, no hang
        writer.submit(tmp_path / "ok.pt", {"w": torch.ones(2)})
        writer.wait()
    assert torch.equal(load_checkpoint(tmp_path / "ok.pt")["w"], torch.ones(2))


def test_failed_write_surfaces_at_the_next_submit(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    writer = CheckpointWriter()
    writer.submit(blocker / "c.pt", {"w": torch.ones(2)})
    writer._queue.join()  # the failed write has finished (without reporting it)
    with pytest.raises(OSError):
        writer.submit(tmp_path / "next.pt", {"w": torch.zeros(2)})
    writer.submit(tmp_path / "next.pt", {"w": torch.zeros(2)})
    writer.close()
    assert torch.equal(load_checkpoint(tmp_path / "next.pt")["w"], torch.zeros(2))
    assert writer._thread is None


def test_close_raises_a_pending_failure_unless_the_caller_is_failing(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        with CheckpointWriter() as writer:
            writer.submit(blocker / "c.pt", {"w": torch.ones(2)})
    with pytest.raises(KeyError):  # the caller's own exception is the one that propagates
        with CheckpointWriter() as writer:
            writer.submit(blocker / "c.pt", {"w": torch.ones(2)})
            raise KeyError("training failed")


def test_writes_to_one_path_land_in_submit_order(tmp_path, gated_save):
    gate, started = gated_save
    path = tmp_path / "last.pt"
    with CheckpointWriter(max_pending=16) as writer:
        for i in range(8):
            writer.submit(path, {"i": i, "t": torch.full((3,), float(i))})
        gate.set()
        writer.wait()
        assert load_checkpoint(path)["i"] == 7
    assert torch.equal(load_checkpoint(path)["t"], torch.full((3,), 7.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary files left


def test_synchronous_mode_writes_inline(tmp_path):
    writer = CheckpointWriter(synchronous=True)
    writer.submit(tmp_path / "c.pt", {"w": torch.ones(2)})
    assert (tmp_path / "c.pt").exists() and writer._thread is None
    (tmp_path / "f").write_text("x")
    with pytest.raises(OSError):  # raised by submit itself
        writer.submit(tmp_path / "f" / "c.pt", {"w": torch.ones(2)})


def _assert_same(a, b, where="state"):
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
        assert getattr(a, "_metadata", None) == getattr(b, "_metadata", None), where
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_fit_background_checkpoints_equal_synchronous_ones(tmp_path, monkeypatch):
    from mtl_models.trainer import trainer as trainer_module

    writers: dict[bool, set[str]] = {True: set(), False: set()}
    real = trainer_module.save_checkpoint

    def recorded(path, state):
        writers[background].add(threading.current_thread().name)
        return real(path, state)

    monkeypatch.setattr(trainer_module, "save_checkpoint", recorded)
    x, y = make_data(600, seed=3)
    runs = {}
    for background in (True, False):
        tr, va, _ = DataGenerator(x, y).generate_dataloader(split_ratio=[0.6, 0.2], batch_size=64)
        model = build_model("MMOE", seed=0)
        model.towers[0][1] = torch.nn.Dropout(0.3)  # the RNG state in last.pt matters too
        out = tmp_path / ("bg" if background else "sync")
        t = MTLTrainer(model, optimizer_params={"lr": 0.01}, adaptive_params={"method": "uwl"}, n_epoch=3,
                       device="cpu", model_path=out, progress=False, seed=7, background_checkpoints=background)
        assert t.background_checkpoints is background
        t.fit(tr, va)
        runs[background] = (t, out)
        assert t._checkpoints._thread is None  # fit stopped the writer thread
    assert writers == {True: {"checkpoint-writer"}, False: {threading.current_thread().name}}
    (bg, bg_dir), (sync, sync_dir) = runs[True], runs[False]
    assert bg.history == sync.history and bg.best_epoch == sync.best_epoch
    for name in ("best.pt", "last.pt"):
        _assert_same(load_checkpoint(bg_dir / name), load_checkpoint(sync_dir / name), name)
    assert load_checkpoint(bg_dir / "last.pt")["epoch"] == 2
    assert sorted(p.name for p in bg_dir.iterdir()) == ["best.pt", "last.pt"]
