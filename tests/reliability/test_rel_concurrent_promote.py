"""Group 4: two ``mtlp promote`` processes at once on one registered model (embedded SQLite store): the champion
ends on exactly one of the two versions and the audit and champion history record both decisions truthfully."""

from __future__ import annotations

import json
import subprocess

import pytest

from _mlflow_helpers import quiet_mlflow, seed_store
from _rel import PY, REPO, env

pytestmark = [pytest.mark.reliability, pytest.mark.slow]
quiet_mlflow()
MODEL = "rel-promote"
ROUNDS = 2


def _store(tmp_path):
    from mlflow import MlflowClient

    work = seed_store(tmp_path / "store")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    client.create_registered_model(MODEL)
    for _ in range(3):
        client.create_model_version(MODEL, source=str(tmp_path / "model"), run_id=None)
    return work, client


def test_two_concurrent_promotions_leave_one_champion_and_both_records(tmp_path) -> None:
    from components import registry

    work, client = _store(tmp_path)
    expected_actions = 0
    for round_ in range(ROUNDS):
        a, b = ("1", "2") if round_ % 2 == 0 else ("3", "1")
        procs = {v: subprocess.Popen([PY, "-m", "components.promote", "--model", MODEL, "--version", v,
                                      "--reason", f"round {round_} user {v}", "--user", f"user-{v}",
                                      "--work-dir", str(work)], cwd=REPO, env=env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True) for v in (a, b)}
        outs = {v: p.communicate(timeout=120) for v, p in procs.items()}
        for v, p in procs.items():
            assert p.returncode == 0, outs[v]
            assert f"champion is now version {v}" in outs[v][0]
        expected_actions += 2

        champion = registry.champion_version(client, MODEL)
        assert champion in (a, b)
        rm = client.get_registered_model(MODEL)
        audit = json.loads(rm.tags[registry.TAG["audit"]])
        assert len(audit) == expected_actions  # no lost update
        last_two = audit[-2:]
        assert sorted(e["version"] for e in last_two) == sorted((a, b))
        assert all(e["reason"] == f"round {round_} user {e['version']}" and e["by"] == f"user-{e['version']}"
                   for e in last_two)
        # serialised: the second decision saw the first one's champion as its "previous"
        assert last_two[1]["previous"] == last_two[0]["version"]
        assert last_two[1]["version"] == champion  # the later decision is the one in force
        history = registry.champion_history(client, MODEL)
        assert [h["version"] for h in history[-2:]] == [e["version"] for e in last_two]
        for v in (a, b):
            assert client.get_model_version(MODEL, v).tags[registry.TAG["by"]] == f"user-{v}"
