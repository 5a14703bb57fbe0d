"""The warm worker behind the local runner: tasks run in forks of one worker, with KFP's own semantics."""

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from kfp import dsl, local

from pipeline.ops import make_components
from pipeline.kfp_launcher import launcher_or_reason, parse_launcher
from pipeline.local_tasks import warm_local_runner
from pipeline.task_console import TaskConsole


@dsl.component(base_image="python:3.11", install_kfp_package=False)  # as pipeline.ops does
def who_ran_me(tag: str) -> str:
    import os
    return f"{tag}:{os.getpid()}:{os.getppid()}:{os.environ.get('MTLP_TEST_FLAG', '')}"


@dsl.component(base_image="python:3.11", install_kfp_package=False)  # as pipeline.ops does
def add(a: int, b: int) -> int:
    return a + b


@dsl.component(base_image="python:3.11", install_kfp_package=False)  # as pipeline.ops does
def fails(message: str) -> str:
    raise ValueError(message)


@dsl.pipeline
def two_steps(x: int) -> int:
    first = add(a=x, b=1)
    return add(a=first.output, b=10).output


@pytest.fixture
def local_runner(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               enable_caching=False, raise_on_error=True)


def test_the_launcher_of_our_components_is_recognised_and_anything_else_is_not() -> None:
    container = make_components("python:3.11").start_model_run.component_spec.implementation.container
    command = [*container.command, *container.args]
    source, args = parse_launcher(command)
    assert "def start_model_run(" in source
    assert args[args.index("--function_to_execute") + 1] == "start_model_run"
    assert parse_launcher(["python3", "-m", "kfp.dsl.executor_main", "--function_to_execute", "f"]) is None
    pip = [command[0], command[1], "python3 -m pip install x && " + command[2], *command[3:]]
    assert parse_launcher(pip) is None


def _plus(a: int, b: int) -> int:
    return a + b


def test_no_interpreter_path_defeats_the_launcher_check_but_an_install_step_does() -> None:
    """KFP writes the venv's python into the script: a checkout in .../mtl-pipeline/ has "pip" in that path."""
    from kfp.local.subprocess_task_handler import replace_python_executable

    container = make_components("python:3.11").search_model.component_spec.implementation.container
    command = [*container.command, *container.args]
    for python in ("/ci/mtl-pipeline/.venv/bin/python", "/home/pip install/x y/.venv/bin/python3"):
        assert parse_launcher(replace_python_executable(command, python)) is not None, python
    with_install = dsl.component(base_image="python:3.11", packages_to_install=["six"])(_plus)  # KFP's pip step
    spec = with_install.component_spec.implementation.container
    parsed, reason = launcher_or_reason([*spec.command, *spec.args])
    assert parsed is None and reason == "the task installs packages first (pip install)"


def test_a_fallback_to_kfps_launcher_is_reported_once_with_its_reason(local_runner, tmp_path, capsys) -> None:
    with warm_local_runner(preload=(), log_dir=tmp_path / "logs") as tasks:
        assert tasks.launch(["sh", "-c", "echo cold-1"]) == 0
        assert tasks.launch(["sh", "-c", "echo cold-2"]) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if "KFP's own launcher" in line]
    assert len(notes) == 1 and "not a KFP launcher script" in notes[0]
    assert "cold-1" in captured.out and (tmp_path / "logs" / "02-task.log").read_text() == "cold-2\n"


def test_a_quiet_console_shows_one_line_per_task_and_the_logs_keep_the_rest(local_runner, tmp_path, capsys) -> None:
    logs = tmp_path / "logs"
    with warm_local_runner(preload=(), log_dir=logs, console=TaskConsole(verbose=False)) as tasks:
        assert two_steps(x=1).output == 12
        with pytest.raises(RuntimeError):
            fails(message="planted failure 43: column 'price'")
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out] == [["start", "add"], ["done", "add"], ["start", "add"], ["done", "add"],
                                                 ["start", "fails"], ["FAILED", "fails"]]
    assert str(logs / "03-fails.log") in out[-1]
    assert "Traceback" in (logs / "03-fails.log").read_text()
    [failure] = tasks.failures
    assert (failure.function, failure.error_type) == ("fails", "ValueError")
    assert failure.message == "planted failure 43: column 'price'"  # the step's own text, not KFP's
    assert sorted(p.name for p in logs.iterdir()) == ["01-add.log", "02-add.log", "03-fails.log", "kfp.log"]


