"""Group 5: bad input end to end, one table. Each case goes through a command's entry point (``main(argv)`` of
``python -m components.prepare``, ``python -m components.train``, ``mtlp``) in this process, and must give a
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
    from components.prepare import prepare
    out = tmp_path_factory.mktemp("rel-bad-prep") / "p"
    prepare("synthetic-funnel", out, seed=1, options={"n_rows": 300, "n_users": 20, "n_items": 10})
    return out


def _invoke(argv: list, tmp: Path, seeded: Path, prepared: Path) -> int:
    from components.prepare import main as prepare_main
    from components.promote import main as promote_main
    from components.train import main as train_main
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
