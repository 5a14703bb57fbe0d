"""The spec's own code runs as written (../shared/spec/torch-rechub-multi-task.md, read at test time).

Each code block is taken from the document, its ``from torch_rechub... import`` lines become ``from mtl_models
import ...`` and nothing else changes; names the document leaves to the reader (section 8's ``user_id_data``...,
and ``np``, which it uses without importing) are provided as generated arrays.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from _trainer_helpers import one_thread
from mtl_models import AITM, ESMM, MMOE, PLE, SharedBottom
from mtl_models.onnx_export import example_inputs

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MTLP_SHARED_DATA", REPO.parent / "shared" / "data")).parent  # as tests/conftest.py
SPEC = SHARED / "spec" / "torch-rechub-multi-task.md"
FLOW_HEADING = "## 8. 代码示例：完整的多任务模型训练流程"
USAGE_HEADING = "### 使用方法"
MODELS = {"SharedBottom": SharedBottom, "ESMM": ESMM, "MMOE": MMOE, "PLE": PLE, "AITM": AITM}
IMPORT = re.compile(r"^from torch_rechub(?:\.\w+)* import (?P<names>[\w, ]+)$")

pytestmark = pytest.mark.skipif(not SPEC.is_file(), reason=f"the spec is not at {SPEC} (set MTLP_SHARED_DATA)")


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():  # these small models step fastest on one thread, and a busy machine does not stall them
        yield


def python_blocks(text: str) -> list[tuple[str, str, str]]:
    """Every fenced python block as ``(its "## " section heading, the "### " heading above it, code)``."""
    blocks, section, sub, code = [], "", "", None
    for line in text.splitlines():
        if code is not None:
            if line.strip() == "```":
                blocks.append((section, sub, "\n".join(code) + "\n"))
                code = None
            else:
                code.append(line)
        elif line.startswith("## "):
            section, sub = line.strip(), ""
        elif line.startswith("### "):
            sub = line.strip()
        elif line.strip() == "```python":
            code = []
    return blocks


def with_our_imports(code: str) -> tuple[str, int]:
    """Only the import lines change: ``from torch_rechub.x.y import A, B`` -> ``from mtl_models import A, B``."""
    lines = code.splitlines()
    changed = 0
    for i, line in enumerate(lines):
        match = IMPORT.match(line)
        if match:
            lines[i] = f"from mtl_models import {match['names']}"
            changed += 1
    out = "\n".join(lines) + "\n"
    assert "torch_rechub" not in out, "an import the rewrite did not recognise"
    return out, changed


def spec_blocks() -> list[tuple[str, str, str]]:
    return python_blocks(SPEC.read_text(encoding="utf-8"))


def usage_blocks() -> dict[str, str]:
    """Each model's "使用方法" block by model name (the "## N. Name" heading)."""
    out = {}
    for section, sub, code in spec_blocks():
        if sub == USAGE_HEADING:
            out[section.split(". ", 1)[1]] = code
    return out


def flow_data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays section 8 expects, with labels a model can learn (so its printed AUCs mean something)."""
    rng = np.random.default_rng(seed)
    user, city = rng.integers(0, 10_000, n), rng.integers(0, 100, n)
    age, income = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
    city_effect = rng.normal(size=100)
    logit = 1.5 * city_effect[city] + age - 0.5 * income
    task1 = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    task2 = (task1 * (rng.random(n) < 1 / (1 + np.exp(-(logit - 1))))).astype(np.float32)
    return {"user_id_data": user, "city_data": city, "age_data": age, "income_data": income,
            "task1_labels": task1, "task2_labels": task2}


def test_the_spec_has_the_blocks_these_tests_run() -> None:
    assert sorted(usage_blocks()) == sorted(MODELS)
    assert [s for s, _, _ in spec_blocks()].count(FLOW_HEADING) == 1


@pytest.mark.slow
def test_section_8_training_flow_runs_as_written(tmp_path, monkeypatch, capsys) -> None:
    """The whole flow: features, DataGenerator, MMOE, MTLTrainer (UWL, 50 epochs, early stopping, device="cuda:0":
    the CPU here, with a warning), ``scores[0]`` / ``scores[1]``, ONNX export, predict. 1,000 rows keep an epoch to
    three training steps (700 rows at batch 256; its last batch has 188 rows)."""
    (code,) = [c for s, _, c in spec_blocks() if s == FLOW_HEADING]
    code, changed = with_our_imports(code)
    assert changed == 4
    monkeypatch.chdir(tmp_path)  # the block writes saved/mmoe/ and mmoe.onnx into the working directory
    namespace = {"__name__": "spec_section_8", "np": np, **flow_data(1000)}
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(code, "torch-rechub-multi-task.md#8", "exec"), namespace)
    if not torch.cuda.is_available():
        assert any("'cuda:0' requested but CUDA is not available" in str(w.message) for w in caught)

    scores, preds, trainer = namespace["scores"], namespace["preds"], namespace["trainer"]
    assert scores[0] == scores["task1"]["auc"] and scores[1] == scores["task2"]["auc"]
    assert scores[0] > 0.6 and scores[1] > 0.6  # learned: city and age drive both labels
    out = capsys.readouterr().out
    # leading blanks allowed: in the full suite a progress bar left by an earlier test can pad a printed line
    assert re.search(rf"^\s*Task 1 AUC: {re.escape(str(scores[0]))}\n\s*Task 2 AUC: {re.escape(str(scores[1]))}$",
                     out, re.M), out[-2000:]
    n_test = 1000 - int(1000 * 0.7) - int(1000 * 0.1)
    assert re.search(rf"^\s*Predictions shape: {re.escape(str((n_test, 2)))}$", out, re.M) and np.asarray(preds).shape == (n_test, 2)
    assert (tmp_path / "mmoe.onnx").stat().st_size > 0 and (tmp_path / "saved" / "mmoe" / "best.pt").is_file()
    assert 1 <= len(trainer.history) <= 50


@pytest.mark.parametrize("name", list(MODELS))
def test_each_models_usage_block_builds_that_model(name: str) -> None:
    """SharedBottom's block defines ``common_features``; the other blocks use it, as a reader of the page would."""
    blocks = usage_blocks()
    namespace: dict = {"__name__": "spec_usage"}
    first, _ = with_our_imports(blocks["SharedBottom"])
    exec(compile(first, "torch-rechub-multi-task.md#SharedBottom", "exec"), namespace)
    code, changed = with_our_imports(blocks[name])
    assert changed == (2 if name == "SharedBottom" else 1)
    exec(compile(code, f"torch-rechub-multi-task.md#{name}", "exec"), namespace)

    model = namespace["model"]
    assert type(model) is MODELS[name]
    torch.manual_seed(0)
    x = example_inputs(model, batch_size=16)
    out = model.train()(x)  # a training step: the blocks' MLPs have BatchNorm, as in Torch-RecHub
    out.sum().backward()
    assert out.shape == (16, 2) and all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    out = model({k: v[:1] for k, v in x.items()})  # serving one row
    assert out.shape == (1, 2) and 0 < float(out[0, 0].detach()) < 1
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
