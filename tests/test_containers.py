"""The container mode (``mtlp run --containers``, pipeline/containers.py): the podman command locks a task down like
the cluster's pods and passes credentials by name; without an MLflow server and a study database it is refused in
one line; a killed container is retried as set_retry says, a failing one is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError
from pipeline.containers import ContainerSettings, check_services, podman_command, run_task


def test_podman_command_runs_the_task_locked_down_with_credentials_by_name(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://u:s3cret@127.0.0.1/optuna")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    settings = ContainerSettings(image="localhost/mtl-pipeline:t", runtime="/usr/sbin/runc", threads=1)
    cmd = podman_command(settings, "mtlp-r-01-x", [tmp_path], ["sh", "-ec", "script", "src", "--executor_input", "{}"])
    assert cmd[:4] == ["podman", "--runtime", "/usr/sbin/runc", "run"]
    for flag in ("--read-only", "--network=host", "--cap-drop=ALL", "--security-opt=no-new-privileges"):
        assert flag in cmd
    assert cmd[cmd.index("--user") + 1] == "10001:10001"
    assert any(c.startswith("--tmpfs=/tmp:") for c in cmd)
    assert f"{tmp_path}:{tmp_path}:rw" in cmd  # the pipeline root at the same path, as KFP's DockerRunner mounts it
    env = [cmd[i + 1] for i, c in enumerate(cmd) if c == "-e"]
    assert "OPTUNA_STORAGE" in env and "MLFLOW_TRACKING_URI" in env and "MLFLOW_TRACKING_PASSWORD" not in env
    assert "s3cret" not in " ".join(cmd)  # the value comes from podman's environment, never the command line
    assert cmd[cmd.index("localhost/mtl-pipeline:t"):] == ["localhost/mtl-pipeline:t", "sh", "-ec", "script", "src",
                                                           "--executor_input", "{}"]


@pytest.mark.parametrize("uri, storage, match", [
    (None, "postgresql://db/optuna", "needs an MLflow tracking server"),
    ("sqlite:///x.db", "postgresql://db/optuna", "needs an MLflow tracking server"),
    ("http://127.0.0.1:5000", None, "needs a study database"),
])
def test_containers_need_a_server_and_a_database(monkeypatch, uri, storage, match) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    with pytest.raises(ConfigError, match=match):
        check_services(uri, storage)
    check_services("http://127.0.0.1:5000", "postgresql://db/optuna")  # both given: fine


@pytest.mark.parametrize("codes, expected_runs", [([137, 137, 0], 3), ([137, 137, 137], 3), ([1], 1)])
def test_a_killed_container_is_retried_a_failed_one_is_not(monkeypatch, tmp_path, codes, expected_runs) -> None:
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/podman")
    monkeypatch.setattr("pipeline.containers._remove", lambda settings, name: None)
    settings, seen, notes = ContainerSettings(image="img", retries=2), [], []
    log = tmp_path / "task.log"
    log.write_text("")

    def run(cmd: list[str]) -> int:
        seen.append(cmd)
        return codes[len(seen) - 1]

    code = run_task(settings, "mtlp-r-01-x", Path(tmp_path), ["true"], None, log, run, notes.append)
    assert len(seen) == expected_runs == settings.containers_run
    assert code == codes[expected_runs - 1]
    assert len(notes) == expected_runs - 1
    assert all(f"retry {i + 1} of 2" in note for i, note in enumerate(notes))
    assert log.read_text().count("was killed (exit 137)") == len(notes)


def test_the_container_runs_the_compiled_command_not_this_machines_interpreter() -> None:
    from pipeline.containers import as_compiled
    exe = "/home/me/.venv/bin/python"
    script = f'program_path=$(mktemp -d)\n{exe} -m kfp.dsl.executor_main --component_module_path ' \
             '"$program_path/ephemeral_component.py" "$@"'
    source = f"print('{exe}')"  # the component's own code is left as written
    out = as_compiled(["sh", "-ec", script, source, "--executor_input", "{}"], executable=exe)
    assert out[2].splitlines()[1].startswith("python3 -m kfp.dsl.executor_main") and out[3] == source
