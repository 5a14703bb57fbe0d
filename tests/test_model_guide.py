"""docs/models.md's "Adding a model", followed literally: a copy of this checkout gets the guide's model file and zoo
entry (its own code blocks, written where the guide says) and its docs step, and then ``make test``'s zoo, model
and export tests and ``mtlp check-model`` run on the copy, the new model among the zoo's.

The copy imports its own packages (``PYTHONPATH``; checked), so the project's editable install does not hide the
new file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import _guide_model

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = os.environ.get("MTLP_SHARED_DATA", str(REPO.parent / "shared" / "data"))  # as conftest.py
GUIDE = _guide_model.read_guide()
GUIDE_SECTION = _guide_model.section(_guide_model.GUIDE.read_text())
NAME = "gated_bottom"
# make test's files with tests parametrized over zoo.names(); test_zoo.py runs whole (the zoo's invariants)
PARAMETRIZED = ["tests/test_models.py", "tests/test_onnx_export.py", "tests/test_fast_paths.py", "tests/test_train_step.py"]
SKIP = shutil.ignore_patterns(".git", ".venv", "mtlp-runs", "__pycache__", ".pytest_cache", "*.egg-info", "build")


def copy_checkout(root: Path) -> None:
    """The checkout's files as git sees them (tracked, and untracked ones it does not ignore), else all but SKIP."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True)
    if listed.returncode != 0:
        shutil.copytree(REPO, root, ignore=SKIP)
        return
    for rel in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, root / rel)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """This checkout with the guide's three steps done; nothing else edited."""
    root = tmp_path_factory.mktemp("guide") / "mtl-pipeline"
    copy_checkout(root)
    _guide_model.apply(GUIDE, root)  # 1. the model file, 2. the zoo entry
    space = list(_guide_model.load_entry(GUIDE).space)
    _guide_model.forget(GUIDE)
    _guide_model.name_in_docs(root, "GatedBottom", space)  # 3. the docs
    return root


def run_in(root: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root), "MTLP_SHARED_DATA": str(SHARED_DATA)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_guide_touches_only_the_places_it_names(checkout: Path) -> None:
    def differs(path: Path) -> bool:
        original = REPO / path.relative_to(checkout)
        return not original.is_file() or original.read_bytes() != path.read_bytes()

    changed = sorted(str(p.relative_to(checkout)) for p in checkout.rglob("*") if p.is_file() and differs(p))
    assert changed == sorted(["README.md", "docs/search.md", GUIDE.model_path, "mtl_models/zoo.py"])


def test_the_guide_names_every_public_block_and_hook() -> None:
    """A block added to ``mtl_models.layers`` or a hook added to ``MultiTaskModel`` is a line of the guide's tables."""
    import inspect

    from mtl_models import MultiTaskModel, layers

    text = GUIDE_SECTION
    hooks = [n for n, f in vars(MultiTaskModel).items() if inspect.isfunction(f) and not n.startswith("_")
             and n not in ("forward", "head")] + ["default_auxiliary_weight"]
    missing = [n for n in [*layers.__all__, *hooks, "lookup", "head"] if f"`{n}" not in text and f".{n}(" not in text]
    assert missing == [], f"docs/models.md, Adding a model, does not name {missing}"
    assert "self.embedding.lookup(x)" in GUIDE.model_source and "self.embedding(x)" not in GUIDE.model_source
    assert "def last_shared_parameters(self)" in GUIDE.model_source


@pytest.mark.slow
def test_the_guides_model_is_exported_configured_and_passes_the_zoo_model_and_export_tests(checkout: Path) -> None:
    probe = run_in(checkout, "-c", "import mtl_models; from mtl_models import GatedBottom, zoo; "
                   "from pipeline.config import load_config; print(mtl_models.__file__); print(zoo.names()); "
                   "print(load_config(None).models)", timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    where, names, default_models = probe.stdout.splitlines()[-3:]
    assert Path(where).is_relative_to(checkout)  # the copy's package, not the editable install's
    assert names.endswith(f"'{NAME}']") and default_models == names  # make run / mtlp compile: every entry

    out = run_in(checkout, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-m", "not slow",
                 "tests/test_zoo.py", *PARAMETRIZED, "-k", f"{NAME} or test_zoo", timeout=900)
    tail = out.stdout[-6000:]
    assert out.returncode == 0, tail
    passed = re.findall(r"^PASSED (\S+)", out.stdout, flags=re.M)
    assert not re.search(r"^(FAILED|ERROR) ", out.stdout, flags=re.M), tail
    for path in PARAMETRIZED:  # every file ran the new model's cases
        assert any(p.startswith(path) and NAME in p for p in passed), f"no {NAME} case of {path} passed:\n{tail}"
    assert {f"tests/test_models.py::{t}[{NAME}]" for t in (
        "test_output_shape_and_range", "test_every_parameter_gets_a_finite_gradient",
        "test_every_task_reaches_the_last_shared_parameters", "test_same_seed_same_output")} <= set(passed)
    assert any(p.startswith("tests/test_onnx_export.py::") and f"[{NAME}" in p for p in passed)
    assert {"tests/test_zoo.py::test_every_entry_keeps_the_zoo_invariants",
            "tests/test_zoo.py::test_every_zoo_model_is_exported_by_its_class_name",
            "tests/test_zoo.py::test_the_docs_name_every_zoo_model"} <= set(passed)


@pytest.mark.slow
def test_mtlp_check_model_takes_the_guides_model_through_the_whole_pipeline(checkout: Path, tmp_path: Path) -> None:
    out = run_in(checkout, "-m", "pipeline.cli", "check-model", NAME, "--runs-root", str(tmp_path / "runs"),
                 "--run-name", "guide", timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]
    verdicts = re.findall(r"^(ok  |FAIL)  (\w+)", out.stdout, flags=re.M)
    assert verdicts == [("ok  ", step) for step in ("search", "train", "export", "register", "promote", "finish")]
    assert f"mtlp check-model: {NAME} passed in" in out.stdout
    assert (tmp_path / "runs" / "guide" / "mlflow.db").is_file()
