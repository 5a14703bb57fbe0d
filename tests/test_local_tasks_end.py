"""How the local runner ends a failing run (issue 29, point 6 and 9): a step's data or config error ends the run at
once (no KFP retry and backoff, exit status 2 from ``mtlp run``); a task that would start after an interrupt is
not announced (no ``start train_model`` followed by ``FAILED after 0.0 s``)."""

from __future__ import annotations

import pytest

from pipeline import local_tasks
from pipeline.local_tasks import FinalTaskError, warm_local_runner
from pipeline.task_console import TaskConsole

BAD_DATA = ["sh", "-c", "echo 'Traceback (most recent call last):'; "
            "echo \"workflow.data.errors.DataError: esmm trains on targets derived from the labels\"; exit 1"]


def test_a_data_error_ends_the_run_at_once(tmp_path, capsys) -> None:
    with warm_local_runner(preload=(), log_dir=tmp_path, console=TaskConsole(verbose=False), warm=False) as tasks:
        with pytest.raises(FinalTaskError, match="esmm trains on targets derived from the labels"):
            tasks.launch(BAD_DATA)
        assert tasks.aborted and tasks.launch(["sh", "-c", "echo later"]) == 1  # a retry would start nothing
    [failure] = tasks.failures
    assert failure.error_type == "DataError"
    other = ["sh", "-c", "echo 'RuntimeError: the database blipped'; exit 1"]  # may pass on a retry: no abort
    with warm_local_runner(preload=(), log_dir=tmp_path / "b", console=TaskConsole(verbose=False), warm=False) as t2:
        assert t2.launch(other) == 1 and not t2.aborted


def test_a_task_starting_after_an_interrupt_is_not_announced(tmp_path, monkeypatch, capsys) -> None:
    with warm_local_runner(preload=(), log_dir=tmp_path, console=TaskConsole(verbose=False), warm=False) as tasks:
        def interrupted_meanwhile(command):  # SIGTERM lands after launch's own check, before the task starts
            tasks.aborted = True
            return None, "not a KFP launcher script"

        monkeypatch.setattr(local_tasks, "launcher_or_reason", interrupted_meanwhile)
        tasks.launch(["sh", "-c", "exit 143"])
    out = capsys.readouterr().out
    assert "start" not in out and "FAILED" not in out


def test_the_register_task_is_named_after_its_model(tmp_path, monkeypatch) -> None:
    """The export step hands the model's name on with the exported model, so the register task's console line and
    log file (``NN-register_model-<model>.log``) name it, as every other per-model task's do."""
    import json
    from types import SimpleNamespace

    from pipeline.ops import make_components
    from pipeline.task_console import describe
    from workflow import steps

    (tmp_path / "trained").mkdir()
    trained = SimpleNamespace(path=str(tmp_path / "trained"), metadata={"model_name": "ple", "best_epoch": 3})
    exported = SimpleNamespace(path=str(tmp_path / "exported"), metadata={})
    monkeypatch.setattr(steps, "export_step", lambda *args: 1e-7)
    make_components("img").export_onnx.python_func(trained=trained, prepared=SimpleNamespace(path="p"),
                                                   model_run_id="r", work_dir="w", tracking_uri="", exported=exported)
    assert exported.metadata == {"onnx_parity_max_abs_diff": 1e-7, "model_name": "ple"}
    executor_input = {"inputs": {"parameterValues": {"registered_model": "m"},
                                 "artifacts": {"exported": {"artifacts": [{"metadata": exported.metadata}]}}}}
    assert describe(["--function_to_execute", "register_model", "--executor_input",
                     json.dumps(executor_input)]) == ("register_model", "ple")
