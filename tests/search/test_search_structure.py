"""The search package's shape: Optuna's private API only in ``study.py``, small files, short functions."""

from __future__ import annotations

import ast
import statistics
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "workflow" / "search"
# Optuna objects' private attributes (``study._storage``, ``trial._trial_id``, ...) and private modules
# (``optuna.storages._heartbeat``): allowed only where the public API does not reach (see study.py's docstring).
PRIVATE_OK = {"study.py"}


def _sources() -> list[Path]:
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) > 5, f"expected the split package at {PACKAGE}"
    return files


def private_optuna_uses(source: str) -> list[str]:
    """``x._name`` attribute reads (not ``self._x``, not dunders) and imports of ``optuna.*._module``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(f"line {node.lineno}: .{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("optuna"):
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"line {node.lineno}: from {node.module}")
    return found


def test_the_scan_finds_private_optuna_access() -> None:
    code = ("from optuna.storages._heartbeat import BaseHeartbeat\n"
            "def f(study, trial):\n    study._storage.set_trial_system_attr(trial._trial_id, 'k', 1)\n"
            "    self._ok = 1\n    return trial.__class__\n")
    assert sorted(private_optuna_uses(code)) == ["line 1: from optuna.storages._heartbeat", "line 3: ._storage",
                                                 "line 3: ._trial_id"]


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.name)
def test_optuna_internals_only_in_study_module(path: Path) -> None:
    uses = private_optuna_uses(path.read_text())
    if path.name in PRIVATE_OK:
        assert uses, f"{path.name} is allowed private access but uses none: drop it from PRIVATE_OK"
    else:
        assert uses == [], f"{path.name} uses private attributes (allowed only in study.py): {uses}"


def _function_lengths(path: Path) -> list[int]:
    tree = ast.parse(path.read_text())
    return [n.end_lineno - n.lineno + 1 for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_files_are_small_and_functions_short() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in _sources()}
    assert max(sizes.values()) <= 400, sizes
    lengths = [n for p in _sources() for n in _function_lengths(p)]
    assert statistics.median(lengths) <= 15, sorted(lengths)
