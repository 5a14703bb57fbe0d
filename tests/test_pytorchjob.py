"""The PyTorchJob the multi-node train step submits: schema-valid, and submitted, waited on and failed
through a fake Kubernetes CustomObjectsApi (there is no cluster here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workflow.training import pytorchjob as pj
from workflow.training.torchrun import worker_args

SCHEMA = json.loads((Path(__file__).parent / "data" / "pytorchjob-v1.schema.json").read_text())
K8S_VERSION = "1.33"


def _manifest(n_nodes: int = 3, nproc: int = 4, gpus: int = 4) -> dict:
    s = pj.JobSettings(image="registry.example.com/ml/mtl-pipeline:0.1.0-abc", shared_pvc="mtl-train-shared",
                       gpus_per_node=gpus, secrets=["mlflow-credentials", "optuna-db"],
                       env={"MLFLOW_TRACKING_URI": "http://mlflow.mtl-pipeline.svc.cluster.local:5000"})
    args = worker_args("/mnt/mtlp-shared/j/prepared", "mmoe", "/mnt/mtlp-shared/j/trained", {"lr": 1e-3}, 5, 2,
                       "auto", 42, "run123", "/mnt/mtlp-shared/j", "http://mlflow:5000")
    return pj.build_manifest(pj.job_name("mmoe"), s, nproc, n_nodes, args)


def test_manifest_is_a_valid_pytorchjob():
    jsonschema = pytest.importorskip("jsonschema")
    m = _manifest()
    jsonschema.validate(m, SCHEMA)
    specs = m["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 2
    assert m["spec"]["nprocPerNode"] == "4"
    assert m["metadata"]["namespace"] == "kubeflow"


def test_schema_catches_what_the_operator_would_reject():
    jsonschema = pytest.importorskip("jsonschema")
    bad = _manifest()
    bad["spec"]["pytorchReplicaSpecs"]["Master"]["restartPolicy"] = "Sometimes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)
    bad = _manifest()
    bad["spec"]["pytorchReplicaSpecs"]["Chief"] = bad["spec"]["pytorchReplicaSpecs"].pop("Master")  # a TFJob word
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMA)


def test_pod_template_is_a_valid_kubernetes_pod_template():
    kv = pytest.importorskip("kubernetes_validate")
    for replica in _manifest()["spec"]["pytorchReplicaSpecs"].values():
        doc = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t", "namespace": "kubeflow"},
               "template": replica["template"]}
        kv.validate(doc, K8S_VERSION, strict=True)


def test_pods_run_torchrun_with_the_operator_rendezvous_gpus_account_and_secrets():
    m = _manifest(n_nodes=2, nproc=8, gpus=8)
    pod = m["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    (c,) = pod["containers"]
    cmd = c["command"]
    assert cmd[:3] == ["python", "-m", "torch.distributed.run"]
    opt = dict(zip(cmd[3:15:2], cmd[4:15:2]))
    assert opt == {"--nnodes": "2", "--nproc-per-node": "8", "--node-rank": "$(RANK)",
                   "--master-addr": "$(MASTER_ADDR)", "--master-port": "$(MASTER_PORT)", "-m": "workflow.training.torchrun"}
    assert c["name"] == "pytorch" and c["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert pod["serviceAccountName"] == "mtl-pipeline-runner"
    assert [e["secretRef"]["name"] for e in c["envFrom"]] == ["mlflow-credentials", "optuna-db"]
    assert {"name": "shared", "persistentVolumeClaim": {"claimName": "mtl-train-shared"}} in pod["volumes"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    cpu = _manifest(gpus=0)["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]


def test_one_node_is_not_a_job():
    with pytest.raises(ValueError, match="n_nodes >= 2"):
        pj.build_manifest("x", pj.JobSettings(image="i"), 2, 1, [])


class FakeCustomObjects:
    """The three CustomObjectsApi calls the step makes; ``statuses`` are returned one per poll."""

    def __init__(self, statuses: list[dict], on_create=None) -> None:
        self.statuses, self.on_create = list(statuses), on_create
        self.created: list[tuple] = []
        self.deleted: list[tuple] = []
        self.polls = 0

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.created.append((group, version, namespace, plural, body))
        if self.on_create:
            self.on_create(body)
        return body

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        assert (group, version, plural) == ("kubeflow.org", "v1", "pytorchjobs")
        self.polls += 1
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"metadata": {"name": name}, "status": status}

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.deleted.append((namespace, name))


def _cond(kind: str, reason: str = "", message: str = "") -> dict:
    return {"conditions": [{"type": "Created", "status": "True"},
                           {"type": kind, "status": "True", "reason": reason, "message": message}]}


def test_wait_returns_on_success_after_polling():
    api = FakeCustomObjects([{}, _cond("Running"), _cond("Succeeded", "PyTorchJobSucceeded")])
    sleeps: list[float] = []
    job = pj.wait_for_job("j", "kubeflow", api, poll_seconds=7, sleep=sleeps.append)
    assert job["status"]["conditions"][-1]["type"] == "Succeeded"
    assert api.polls == 3 and sleeps == [7, 7]


def test_wait_fails_with_the_jobs_reason():
    message = "PyTorchJob kubeflow/j is failed because 1 Master replica(s) failed."
    api = FakeCustomObjects([_cond("Running"), _cond("Failed", "PyTorchJobFailed", message)])
    with pytest.raises(pj.JobFailed, match="PyTorchJobFailed: PyTorchJob kubeflow/j is failed because 1 Master"):
        pj.wait_for_job("j", "kubeflow", api, sleep=lambda s: None)


def test_wait_deletes_the_job_on_timeout():
    t = iter(range(0, 1000, 10))
    api = FakeCustomObjects([_cond("Running")])
    with pytest.raises(pj.JobFailed, match="did not finish"):
        pj.wait_for_job("j", "kubeflow", api, timeout_seconds=25, sleep=lambda s: None, clock=lambda: next(t))
    assert api.deleted == [("kubeflow", "j")]


def _settings(tmp_path: Path, **kw) -> dict:
    return {"image": "img", "shared_pvc": "claim", "shared_mount": str(tmp_path / "shared"), "poll_seconds": 0.0, **kw}


def test_run_training_job_stages_data_submits_and_fetches_rank0_output(tmp_path):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "train.parquet").write_bytes(b"rows")
    result = {"model_name": "mmoe", "params": {}, "best_epoch": 1, "best_score": 0.8, "history": [],
              "test_metrics": {}, "test_score": 0.8, "out_dir": "x", "checkpoint_path": "x/model.pt",
              "n_parameters": 10, "train_seconds": 1.0, "task_names": ["click"]}

    def job_runs(body):  # what rank 0 of the job would leave on the shared volume
        args = body["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
        staged = Path(args[args.index("--prepared-dir") + 1])
        assert (staged / "train.parquet").read_bytes() == b"rows"
        trained = Path(args[args.index("--out-dir") + 1])
        trained.mkdir(parents=True)
        (trained / "metrics.json").write_text(json.dumps(result))
        (trained / "model.pt").write_bytes(b"w")

    api = FakeCustomObjects([_cond("Succeeded")], on_create=job_runs)
    out = tmp_path / "out"
    res = pj.run_training_job(str(prepared), "mmoe", str(out), "run1", str(tmp_path), {"lr": 0.01}, 2, 1, "auto", 3,
                              "http://mlflow:5000", 2, 3, _settings(tmp_path), api=api)
    assert res.test_score == 0.8 and res.out_dir == out and (out / "model.pt").read_bytes() == b"w"
    (_, _, ns, plural, body), = api.created
    assert (ns, plural) == ("kubeflow", "pytorchjobs")
    assert body["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    env = body["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in env
    staged_job = next((tmp_path / "shared").iterdir())
    assert not (staged_job / "prepared").exists() and (staged_job / "pytorchjob.json").is_file()


def test_run_training_job_failure_names_the_reason(tmp_path):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    api = FakeCustomObjects([_cond("Failed", "PyTorchJobFailed", "Worker replica 1 OOMKilled")])
    with pytest.raises(pj.JobFailed, match="OOMKilled"):
        pj.run_training_job(str(prepared), "mmoe", str(tmp_path / "out"), "r", str(tmp_path), {}, 1, 1, "cpu", 0,
                            "http://mlflow:5000", 1, 2, _settings(tmp_path), api=api)


def test_run_training_job_needs_a_shared_volume_and_a_server(tmp_path):
    with pytest.raises(ValueError, match="shared_pvc"):
        pj.run_training_job("p", "mmoe", "o", "r", "w", {}, 1, 1, "cpu", 0, "http://m", 1, 2, {"image": "i"})
    with pytest.raises(ValueError, match="tracking server"):
        pj.run_training_job("p", "mmoe", "o", "r", "w", {}, 1, 1, "cpu", 0, f"sqlite:///{tmp_path}/m.db", 1, 2,
                            _settings(tmp_path))
