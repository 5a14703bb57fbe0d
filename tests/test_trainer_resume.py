"""Resume: a run interrupted after epoch k and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import pytest
import torch

from _trainer_helpers import build_model, make_data, one_thread
from mtl_models import Callback, DataGenerator, MTLTrainer
from mtl_models.trainer.checkpoint import load_checkpoint


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


class Crash(Exception):
    pass


class CrashAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == self.epoch:
            raise Crash(f"simulated crash after epoch {epoch}")


def _run(path, method: str, callbacks=(), resume: bool = False, model_seed: int = 0):
    x, y = make_data(900, seed=5)
    tr, va, _ = DataGenerator(x, y).generate_dataloader(split_ratio=[0.6, 0.2], batch_size=64)
    model = build_model("MMOE", seed=model_seed)
    model.towers[0][1] = torch.nn.Dropout(0.3)  # exercise the RNG: dropout inside the first tower
    sched = torch.optim.lr_scheduler.StepLR
    t = MTLTrainer(model, optimizer_params={"lr": 0.01, "weight_decay": 1e-4}, adaptive_params={"method": method},
                   scheduler_fn=sched, scheduler_params={"step_size": 2, "gamma": 0.5}, n_epoch=5,
                   earlystop_patience=10, device="cpu", model_path=path, progress=False, seed=123,
                   callbacks=list(callbacks))
    t.fit(tr, va, resume=resume)
    return t


@pytest.mark.parametrize("method", ["uwl", "gradnorm"])
def test_resume_reproduces_uninterrupted_run(tmp_path, method):
    full = _run(tmp_path / "full", method)
    with pytest.raises(Crash):
        _run(tmp_path / "cut", method, callbacks=[CrashAfter(1)])
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 1
    resumed = _run(tmp_path / "cut", method, resume=True, model_seed=99)  # a different init is overwritten
    assert len(resumed.history) == len(full.history) == 5
    assert resumed.history == full.history
    assert resumed.best_epoch == full.best_epoch and resumed.best_score == full.best_score
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    for name, a in full.weighting.state_dict().items():
        assert torch.equal(a, resumed.weighting.state_dict()[name]), name
    last_full = load_checkpoint(tmp_path / "full" / "last.pt")
    last_cut = load_checkpoint(tmp_path / "cut" / "last.pt")
    for name, a in last_full["model"].items():  # the final (not only the best) weights agree too
        assert torch.equal(a, last_cut["model"][name]), name


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    t = _run(tmp_path / "new", "equal", resume=True)
    assert len(t.history) == 5


@pytest.mark.parametrize("hard_links", [True, False])
def test_best_checkpoint_is_a_frozen_copy_of_that_epochs_last(tmp_path, monkeypatch, hard_links):
    """best.pt is linked (or copied) from last.pt; replacing last.pt later must not change it."""
    import os

    from mtl_models.trainer.checkpoint import link_checkpoint, save_checkpoint

    if not hard_links:
        def no_link(*args, **kwargs):
            raise OSError("no hard links on this filesystem")
        monkeypatch.setattr(os, "link", no_link)
    save_checkpoint(tmp_path / "last.pt", {"epoch": 3, "w": torch.arange(4.0)})
    link_checkpoint(tmp_path / "last.pt", tmp_path / "best.pt")
    save_checkpoint(tmp_path / "last.pt", {"epoch": 4, "w": torch.zeros(4)})
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == 3 and torch.equal(best["w"], torch.arange(4.0))
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no temporary file left
