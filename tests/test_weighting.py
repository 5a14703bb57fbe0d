"""Weighting methods: registry, equal/static weights, UWL's optimum, GradNorm's invariants."""

from __future__ import annotations

import math

import pytest
import torch

from _trainer_helpers import MODEL_NAMES, build_model, make_data, one_thread
from mtl_models import WEIGHTINGS, DataGenerator, MTLTrainer
from mtl_models.weighting import GradNormWeighting, UncertaintyWeighting, build_weighting


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def test_registry_and_errors():
    assert {"equal", "uwl", "gradnorm"} <= set(WEIGHTINGS)
    assert isinstance(build_weighting({"method": "uwl"}, ["regression"] * 2), UncertaintyWeighting)
    with pytest.raises(ValueError, match="gradnorm"):
        build_weighting({"method": "nope"}, ["classification"])
    with pytest.raises(ValueError, match="unknown key"):
        build_weighting({"method": "uwl", "bogus": 1}, ["classification"])


def test_equal_static_weights_scale_gradients():
    p = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    w = build_weighting({"method": "equal", "weights": [2.0, 0.5]}, ["regression"] * 2)
    used = w.backward(p * torch.tensor([3.0, 4.0]), extra_loss=p.sum())
    assert used.tolist() == [2.0, 0.5]
    assert p.grad.tolist() == [2.0 * 3.0 + 1.0, 0.5 * 4.0 + 1.0]


@pytest.mark.parametrize("task_type, optimum", [("regression", math.log), ("classification", lambda l: math.log(2 * l))])
def test_uwl_log_variances_reach_the_analytic_optimum(task_type, optimum):
    # losses that differ by 10x: the noisier task must end with the smaller weight, s_t -> log(c L_t)
    w = UncertaintyWeighting([task_type] * 2)
    opt = torch.optim.Adam(w.parameters(), lr=0.08)
    losses = torch.tensor([1.0, 10.0])
    for _ in range(400):
        opt.zero_grad()
        w.backward(losses.clone().requires_grad_())
        opt.step()
    s = w.log_vars.detach()
    assert s[0].item() == pytest.approx(optimum(1.0), abs=0.05)
    assert s[1].item() == pytest.approx(optimum(10.0), abs=0.05)
    weights = w.current_weights()
    assert weights[0] / weights[1] == pytest.approx(10.0, rel=0.1)


def test_uwl_in_training_moves_weights_apart(tmp_path):
    x, y = make_data(2000, regression=True)
    y = {"small": y["value"] / math.sqrt(10) / 3, "large": y["value"] / 3}  # MSEs 10x apart
    tr, va, _ = DataGenerator(x, y).generate_dataloader(split_ratio=[0.8, 0.1], batch_size=128)
    model = build_model("SharedBottom", ["regression", "regression"])
    t = MTLTrainer(model, adaptive_params={"method": "uwl", "lr": 0.05}, n_epoch=4, device="cpu",
                   model_path=tmp_path, progress=False, monitor="val/large/rmse")
    t.fit(tr, va)
    w = [h["weight/small"] / h["weight/large"] for h in t.history]
    assert w[-1] > w[0] > 1.0 and w[-1] > 3.0
    s = t.weighting.log_vars.detach()
    assert s[1] > s[0] and torch.all(s.abs() < 20)
    assert not any(k.startswith("log_vars") for k in t.model.state_dict())
    group = t.optimizer.param_groups[1]
    assert group["weight_decay"] == 0.0 and group["params"][0] is t.weighting.log_vars


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gradnorm_weights_positive_sum_to_n_and_change(name, tmp_path):
    x, y = make_data(1200)
    tr, va, _ = DataGenerator(x, y).generate_dataloader(split_ratio=[0.8, 0.1], batch_size=100)
    t = MTLTrainer(build_model(name), adaptive_params={"method": "gradnorm", "alpha": 1.5, "lr": 0.01},
                   n_epoch=1, device="cpu", model_path=tmp_path, progress=False)
    t._resolve_task_names(tr)
    seen = []
    for xb, yb in tr:
        target = t.model.training_targets(yb)
        losses = t.task_losses(t.model(xb), target)
        t.optimizer.zero_grad()
        t.weighting.backward(losses)
        assert t.weighting.weights.grad is not None and all(p.grad is not None for p in t.model.last_shared_parameters())
        t.optimizer.step()
        t.weighting.after_step()
        w = t.weighting.current_weights()
        assert torch.all(w > 0) and w.sum().item() == pytest.approx(2.0, abs=1e-5)
        seen.append(w)
    assert len({tuple(round(v, 6) for v in w.tolist()) for w in seen}) > 3


def test_gradnorm_moves_weight_away_from_the_task_with_larger_gradient():
    # alpha = 0: targets are the mean gradient norm, so the task with the larger norm must lose weight
    model = build_model("SharedBottom", ["regression", "regression"])
    w = GradNormWeighting(["regression"] * 2, model, alpha=0.0)
    x, _ = make_data(64)
    pred = model({k: torch.as_tensor(v) for k, v in x.items()})  # [B, 2]
    losses = torch.stack([(pred[:, 0] - 0.0).pow(2).mean(), (pred[:, 1] - 10.0).pow(2).mean()])
    w.backward(losses)
    assert w.weights.grad[1] > 0 > w.weights.grad[0]
