"""The one definition of a metric's direction and of the task-mean score (mtl_models.trainer.monitor)."""

import math

import pytest

from mtl_models.trainer import Monitor, higher_is_better, task_mean


@pytest.mark.parametrize("metric, up", [("val/click/auc", True), ("test/income/logloss", False), ("rmse", False),
                                        ("val/price/mae", False), ("train/loss", False), ("test_score", True),
                                        ("val/monitor", True), ("metric.test_score", True)])
def test_direction_follows_the_metric_name(metric: str, up: bool) -> None:
    assert higher_is_better(metric) is up


def test_unknown_metric_direction_is_an_error_that_names_it() -> None:
    with pytest.raises(ValueError, match="'val/click/precision'"):
        higher_is_better("val/click/precision")


def test_task_mean_signs_regression_errors_so_higher_is_better() -> None:
    metrics = {"click": {"auc": 0.8, "logloss": 0.4}, "price": {"rmse": 0.3, "mae": 0.2}}
    assert task_mean(metrics, ["click", "price"], ["classification", "regression"]) == pytest.approx((0.8 - 0.3) / 2)
    assert math.isnan(task_mean({}, [], []))


def test_monitor_mean_reads_validation_and_falls_back_on_training_loss() -> None:
    m = Monitor("mean", ("a", "b"), ("classification", "classification"))
    assert m.read({"train/loss": 0.5, "val/a/auc": 0.7, "val/b/auc": 0.9}) == pytest.approx((0.8, 0.8))
    assert m.read({"train/loss": 0.5}) == (0.5, -0.5)
    assert (m.metric_key, m.direction) == ("val/monitor", "maximize")


def test_monitor_task_and_key_forms() -> None:
    names, types = ("ctr", "price"), ("classification", "regression")
    per_task = Monitor("task:1", names, types)
    assert per_task.metric_key == "val/price/rmse" and per_task.direction == "minimize"
    assert per_task.read({"val/price/rmse": 0.25}) == (0.25, -0.25)
    with pytest.raises(ValueError, match="val/ctr/logloss"):
        Monitor("val/ctr/logloss", names, types).read({"val/ctr/auc": 0.7})
