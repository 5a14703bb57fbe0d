"""Multi-node training as a Kubeflow PyTorchJob (Training Operator, ``kubeflow.org/v1``).

The pipeline's train step stays one KFP task: it copies the prepared data to a ReadWriteMany volume, submits
a PyTorchJob whose Master and Worker pods run the project image with ``torchrun`` (static rendezvous on the
operator's ``MASTER_ADDR``/``MASTER_PORT``/``RANK``), waits for it, and copies rank 0's trained folder back as
its output. A failed job fails the step with the job's own condition message. Rank 0 logs to MLflow.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from .torchrun import read_result, worker_args

__all__ = ["JobSettings", "build_manifest", "submit", "wait_for_job", "run_training_job", "JobFailed",
           "GROUP", "VERSION", "PLURAL"]

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
CONTAINER = "pytorch"  # the operator finds the training container by this name
UID = 10001  # the image's non-root user


class JobFailed(RuntimeError):
    """The PyTorchJob ended in the Failed condition (or did not finish in time)."""


@dataclass
class JobSettings:
    """Everything about the job that is not the training itself. ``secrets`` become env (``envFrom``,
    optional) as in the pipeline's own pods; ``env`` adds plain variables (e.g. ``MLFLOW_TRACKING_URI``)."""

    image: str
    namespace: str = "kubeflow"
    service_account: str = "mtl-pipeline-runner"
    shared_pvc: Optional[str] = None
    shared_mount: str = "/mnt/mtlp-shared"
    gpus_per_node: int = 0
    accelerator: str = "nvidia.com/gpu"
    cpu: str = "2"
    memory: str = "8Gi"
    shm_size: str = "1Gi"
    secrets: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    ttl_seconds: int = 3600
    poll_seconds: float = 15.0
    timeout_seconds: float = 7 * 24 * 3600.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "JobSettings":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown PyTorchJob settings {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**dict(d))


def job_name(model_name: str) -> str:
    """A fresh DNS-1123 name (the operator names pods ``<job>-master-0``, so it stays well under 63 chars)."""
    return f"mtl-train-{model_name.lower().replace('_', '-')[:16]}-{uuid.uuid4().hex[:8]}"


