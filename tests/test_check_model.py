"""``mtlp check-model``: its verdicts on what a run left in its MLflow store (each one can fail), and its errors.
The command on a real model runs in tests/test_model_guide.py (marked slow)."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from pipeline import check_model
from pipeline.cli import main

STEPS = ["search", "train", "export", "register", "promote", "finish"]


def run(run_id: str, name: str, role: str, metrics: dict, parent: str = "", status: str = "FINISHED") -> NS:
    tags = {"mtlp.role": role, **({"mlflow.parentRunId": parent} if parent else {})}
    return NS(info=NS(run_id=run_id, run_name=name, status=status), data=NS(tags=tags, metrics=metrics))


class FakeStore:
    """What a finished check run leaves: a model run, its trials, a registered version with the champion alias."""

    def __init__(self, trials: int = 2, parity: float = 3e-8, champion: str = "1", auc: float = 0.61) -> None:
        model = run("m", "mmoe", "model", {"test/click/auc": auc, "test/conversion/auc": 0.57, "test/score": 0.59,
                                           "onnx/parity_max_abs_diff": parity})
        self.runs = [model] + [run(f"t{i}", f"trial-{i}", "trial", {"trial/objective_0": 0.6}, parent="m")
                               for i in range(trials)]
        self.champion = champion

    def get_experiment_by_name(self, name: str) -> NS:
        return NS(experiment_id="1")

    def search_runs(self, ids: list, max_results: int) -> list:
        return self.runs

    def search_model_versions(self, query: str) -> list:
        return [NS(version="1", tags={"mtlp.architecture": "mmoe"})]

    def get_registered_model(self, name: str) -> NS:
        return NS(aliases={"champion": self.champion} if self.champion else {})


def verdicts(monkeypatch, store: FakeStore) -> dict[str, bool]:
    import workflow.tracking

    monkeypatch.setattr(workflow.tracking, "client_for", lambda uri: store)
    found = check_model.verdicts(check_model.check_config("mmoe"), "unused")
    return {v.step: v.ok for v in found}


def test_a_complete_run_passes_every_step(monkeypatch) -> None:
    assert verdicts(monkeypatch, FakeStore()) == dict.fromkeys(STEPS, True)


@pytest.mark.parametrize("store, failing", [
    (FakeStore(trials=1), "search"),
    (FakeStore(auc=float("nan")), "train"),
    (FakeStore(parity=2e-5), "export"),
    (FakeStore(champion=""), "promote"),
])
def test_each_step_fails_on_its_own_shortfall(monkeypatch, store: FakeStore, failing: str) -> None:
    assert verdicts(monkeypatch, store) == {**dict.fromkeys(STEPS, True), failing: False}


def test_the_verdict_lines_and_the_config() -> None:
    config = check_model.check_config("ple")
    assert config.models == ["ple"] and config.dataset.name == "synthetic-funnel"
    assert config.search.n_trials == check_model.N_TRIALS
    assert check_model.Verdict("export", False, "max abs diff 1e-3").line() == "FAIL  export    max abs diff 1e-3"


def test_an_unknown_model_is_a_one_line_error(capsys) -> None:
    assert main(["check-model", "mmoe2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtlp check-model: error: models: unknown model 'mmoe2'; choose from [") and err.count("\n") == 1
