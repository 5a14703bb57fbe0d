"""Group 5: bad input end to end, one table. Each case goes through a command's entry point (``main(argv)`` of
``python -m workflow.data.prepare``, ``python -m workflow.training.train``, ``mtlp``) in this process, and must give a
clear message on stderr, exit status 2, no traceback, and leave no partial output."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

pytestmark = [pytest.mark.reliability]

GOOD_SCHEMA = "sparse: [city]\ndense: [price]\nlabels:\n  - {column: click, task_type: classification}\n"
GOOD_CSV = "city,price,click\n" + "paris,1.5,0\nrome,2.5,1\noslo,3,1\n" * 5


@dataclass
class Case:
    id: str
    kind: str  # data | config | cli
    setup: Callable[[Path], list]  # -> argv of the command (first item: which command)
    message: str  # a substring the user must see


def _csv(tmp: Path, csv: str, schema: str = GOOD_SCHEMA) -> list:
    (tmp / "d.csv").write_text(csv)
    (tmp / "s.yaml").write_text(schema)
    return ["prepare", "--dataset", "csv", "--out", str(tmp / "out"), "--option", f"path={tmp / 'd.csv'}",
            "--option", f"schema={tmp / 's.yaml'}"]


def _run_cfg(tmp: Path, text: str | None) -> list:
    path = tmp / "bad.yaml"
    if text is not None:
        path.write_text(text)
    return ["mtlp", "run", "--config", str(path), "--run-name", "bad", "--runs-root", str(tmp / "out")]


CASES = [
    Case("data: missing file", "data", lambda t: ["prepare", "--dataset", "adult", "--data-dir", str(t / "none"),
                                                 "--out", str(t / "out")], "missing file(s)"),
    Case("data: empty csv", "data", lambda t: _csv(t, ""), "empty"),
    Case("data: label not 0/1", "data", lambda t: _csv(t, GOOD_CSV.replace("rome,2.5,1", "rome,2.5,2")),
         "values other than 0/1"),
    Case("data: NaN labels", "data", lambda t: _csv(t, GOOD_CSV.replace("rome,2.5,1", "rome,2.5,")),
         "missing (NaN) values"),
    Case("data: dense not numeric", "data", lambda t: _csv(t, GOOD_CSV.replace("rome,2.5", "rome,cheap")),
         "dense column 'price' is not numeric"),
    Case("data: duplicate columns", "data", lambda t: _csv(t, "city,price,price,click\nparis,1,2,0\nrome,3,4,1\n"),
         "duplicate column names"),
    Case("schema: declared column absent", "data",
         lambda t: _csv(t, GOOD_CSV, GOOD_SCHEMA.replace("[price]", "[cost]")), "lacks declared column"),
    Case("schema: label used as feature", "data",
         lambda t: _csv(t, GOOD_CSV, GOOD_SCHEMA.replace("[price]", "[price, click]")), "as a feature"),
    Case("data: unknown dataset option", "data",
         lambda t: ["prepare", "--dataset", "synthetic-funnel", "--out", str(t / "out"), "--option", "n_row=10"],
         "unknown option(s)"),
    Case("config: missing file", "config", lambda t: _run_cfg(t, None), "config file not found"),
    Case("config: not YAML", "config", lambda t: _run_cfg(t, "models: [mmoe\n  : ]"), "is not valid YAML"),
    Case("config: unknown key", "config", lambda t: _run_cfg(t, "trian: {n_epoch: 1}\n"), "unknown key(s) trian"),
    Case("config: wrong type", "config", lambda t: _run_cfg(t, "train: {n_epoch: many}\n"),
         "train.n_epoch must be int"),
    Case("config: unknown model", "config", lambda t: _run_cfg(t, "models: [transformer]\n"),
         "unknown model 'transformer'"),
    Case("config: not a mapping", "config", lambda t: _run_cfg(t, "- a\n- b\n"), "config must be a mapping"),
    Case("cli: run name escapes the runs root", "cli",
         lambda t: ["mtlp", "run", "--run-name", "../escape", "--runs-root", str(t / "out")], "is not allowed"),
    Case("cli: absolute run name", "cli",
         lambda t: ["mtlp", "run", "--run-name", str(t / "abs"), "--runs-root", str(t / "out")], "is not allowed"),
    Case("cli: unknown command", "cli", lambda t: ["mtlp", "deploy"], "invalid choice: 'deploy'"),
    Case("cli: unknown flag", "cli", lambda t: ["mtlp", "run", "--epochs", "3"], "unrecognized arguments"),
    Case("cli: promote unknown version", "cli", lambda t: ["promote-seeded", "--version", "99"], "99"),
    Case("cli: train --params not JSON", "cli",
         lambda t: ["train", "--prepared", str(t / "p"), "--model", "mmoe", "--out", str(t / "out"), "--params", "{"],
         "--params is not a JSON object"),
    Case("cli: train unknown model", "cli",
         lambda t: ["train-prepared", "--model", "transformer", "--out", str(t / "out")], "unknown model"),
    Case("cli: train without prepared data", "cli",
         lambda t: ["train", "--prepared", str(t / "nowhere"), "--model", "mmoe", "--out", str(t / "out")],
         "run the prepare step first"),
]


@pytest.fixture(scope="module")
def seeded_registry(tmp_path_factory) -> Path:
    from mlflow import MlflowClient

    from _mlflow_helpers import quiet_mlflow, seed_store
    quiet_mlflow()
    work = seed_store(tmp_path_factory.mktemp("rel-bad-registry"))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    client.create_registered_model("rel-bad")
    client.create_model_version("rel-bad", source=str(work / "m"), run_id=None)
    return work


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from workflow.data.prepare import prepare
    out = tmp_path_factory.mktemp("rel-bad-prep") / "p"
    prepare("synthetic-funnel", out, seed=1, options={"n_rows": 300, "n_users": 20, "n_items": 10})
    return out


def _invoke(argv: list, tmp: Path, seeded: Path, prepared: Path) -> int:
    from workflow.data.prepare import main as prepare_main
    from workflow.registry.cli import main as promote_main
    from workflow.training.train import main as train_main
    from pipeline.cli import main as mtlp_main

    command, args = argv[0], argv[1:]
    try:
        if command == "prepare":
            return prepare_main(args)
        if command == "train":
            return train_main(args)
        if command == "train-prepared":
            return train_main(["--prepared", str(prepared), *args])
        if command == "promote-seeded":
            return promote_main(["--model", "rel-bad", "--work-dir", str(seeded), "--reason", "t", *args])
        return mtlp_main(args)
    except SystemExit as exc:  # argparse's usage errors
        return int(exc.code or 0)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_clear_error_and_no_partial_output(case, tmp_path, capsys, seeded_registry, prepared):
    (tmp_path / "in").mkdir()
    argv = case.setup(tmp_path / "in")
    status = _invoke(argv, tmp_path / "in", seeded_registry, prepared)
    err = capsys.readouterr().err
    assert status == 2, err
    assert case.message in err, err
    assert "Traceback" not in err
    out = tmp_path / "in" / "out"
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))
    leftovers = [p.name for p in (tmp_path / "in").iterdir() if p.name.startswith(".out")]
    assert leftovers == []


def test_case_table_is_large_enough() -> None:
    assert len(CASES) >= 15 and {c.kind for c in CASES} == {"data", "config", "cli"}


# ---- bad data met inside a task of `mtlp run` (issue 19, point 4) ------------------------------------------------
# The CLI in its own process, as users run it: the step's DataError must come back as one line on stderr.

RUN_BASE = {"models": ["shared_bottom"], "search": {"n_trials": 1, "n_epoch": 1},
            "train": {"n_epoch": 1, "device": "cpu",
                      "params": {"shared_bottom": {"embed_dim": 4, "bottom_dims": [8], "tower_dims": [8]}}},
            "tracking": {"experiment": "bad-run"}}
DENSE_CSV = "city,price,click\nparis,1.5,0\nrome,2.5,1\noslo,3,1\nparis,1,0\nrome,cheap,1\n"


def _csv_dataset(tmp: Path, csv: str = GOOD_CSV, schema: str = GOOD_SCHEMA, path: str = "d.csv") -> dict:
    (tmp / "d.csv").write_text(csv)
    (tmp / "s.yaml").write_text(schema)
    return {"name": "csv", "options": {"path": str(tmp / path), "schema": str(tmp / "s.yaml")}}


RUN_CASES = {
    "unknown dataset": (lambda t: {"name": "no-such-data"}, "unknown dataset 'no-such-data'"),
    "unknown dataset option": (lambda t: {"name": "synthetic-funnel", "options": {"n_row": 600}},
                               "unknown option(s) ['n_row']"),
    "label column missing": (lambda t: _csv_dataset(t, schema=GOOD_SCHEMA.replace("column: click", "column: buy")),
                             "lacks declared column(s) ['buy']"),
    "text in a dense column": (lambda t: _csv_dataset(t, csv=DENSE_CSV), "dense column 'price' is not numeric"),
    "missing data file": (lambda t: _csv_dataset(t, path="none.csv"), "none.csv"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_bad_data_inside_a_task_of_mtlp_run_is_one_line_and_ends_the_runs_failed(case, tmp_path) -> None:
    import subprocess

    import yaml
    from mlflow import MlflowClient

    from _rel import PY, env

    dataset, message = RUN_CASES[case]
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({**RUN_BASE, "dataset": dataset(tmp_path)}))
    done = subprocess.run([PY, "-m", "pipeline.cli", "run", "--config", str(config), "--run-name", "bad",
                           "--runs-root", "runs"], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr  # one line: no traceback, no warning, no KFP log
    line = done.stderr.strip()
    assert line.startswith("mtlp run: error: prepare_data: ") and message in line, line
    log = tmp_path / line.rsplit("(task log: ", 1)[1].rstrip(")")
    assert log == tmp_path / "runs" / "bad" / "logs" / "02-prepare_data.log"
    assert "Traceback" in log.read_text() and message in log.read_text()  # the details are kept in the task's log
    assert "FAILED prepare_data" in done.stdout and len(done.stdout.splitlines()) == 5, done.stdout
    work = tmp_path / "runs" / "bad"
    assert not list(work.rglob("*.parquet")) and not (work / "tmp").exists()  # no partial data, no temp files
    store = f"sqlite:///{work.parent / 'mlflow.db'}"  # the runs root's shared store
    client = MlflowClient(store, store)
    runs = client.search_runs([client.get_experiment_by_name("bad-run").experiment_id])
    assert [(r.data.tags["mtlp.role"], r.info.status) for r in runs] == [("pipeline", "FAILED")]