def _pod_template(s: JobSettings, command: list[str]) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": s.cpu, "memory": s.memory}
    if s.gpus_per_node > 0:
        limits[s.accelerator] = s.gpus_per_node
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": s.shm_size}},
                                     {"name": "tmp", "emptyDir": {}}]
    if s.shared_pvc:
        mounts.append({"name": "shared", "mountPath": s.shared_mount})
        volumes.append({"name": "shared", "persistentVolumeClaim": {"claimName": s.shared_pvc}})
    container = {
        "name": CONTAINER, "image": s.image, "command": command,
        "env": [{"name": k, "value": str(v)} for k, v in sorted(s.env.items())]
        + [{"name": "PYTHONUNBUFFERED", "value": "1"}],
        "envFrom": [{"secretRef": {"name": name, "optional": True}} for name in s.secrets],
        "resources": {"requests": {"cpu": s.cpu, "memory": s.memory}, "limits": limits},
        "volumeMounts": mounts,
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    return {"metadata": {"labels": {"app.kubernetes.io/part-of": "mtl-pipeline", "app.kubernetes.io/component": "train"}},
            "spec": {"serviceAccountName": s.service_account, "containers": [container], "volumes": volumes,
                     "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                                         "seccompProfile": {"type": "RuntimeDefault"}}}}


def build_manifest(name: str, settings: JobSettings, nproc_per_node: int, n_nodes: int,
                   args: Sequence[str]) -> dict[str, Any]:
    """The PyTorchJob: one Master and ``n_nodes - 1`` Workers, each running ``nproc_per_node`` ranks of
    ``workflow.training.torchrun`` under torchrun. The operator sets ``MASTER_ADDR``, ``MASTER_PORT`` and ``RANK``
    (the pod's node rank) in every pod; Kubernetes expands ``$(VAR)`` from them in the command."""
    if n_nodes < 2:
        raise ValueError(f"a PyTorchJob is for n_nodes >= 2, got {n_nodes}")
    command = ["python", "-m", "torch.distributed.run", "--nnodes", str(n_nodes), "--nproc-per-node",
               str(nproc_per_node), "--node-rank", "$(RANK)", "--master-addr", "$(MASTER_ADDR)",
               "--master-port", "$(MASTER_PORT)", "-m", "workflow.training.torchrun", *args]
    template = _pod_template(settings, command)

    def replica(n: int) -> dict[str, Any]:
        return {"replicas": n, "restartPolicy": "Never", "template": template}

    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
            "metadata": {"name": name, "namespace": settings.namespace,
                         "labels": {"app.kubernetes.io/part-of": "mtl-pipeline"}},
            "spec": {"nprocPerNode": str(nproc_per_node),
                     "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 0,
                                   "ttlSecondsAfterFinished": settings.ttl_seconds},
                     "pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(n_nodes - 1)}}}


def _custom_objects_api() -> Any:
    """The cluster's CustomObjectsApi: in-cluster credentials (the pod's service account), else kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def submit(manifest: Mapping[str, Any], api: Any = None) -> dict[str, Any]:
    api = api or _custom_objects_api()
    return api.create_namespaced_custom_object(GROUP, VERSION, manifest["metadata"]["namespace"], PLURAL, dict(manifest))


def _condition(job: Mapping[str, Any], kind: str) -> Optional[Mapping[str, Any]]:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and str(c.get("status")) == "True":
            return c
    return None


def wait_for_job(name: str, namespace: str, api: Any = None, poll_seconds: float = 15.0,
                 timeout_seconds: float = 7 * 24 * 3600.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Poll until the job has condition Succeeded (returned) or Failed (``JobFailed`` with its reason and
    message). On timeout the job is deleted and ``JobFailed`` raised, so no pods keep holding GPUs."""
    api = api or _custom_objects_api()
    deadline = clock() + timeout_seconds
    while True:
        job = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        if _condition(job, "Succeeded"):
            return job
        failed = _condition(job, "Failed")
        if failed:
            raise JobFailed(f"PyTorchJob {namespace}/{name} failed: {failed.get('reason', '')}: "
                            f"{failed.get('message', '')}".rstrip(": "))
        if clock() >= deadline:
            api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            raise JobFailed(f"PyTorchJob {namespace}/{name} did not finish in {timeout_seconds:.0f} s; deleted it")
        sleep(poll_seconds)


def run_training_job(prepared_dir: str, model_name: str, out_dir: str, model_run_id: str, work_dir: str,
                     params: Mapping[str, Any], n_epoch: int, patience: int, device: str, seed: int,
                     tracking_uri: Optional[str], nproc_per_node: int, n_nodes: int, settings: Mapping[str, Any],
                     api: Any = None):
    """The multi-node train step: stage the data on the shared volume, run the job, fetch rank 0's folder."""
    s = JobSettings.from_dict(settings)
    if not s.shared_pvc:
        raise ValueError("n_nodes > 1 needs train.shared_pvc: a ReadWriteMany claim that the train step and the "
                         "job's pods mount (see deploy/README.md)")
    if tracking_uri and not tracking_uri.startswith(("http://", "https://", "databricks")):
        raise ValueError(f"n_nodes > 1 needs a tracking server the pods can reach, not {tracking_uri!r}")
    name = job_name(model_name)
    shared = Path(s.shared_mount) / name
    shutil.copytree(prepared_dir, shared / "prepared")
    s.env = {**s.env, **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri else {})}
    args = worker_args(shared / "prepared", model_name, shared / "trained", params, n_epoch, patience, device, seed,
                       model_run_id, shared, tracking_uri)
    manifest = build_manifest(name, s, nproc_per_node, n_nodes, args)
    (shared / "pytorchjob.json").write_text(json.dumps(manifest, indent=2))
    submit(manifest, api)
    try:
        wait_for_job(name, s.namespace, api, s.poll_seconds, s.timeout_seconds)
        shutil.copytree(shared / "trained", out_dir, dirs_exist_ok=True)
    finally:
        shutil.rmtree(shared / "prepared", ignore_errors=True)
    return read_result(out_dir)
