"""deploy/: the Dockerfile, the shell scripts, the image reference the pipeline defaults to, and the compiled
pipeline running every component in that image."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import yaml
from _deploy_helpers import DEPLOY, ROOT, SECRETISH


# ---- the Dockerfile ------------------------------------------------------------------------------

def _dockerfile() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # join continuation lines
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _stages(lines: list[str]) -> list[list[str]]:
    stages: list[list[str]] = []
    for ln in lines:
        if ln.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(ln)
    return stages


def test_dockerfile_is_multi_stage_and_the_final_stage_runs_as_non_root():
    stages = _stages(_dockerfile())
    assert len(stages) >= 2, "multi-stage: build in one stage, copy the result into a clean one"
    final = stages[-1]
    users = [ln.split(None, 1)[1] for ln in final if ln.upper().startswith("USER ")]
    assert users, "the final stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit(), "a numeric USER lets Kubernetes' runAsNonRoot verify it"
    assert any(re.match(r"COPY\s+--from=\w+", ln, re.I) for ln in final)
    # no build tools or package caches in the final stage
    assert not any(re.search(r"\b(gcc|g\+\+|build-essential|make)\b", ln) for ln in final if ln.upper().startswith("RUN"))


def test_dockerfile_base_and_torch_index_are_build_args():
    lines = _dockerfile()
    args = dict((ln.split(None, 1)[1].split("=", 1) + [""])[:2] for ln in lines if ln.upper().startswith("ARG "))
    assert "slim" in args["BASE_IMAGE"]
    assert args["TORCH_INDEX_URL"].startswith("https://download.pytorch.org/whl/cpu")
    assert any(ln.startswith("FROM ${BASE_IMAGE}") for ln in lines)


def test_dockerfile_bakes_in_no_secret():
    for ln in _dockerfile():
        keyword = ln.split(None, 1)[0].upper()
        if keyword in {"ENV", "ARG", "LABEL"}:
            assert not SECRETISH.search(ln), f"secret-looking {keyword}: {ln}"
    assert "PIP_NO_CACHE_DIR=1" in " ".join(_dockerfile())


def test_dockerignore_keeps_local_state_and_credentials_out_of_the_context():
    entries = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    for required in (".venv", ".git", "mtlp-runs", "**/__pycache__", ".env"):
        assert required in entries, required


@pytest.mark.parametrize("script", ["podman-smoke.sh", "create-secrets.sh"])
def test_shell_scripts_parse(script):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    path = DEPLOY / script
    assert path.stat().st_mode & 0o111, f"{script} is executable"
    out = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# ---- the image reference -------------------------------------------------------------------------

def test_default_image_is_tied_to_the_commit(monkeypatch):
    from pipeline import image

    monkeypatch.delenv("MTLP_IMAGE", raising=False)
    monkeypatch.delenv("MTLP_IMAGE_REGISTRY", raising=False)
    ref = image.default_image()
    assert ref.startswith(f"{image.DEFAULT_REGISTRY}/mtl-pipeline:{image.package_version()}")
    git = shutil.which("git")
    if git and (ROOT / ".git").exists():
        sha = subprocess.run([git, "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        assert ref.endswith(f":{image.package_version()}-{sha}")


def test_default_image_overrides(monkeypatch):
    from pipeline import image

    monkeypatch.setenv("MTLP_IMAGE", "registry.example.com/ml/mtl-pipeline:custom")
    assert image.default_image() == "registry.example.com/ml/mtl-pipeline:custom"
    monkeypatch.delenv("MTLP_IMAGE")
    monkeypatch.setenv("MTLP_IMAGE_REGISTRY", "registry.example.com/ml/")
    assert image.default_image() == f"registry.example.com/ml/mtl-pipeline:{image.image_tag()}"


def test_default_image_outside_git_and_inside_the_image(monkeypatch, tmp_path):
    from pipeline import image

    assert image.git_sha(repo=tmp_path) is None
    monkeypatch.setattr(image, "git_sha", lambda repo=None: None)
    assert image.image_tag() == image.package_version()
    # Inside the image the build wrote pipeline/_build_info.py; emulate it.
    monkeypatch.undo()
    monkeypatch.setattr(image, "_build_info", lambda: {"GIT_SHA": "0123456789abcdef", "VERSION": "9.9.9"})
    assert image.image_tag() == "9.9.9-0123456789ab"


def test_make_image_and_the_pipeline_compute_the_same_reference(monkeypatch):
    """`make image` tags with `python3 pipeline/image.py` run as a plain script (no package imports)."""
    from pipeline import image

    monkeypatch.delenv("MTLP_IMAGE", raising=False)
    env = {k: v for k, v in __import__("os").environ.items() if k not in {"MTLP_IMAGE", "MTLP_IMAGE_REGISTRY"}}
    out = subprocess.run([sys.executable, "-S", str(ROOT / "pipeline" / "image.py")],
                         capture_output=True, text=True, env=env, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == image.default_image()


# ---- the compiled pipeline runs every component in the image -------------------------------------

def _compile(tmp_path, config) -> dict:
    graph = pytest.importorskip("pipeline.graph", reason="pipeline.graph (the KFP graph) is not written yet")
    compiler = pytest.importorskip("kfp.compiler")
    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(graph.build_pipeline(config), str(path))
    return next(yaml.safe_load_all(path.read_text()))


def _assert_every_component_runs_in(spec: dict, image: str) -> None:
    placeholder = "{{$.inputs.parameters['pipelinechannel--image']}}"
    executors = spec["deploymentSpec"]["executors"]
    assert executors
    for name, ex in executors.items():
        assert ex["container"]["image"] in {image, placeholder}, f"{name} runs in {ex['container']['image']}"
    assert spec["root"]["inputDefinitions"]["parameters"]["image"]["defaultValue"] == image
    # Where the image is the run parameter, every task, in every (nested) DAG, passes that parameter on.
    components = spec["components"]
    dags = [("root", spec["root"])] + [(n, c) for n, c in components.items() if "dag" in c]
    for dag_name, dag in dags:
        for task_name, task in dag["dag"]["tasks"].items():
            comp = components[task["componentRef"]["name"]]
            if "pipelinechannel--image" not in comp.get("inputDefinitions", {}).get("parameters", {}):
                continue
            bound = task["inputs"]["parameters"]["pipelinechannel--image"]["componentInputParameter"]
            assert bound == ("image" if dag_name == "root" else "pipelinechannel--image"), (dag_name, task_name, bound)


def test_compiled_pipeline_runs_every_component_in_the_given_image(tmp_path):
    config_mod = pytest.importorskip("pipeline.config")
    image = "registry.example.com/ml/mtl-pipeline:9.9.9-0123456789ab"
    _assert_every_component_runs_in(_compile(tmp_path, config_mod.PipelineConfig(image=image)), image)


def test_compiled_pipeline_defaults_to_the_image_of_this_commit(tmp_path, monkeypatch):
    config_mod = pytest.importorskip("pipeline.config")
    from pipeline.image import default_image

    monkeypatch.delenv("MTLP_IMAGE", raising=False)
    monkeypatch.setenv("MTLP_IMAGE_REGISTRY", "registry.example.com/ml")
    _assert_every_component_runs_in(_compile(tmp_path, config_mod.PipelineConfig()), default_image())
