"""``.ci/run`` runs the suite from a checkout whose path contains ``mtl-pipeline`` (issue 19, point 3), with
``../shared`` still beside it. Checked with a short command in place of ``make test``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = "pwd -P; test -d ../shared/data && echo shared-found"


def _checkout(parent: Path, name: str) -> Path:
    repo = parent / name
    (repo / ".ci").mkdir(parents=True)
    shutil.copy2(REPO / ".ci" / "run", repo / ".ci" / "run")
    (repo / "Makefile").write_text("test:\n\ttrue\n")
    (repo / ".venv").mkdir()  # not copied: a venv is not relocatable
    (parent / "shared" / "data").mkdir(parents=True)
    return repo


def _run(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(repo / ".ci" / "run")], env={**os.environ, "MTLP_CI_COMMAND": PROBE + "; ls -A"},
                          capture_output=True, text=True, timeout=60, check=True)


def test_a_checkout_elsewhere_runs_from_a_copy_named_mtl_pipeline_beside_it(tmp_path) -> None:
    repo = _checkout(tmp_path, "checkout")
    done = _run(repo)
    where, found, *listing = done.stdout.split()
    assert Path(where).parent == tmp_path.resolve() and Path(where).name.startswith("mtl-pipeline-ci-")
    assert found == "shared-found"
    assert sorted(listing) == [".ci", "Makefile"]
    assert "is not under a folder named mtl-pipeline" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkout", "shared"]  # the copy is gone


def test_a_checkout_named_mtl_pipeline_runs_in_place(tmp_path) -> None:
    repo = _checkout(tmp_path, "mtl-pipeline")
    done = _run(repo)
    where, found, *_ = done.stdout.split()
    assert Path(where) == repo.resolve() and found == "shared-found"
    assert done.stderr == ""