def test_tasks_run_in_forks_of_the_worker_with_the_callers_environment(local_runner, monkeypatch) -> None:
    with warm_local_runner(preload=("kfp.dsl.executor_main",)) as worker:
        monkeypatch.setenv("MTLP_TEST_FLAG", "set-after-the-worker-started")
        outputs = [who_ran_me(tag=t).output for t in ("a", "b")]
        assert two_steps(x=1).output == 12
    tags, pids, parents, flags = zip(*(o.split(":") for o in outputs))
    assert tags == ("a", "b")
    assert set(parents) == {str(worker.proc.pid)}  # forked by the worker, not started by this process
    assert len(set(pids)) == 2 and str(os.getpid()) not in pids  # one fresh process per task
    assert flags == ("set-after-the-worker-started",) * 2
    assert worker.proc.returncode is not None  # the worker is gone once the block ends
    assert [f for f, _ in worker.task_seconds] == ["who_ran_me", "who_ran_me", "add", "add"]
    assert all(0 < s < 60 for _, s in worker.task_seconds)


def test_a_failing_task_fails_the_run_with_its_message_and_the_worker_stays_usable(local_runner, capsys) -> None:
    with warm_local_runner(preload=()) as worker:
        with pytest.raises(RuntimeError, match="fails"):
            fails(message="planted failure 42")
        assert "planted failure 42" in capsys.readouterr().out  # the task's traceback is streamed through
        assert worker.alive()
        assert add(a=2, b=3).output == 5


@dsl.component(base_image="python:3.11", install_kfp_package=False)  # as pipeline.ops does
def nap(seconds: float) -> str:
    import time
    start = time.time()
    time.sleep(seconds)
    return f"{start}:{time.time()}"


def _two_at_once(parallel_tasks: int) -> tuple[list[str], list[tuple[float, float]]]:
    with warm_local_runner(preload=(), parallel_tasks=parallel_tasks):
        with ThreadPoolExecutor(2) as pool:  # as the orchestrator does for independent branches
            tags = list(pool.map(lambda t: who_ran_me(tag=t).output, ["left", "right"]))
            naps = list(pool.map(lambda _: nap(seconds=2.0).output, range(2)))
    return tags, [tuple(map(float, n.split(":"))) for n in naps]


def test_tasks_in_flight_at_the_same_time_each_get_their_own_answer(local_runner) -> None:
    (a, b), ((s1, e1), (s2, e2)) = _two_at_once(parallel_tasks=2)
    assert a.startswith("left:") and b.startswith("right:")
    assert s1 < e2 and s2 < e1  # the two naps overlapped: neither waited for the other


def test_by_default_tasks_of_parallel_branches_take_turns(local_runner) -> None:
    (a, b), ((s1, e1), (s2, e2)) = _two_at_once(parallel_tasks=1)
    assert a.startswith("left:") and b.startswith("right:")
    assert e1 <= s2 or e2 <= s1  # one nap ended before the other began


def test_a_task_is_named_by_its_function_and_model() -> None:
    from pipeline.task_console import describe as _describe

    def args(inputs: dict) -> list:
        return ["--executor_input", json.dumps({"inputs": inputs}), "--function_to_execute", "export_onnx"]

    assert _describe(args({"parameterValues": {"model_name": "ple"}})) == ("export_onnx", "ple")
    trained = {"artifacts": {"trained": {"artifacts": [{"metadata": {"model_name": "mmoe", "best_epoch": 2}}]}}}
    assert _describe(args(trained)) == ("export_onnx", "mmoe")  # the model from the input artifact's metadata
    assert _describe(args({"parameterValues": {"run_name": "r"}})) == ("export_onnx", None)
