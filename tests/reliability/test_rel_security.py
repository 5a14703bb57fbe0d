"""Group 6 (static part): nothing from outside the process is unpickled, serving loads ONNX through a
models-from-code pyfunc, and run folders cannot escape the runs root. The planted-password scan of a whole
MLflow store is in test_rel_pipeline_kill.py (it reuses that run's store)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from _rel import REPO

pytestmark = [pytest.mark.reliability]
SOURCES = sorted(p for d in ("mtl_models", "workflow", "pipeline") for p in (REPO / d).rglob("*.py"))


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_every_torch_load_is_weights_only() -> None:
    found = 0
    for path in SOURCES:
        for call, name in _calls(path):
            if name == "torch.load":
                found += 1
                kw = {k.arg: k.value for k in call.keywords}
                assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, \
                    f"{path.relative_to(REPO)}:{call.lineno} torch.load without weights_only=True"
    assert found >= 2  # checkpoints and the trained model.pt


def test_no_pickle_loading_anywhere() -> None:
    banned = re.compile(r"^(pickle|cloudpickle|dill|joblib|_pickle)\.(load|loads)$|^(pd|pandas)\.read_pickle$")
    bad = [f"{p.relative_to(REPO)}:{c.lineno} {n}" for p in SOURCES for c, n in _calls(p) if banned.match(n)]
    assert bad == []
    imports = [str(p.relative_to(REPO)) for p in SOURCES
               if re.search(r"^\s*(import|from)\s+(pickle|cloudpickle|dill|joblib)\b", p.read_text(), re.M)]
    assert imports == []


def test_serving_is_models_from_code_over_onnx() -> None:
    serving = (REPO / "workflow" / "serving" / "log_model.py").read_text()
    assert re.search(r"python_model=str\(PYFUNC_FILE\)", serving)  # a file path: models from code, not a pickle
    pyfunc = (REPO / "workflow" / "serving" / "pyfunc_model.py").read_text()
    assert "onnxruntime" in pyfunc and not re.search(r"^\s*(import|from)\s+torch\b", pyfunc, re.M)


@pytest.mark.parametrize("name", ["../escape", "a/b", "/etc", "..", ".hidden", "x" * 200])
def test_run_name_cannot_escape_the_runs_root(name, tmp_path) -> None:
    from pipeline.config import ConfigError, load_config
    from pipeline.local import run_local

    with pytest.raises(ConfigError, match="is not allowed"):
        run_local(load_config({"models": ["mmoe"]}), run_name=name, runs_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "escape").exists()


def test_symlinked_run_folder_outside_the_root_is_refused(tmp_path) -> None:
    from pipeline.config import ConfigError, load_config
    from pipeline.local import run_local

    (tmp_path / "runs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs" / "r1").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="outside the runs root"):
        run_local(load_config({"models": ["mmoe"]}), run_name="r1", runs_root=tmp_path / "runs")
    assert list((tmp_path / "elsewhere").iterdir()) == []
