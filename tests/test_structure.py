"""Issue 22's structure facts hold for the tree (``python -m bench.structure`` prints them), and the measuring
catches what it claims to: a cycle through a function-level import, a test importing a module the graph never runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import structure

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def facts() -> structure.Facts:
    return structure.measure(ROOT)


def test_no_import_cycle(facts: structure.Facts) -> None:
    assert facts.cycles == []


def test_no_source_file_over_400_lines(facts: structure.Facts) -> None:
    assert facts.big_files == {}


def test_median_function_at_most_15_lines(facts: structure.Facts) -> None:
    assert facts.functions > 500
    assert facts.median_function <= structure.MAX_MEDIAN_FUNCTION


def test_candidates_module_is_gone(facts: structure.Facts) -> None:
    assert facts.gone_present == []


def test_tests_import_only_workflow_modules_the_graph_uses(facts: structure.Facts) -> None:
    assert {"workflow.steps", "workflow.training.torchrun", "workflow.search", "workflow.serving.model_server",
            "workflow.data.datasets.adult"} <= facts.used
    assert facts.test_imports_unused == {}


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_measure_finds_cycles_unused_modules_and_big_files(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "pipeline/__init__.py": "",
        "pipeline/graph.py": "import subprocess\n\ndef go():\n    subprocess.run(['python', '-m', 'workflow.job'])\n",
        "workflow/__init__.py": "",
        "workflow/steps.py": "from .a import f\n",
        "workflow/a.py": "def f():\n    from workflow import b\n    return b\n",
        "workflow/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import steps\n"
                         "from .a import f\n",
        "workflow/job.py": "import importlib\n\ndef load(n):\n    return importlib.import_module(f'{__name__}.{n}')\n",
        "workflow/lazy/__init__.py": "import importlib\nM = lambda n: importlib.import_module(f'{__name__}.{n}')\n",
        "workflow/lazy/one.py": "",
        "workflow/orphan.py": "x = 1\n" * 401,
        "tests/test_x.py": "from workflow import orphan, steps\nfrom workflow.lazy import one\n",
    })
    facts = structure.measure(root)
    assert facts.cycles == [["workflow.a", "workflow.b"]]
    assert facts.big_files == {"workflow/orphan.py": 401}
    assert facts.unused_workflow == ["workflow.lazy", "workflow.lazy.one", "workflow.orphan"]
    assert facts.test_imports_unused == {"tests/test_x.py": ["workflow.lazy.one", "workflow.orphan"]}
    assert facts.gone_present == [] and facts.median_function == 2  # go 2, f 3, load 2 lines
    problems = facts.problems()
    assert "import cycle: workflow.a -> workflow.b" in problems and len(problems) == 3


def test_lazy_registry_and_models_from_code_count_as_used(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "workflow/__init__.py": "",
        "workflow/steps.py": "from workflow import lazy, serving\n",
        "workflow/lazy/__init__.py": "import importlib\nM = lambda n: importlib.import_module(f'{__name__}.{n}')\n",
        "workflow/lazy/one.py": "",
        "workflow/serving/__init__.py": "from pathlib import Path\nF = Path(__file__).with_name('code.py')\n",
        "workflow/serving/code.py": "",
        "workflow/search/__init__.py": "",
        "workflow/search/__main__.py": "",
        "deploy/job.yaml": 'command: ["python", "-m", "workflow.search"]\n',
    })
    facts = structure.measure(root)
    assert facts.unused_workflow == []
    assert {"workflow.lazy.one", "workflow.serving.code", "workflow.search.__main__"} <= facts.used


def test_script_prints_the_facts_and_fails_on_a_broken_rule(tmp_path: Path, capsys) -> None:
    root = _tree(tmp_path, {"workflow/__init__.py": "", "workflow/candidates.py": ""})
    assert structure.main(["--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "present: workflow/candidates.py" in out and "import cycles: 0" in out
