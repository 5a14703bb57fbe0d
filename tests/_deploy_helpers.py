"""The rendered deploy/ manifests for the deploy tests: ``kubectl kustomize`` output (skipped, with the reason,
where kubectl is missing), module fixtures over each kustomization, and lookups into the rendered objects."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# The Kubernetes version the manifests are validated for (kubernetes-validate ships its schemas).
K8S_VERSION = "1.33.0"

MLFLOW_NS, KFP_NS = "mtl-pipeline", "kubeflow"
SECRET_NAMES = {"mtl-postgres-admin", "mtl-mlflow-db", "mtl-optuna-db", "mtl-mlflow-s3", "mtl-mlflow-admin",
                "mtl-mlflow-pipeline", "mtl-mlflow-people", "mtl-serving-mlflow"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}
SECRETISH = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|API_KEY|CREDENTIAL", re.I)


def _render(path: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the manifests are rendered with `kubectl kustomize`")
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert docs, f"{path} rendered nothing"
    return docs


KUSTOMIZATIONS = {
    "base": K8S,
    "s3-artifacts": K8S / "overlays" / "s3-artifacts",
    "serving": K8S / "serving",
}


@pytest.fixture(scope="module", params=sorted(KUSTOMIZATIONS))
def any_rendered(request) -> list[dict]:
    return _render(KUSTOMIZATIONS[request.param])


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return _render(K8S)


@pytest.fixture(scope="module")
def s3() -> list[dict]:
    return _render(KUSTOMIZATIONS["s3-artifacts"])


@pytest.fixture(scope="module")
def serving() -> list[dict]:
    return _render(KUSTOMIZATIONS["serving"])


def _one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _by_prefix(docs: list[dict], kind: str, prefix: str) -> dict:
    """A generated ConfigMap (its name carries kustomize's content hash)."""
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, f"expected one {kind}/{prefix}*, found {len(found)}"
    return found[0]


def _pod_spec(doc: dict) -> dict:
    if doc["kind"] == "Pod":
        return doc["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def _workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def _containers(doc: dict) -> list[dict]:
    spec = _pod_spec(doc)
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def _container(docs: list[dict], kind: str, name: str, container: str) -> dict:
    return next(c for c in _containers(_one(docs, kind, name)) if c["name"] == container)


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []

