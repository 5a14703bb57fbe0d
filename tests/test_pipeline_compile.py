"""The compiled KFP IR: DAG edges, images, resources, retries, caching, Secrets and parameters."""

from __future__ import annotations

import yaml
import pytest

from pipeline.config import load_config
from pipeline.submit import compile_pipeline

IMAGE = "registry.example.com/ml/mtl-pipeline:1.2.3-abc"


def compile_ir(tmp_path, overrides: dict | None = None) -> tuple[dict, dict]:
    config = load_config({"image": IMAGE, "resources": {"gpus": 1, "cpu": "4", "memory": "16Gi"},
                          **(overrides or {})})
    path = compile_pipeline(config, tmp_path / "pipeline.yaml")
    pipeline_spec, platform_spec = yaml.safe_load_all(path.read_text())
    return pipeline_spec, platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def loop_tasks(spec: dict) -> dict:
    return spec["components"]["comp-for-loop-1"]["dag"]["tasks"]


def test_dag_edges_follow_the_pipeline(tmp_path) -> None:
    spec, _ = compile_ir(tmp_path)
    root = spec["root"]["dag"]["tasks"]
    deps = {name: set(task.get("dependentTasks", [])) for name, task in root.items()}
    assert deps["start-run"] == set()
    assert deps["prepare-data"] == {"start-run"}
    assert deps["for-loop-1"] == {"prepare-data", "start-run"}
    assert deps["promote-champion"] == {"for-loop-1", "prepare-data"}  # scores the validation rows
    assert deps["summarize-run"] >= {"promote-champion", "for-loop-1"}
    assert root["for-loop-1"]["parameterIterator"]["items"] == {"inputParameter": "pipelinechannel--models"}

    inner = {name: set(task.get("dependentTasks", [])) for name, task in loop_tasks(spec).items()}
    assert inner["search-model"] == {"start-model-run"}
    assert inner["train-model"] >= {"search-model"}
    assert inner["report-model"] == {"train-model"}
    assert inner["export-onnx"] >= {"train-model"}
    assert inner["register-model"] >= {"export-onnx"}
    # the search's best params feed training
    train_inputs = loop_tasks(spec)["train-model"]["inputs"]["parameters"]
    assert train_inputs["best_params"]["taskOutputParameter"]["producerTask"] == "search-model"
    # promotion sees every model's registered version (dsl.Collected over the loop)
    versions = root["promote-champion"]["inputs"]["parameters"]["versions"]["taskOutputParameter"]
    assert versions["producerTask"] == "for-loop-1"


def test_every_component_runs_in_the_image(tmp_path) -> None:
    spec, _ = compile_ir(tmp_path)
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) == 10
    for name, ex in executors.items():
        assert ex["container"]["image"] == "{{$.inputs.parameters['pipelinechannel--image']}}", name
    assert spec["root"]["inputDefinitions"]["parameters"]["image"]["defaultValue"] == IMAGE


def test_search_and_training_resources_retries_and_caching(tmp_path) -> None:
    spec, _ = compile_ir(tmp_path)
    executors = spec["deploymentSpec"]["executors"]
    for name in ("exec-search-model", "exec-train-model"):
        res = executors[name]["container"]["resources"]
        assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert res["accelerator"]["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpus']}}"
        assert (res["resourceCpuRequest"], res["resourceCpuLimit"]) == ("4", "4")
        assert (res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == ("16Gi", "16Gi")
    assert "accelerator" not in executors["exec-prepare-data"]["container"].get("resources", {})
    tasks = loop_tasks(spec)
    for name in ("search-model", "train-model"):
        assert tasks[name]["retryPolicy"]["maxRetryCount"] == 2
        assert not tasks[name].get("cachingOptions", {}).get("enableCache", False)
    assert spec["root"]["dag"]["tasks"]["prepare-data"]["cachingOptions"] == {"enableCache": True}
    assert spec["root"]["inputDefinitions"]["parameters"]["gpus"]["defaultValue"] == 1


def test_secrets_become_env_vars_and_shm_is_memory_backed(tmp_path) -> None:
    _, k8s = compile_ir(tmp_path)
    for name in ("exec-search-model", "exec-train-model"):
        shm = k8s[name]["emptyDirMounts"][0]
        assert (shm["mountPath"], shm["medium"]) == ("/dev/shm", "Memory")
    search_env = {e["envVar"]: s["secretName"] for s in k8s["exec-search-model"]["secretAsEnv"] for e in s["keyToEnv"]}
    assert search_env == {"MLFLOW_TRACKING_USERNAME": "mlflow-credentials", "MLFLOW_TRACKING_PASSWORD": "mlflow-credentials",
                          "OPTUNA_STORAGE": "optuna-db"}
    for name, executor in k8s.items():  # every step that talks to MLflow gets its credentials
        envs = {e["envVar"] for s in executor.get("secretAsEnv", []) for e in s["keyToEnv"]}
        assert "MLFLOW_TRACKING_PASSWORD" in envs, name


def test_pipeline_parameters_and_defaults(tmp_path) -> None:
    spec, _ = compile_ir(tmp_path, {"models": ["mmoe", "ple"], "search": {"n_trials": 7}, "train": {"n_epoch": 9}})
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"run_name", "work_dir", "dataset", "dataset_options", "data_dir", "models", "n_trials",
                           "search_epochs", "n_epoch", "batch_size", "tracking_uri", "optuna_storage",
                           "registered_model", "gpus", "image", "nproc_per_node", "n_nodes"}
    assert params["models"]["defaultValue"] == ["mmoe", "ple"]
    assert params["n_trials"]["defaultValue"] == 7 and params["n_epoch"]["defaultValue"] == 9
    assert params["dataset"]["defaultValue"] == "synthetic-funnel"


def test_database_storage_fans_out_search_workers(tmp_path) -> None:
    spec, _ = compile_ir(tmp_path, {"search": {"n_workers": 3, "storage": "postgresql://optuna@db/optuna"}})
    inner = loop_tasks(spec)
    worker_loop = [n for n in inner if n.startswith("for-loop")]
    assert len(worker_loop) == 1
    workers = spec["components"][inner[worker_loop[0]]["componentRef"]["name"]]
    assert inner[worker_loop[0]]["parameterIterator"]["items"]["raw"] == "[0, 1, 2]"
    assert "search-model" in workers["dag"]["tasks"]
    # the task that reads the study's best params waits for every worker, and feeds training
    assert worker_loop[0] in inner["search-model-2"]["dependentTasks"]
    assert inner["train-model"]["inputs"]["parameters"]["best_params"]["taskOutputParameter"]["producerTask"] == "search-model-2"


@pytest.mark.parametrize("bad, match", [
    ({"models": ["mmoe", "xgboost"]}, "unknown model 'xgboost'"),
    ({"search": {"n_trials": 0}}, "search.n_trials must be >= 1"),
    ({"search": {"n_trial": 3}}, "unknown key.*search.n_trial"),
    ({"train": {"n_epoch": "5"}}, "train.n_epoch must be int"),
    ({"resources": {"gpus": -1}}, "resources.gpus"),
    ({"dataset": {"val_fraction": 1.5}}, "val_fraction"),
    ({"train": {"params": {"mmeo": {}}}}, "train.params: unknown models"),
    # a password in a config URL would travel as a KFP pipeline parameter, visible in the UI and the YAML
    ({"search": {"storage": "postgresql://optuna:s3cret@db/optuna"}}, "search.storage carries a password.*env:VARIABLE"),
    ({"tracking": {"uri": "https://alice:tok3n@mlflow.example"}}, "tracking.uri carries a password.*MLFLOW_TRACKING_URI"),
])
def test_bad_configs_name_the_key(bad: dict, match: str) -> None:
    from pipeline.config import ConfigError
    with pytest.raises(ConfigError, match=match):
        load_config(bad)


def test_shipped_configs_are_valid() -> None:
    from pipeline.config import REPO_CONFIGS
    files = sorted(REPO_CONFIGS.glob("*.yaml"))
    assert files, "configs/ holds ready configs"
    for path in files:
        load_config(path)


def _promotion_metric(spec: dict) -> str:
    """The metric the compiled promote task compares on (a constant of its inputs)."""
    param = spec["root"]["dag"]["tasks"]["promote-champion"]["inputs"]["parameters"]["metric"]
    return param["runtimeValue"]["constant"]


def test_every_shipped_config_promotes_on_validation(tmp_path) -> None:
    """Every config in configs/ and deploy/ compiles, and its compiled promotion compares on a validation
    metric: the test split is reported, never selected on (deploy/cluster-config.yaml once said test_score)."""
    from pipeline.config import REPO_CONFIGS, is_validation_metric
    files = sorted(REPO_CONFIGS.glob("*.yaml")) + sorted((REPO_CONFIGS.parent / "deploy").glob("*.yaml"))
    assert any(p.parent.name == "deploy" for p in files), files
    for path in files:
        out = compile_pipeline(load_config(path), tmp_path / f"{path.stem}.yaml")
        spec = next(yaml.safe_load_all(out.read_text()))
        metric = _promotion_metric(spec)
        assert is_validation_metric(metric) and metric == "val_score", (path, metric)


def test_a_test_promotion_metric_is_refused() -> None:
    from pipeline.config import ConfigError
    with pytest.raises(ConfigError, match="promotion.metric must be a validation metric.*'test_score'"):
        load_config({"promotion": {"metric": "test_score"}})


def test_the_local_graph_has_sibling_search_workers(tmp_path) -> None:
    """KFP's local runner mis-resolves a nested loop's inputs (model_name and model_run_id became the worker
    index): locally the N workers are sibling tasks, and the search task waits for all of them."""
    from kfp import compiler

    from pipeline.graph import build_pipeline
    config = load_config({"image": IMAGE, "search": {"n_workers": 2}})
    compiler.Compiler().compile(build_pipeline(config, local=True), str(tmp_path / "local.yaml"))
    inner = loop_tasks(next(yaml.safe_load_all((tmp_path / "local.yaml").read_text())))
    assert not [n for n in inner if n.startswith("for-loop")]
    workers = sorted(n for n in inner if n.startswith("search-model") and n != "search-model-3")
    assert workers == ["search-model", "search-model-2"]
    assert set(inner["search-model-3"]["dependentTasks"]) >= set(workers)
    assert inner["train-model"]["inputs"]["parameters"]["best_params"]["taskOutputParameter"]["producerTask"] == \
        "search-model-3"
