"""The pipeline graph: prepare -> per model (search -> train (+ evaluate) -> report -> export -> register) -> promote
-> summary. Built from a ``PipelineConfig``: what must be known when the YAML is written (the image's
default, the number of search workers, resources, Secrets) comes from it; the rest are run parameters."""


import dataclasses
import json
from typing import Callable

from kfp import dsl, kubernetes

from .config import PipelineConfig, config_to_dict
from .image import default_image
from .ops import make_components

__all__ = ["build_pipeline", "PIPELINE_NAME"]

PIPELINE_NAME = "mtl-pipeline"
# env vars that carry credentials; filled from Kubernetes Secrets (never pipeline parameters)
MLFLOW_SECRET_KEYS = {"MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
                      "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD"}
DATABASE_SECRET_KEYS = {"OPTUNA_STORAGE": "OPTUNA_STORAGE"}


def _heavy(task: dsl.PipelineTask, config: PipelineConfig, gpus, image, with_db: bool, cache: bool = False
           ) -> dsl.PipelineTask:
    """Search and training: GPUs, CPU/memory, retries, a memory-backed /dev/shm, Secrets; no caching on the
    cluster (``cache`` is only set by the local runner, whose cache lives in the run's own folder)."""
    r = config.resources
    task.set_accelerator_type(r.accelerator_type).set_accelerator_limit(gpus)
    task.set_cpu_request(r.cpu).set_cpu_limit(r.cpu).set_memory_request(r.memory).set_memory_limit(r.memory)
    task.set_retry(num_retries=r.retries, backoff_duration="30s", backoff_factor=2.0)
    task.set_caching_options(cache)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=r.shm_size)
    return _light(task, config, image, with_db=with_db, cache=cache)


def _light(task: dsl.PipelineTask, config: PipelineConfig, image, with_db: bool = False, cache: bool = False
           ) -> dsl.PipelineTask:
    task.set_container_image(image)
    task.set_caching_options(cache)
    if config.secrets.mlflow:
        kubernetes.use_secret_as_env(task, config.secrets.mlflow, MLFLOW_SECRET_KEYS, optional=True)
    if with_db and config.secrets.database:
        kubernetes.use_secret_as_env(task, config.secrets.database, DATABASE_SECRET_KEYS, optional=True)
    return task


SHARED_MOUNT = "/mnt/mtlp-shared"


def _job_json(config: PipelineConfig) -> str:
    """What a multi-node train step needs to write its PyTorchJob (``workflow.training.pytorchjob.JobSettings``,
    less the image, which is the run's parameter so that the job runs the code the pipeline runs)."""
    r, t = config.resources, config.train
    fixed = {"namespace": t.job_namespace, "service_account": t.job_service_account, "shared_pvc": t.shared_pvc,
             "shared_mount": SHARED_MOUNT, "gpus_per_node": r.gpus, "accelerator": r.accelerator_type, "cpu": r.cpu,
             "memory": r.memory, "shm_size": r.shm_size,
             "secrets": [s for s in (config.secrets.mlflow, config.secrets.database) if s]}
    return json.dumps(fixed, sort_keys=True)


def build_pipeline(config: PipelineConfig, local: bool = False) -> Callable:
    """The ``@dsl.pipeline`` function for ``config``; its parameters default to the config's values.

    ``local``: the image and GPU count are fixed from the config instead of read from the run's
    parameters (KFP's local runner cannot resolve parameters inside resource fields; it ignores both), and
    every step may be cached: the local cache lives in the run's folder and every step's inputs include the
    run name or work directory, so re-running a killed run skips what finished (search, training and
    registration included) and never reuses another run's results. On the cluster search and training are
    never cached.
    """
    image_default = config.image or default_image()
    ops = make_components(image_default)
    cfg_json = json.dumps(config_to_dict(config), sort_keys=True)
    # trials train at the final training's batch size (unless the space searches it): what they select carries over
    search_json = json.dumps({**{k: v for k, v in config_to_dict(config)["search"].items() if k != "storage"},
                              "batch_size": config.train.batch_size})
    n_workers = config.search.n_workers

    @dsl.pipeline(name=PIPELINE_NAME, description="Multi-task ranking: prepare, search, train and evaluate, report, export, "
                                                   "register and promote, one branch per model.")
    def mtl_pipeline(
        run_name: str = "run",
        work_dir: str = "/tmp/mtlp",
        dataset: str = config.dataset.name,
        dataset_options: dict = dict(config.dataset.options),
        data_dir: str = config.dataset.data_dir or "",
        models: list = list(config.models),
        n_trials: int = config.search.n_trials,
        search_epochs: int = config.search.n_epoch,
        n_epoch: int = config.train.n_epoch,
        batch_size: int = config.train.batch_size,
        tracking_uri: str = config.tracking.uri or "",
        optuna_storage: str = config.search.storage or "",
        registered_model: str = config.registered_model,
        gpus: int = config.resources.gpus,
        image: str = image_default,
        nproc_per_node: int = config.train.nproc_per_node,
        n_nodes: int = config.train.n_nodes,
    ):
        if local:
            gpus, image = config.resources.gpus, image_default
        start = _light(ops.start_run(config_json=cfg_json, work_dir=work_dir, run_name=run_name,
                                     tracking_uri=tracking_uri), config, image, cache=local)
        start.set_display_name("start MLflow run")
        prep = ops.prepare_data(dataset=dataset, data_dir=data_dir, seed=config.dataset.seed,
                                val_fraction=config.dataset.val_fraction, options=dataset_options,
                                parent_run_id=start.output, work_dir=work_dir, tracking_uri=tracking_uri,
                                user_column=config.dataset.user_column or "")
        _light(prep, config, image, cache=True).set_display_name("prepare data")
        prepared = prep.outputs["prepared"]

        gbdt = None
        if "gbdt" in config.train.baselines:  # one task beside the models, on the same prepared splits
            gbdt = _light(ops.baseline_gbdt(prepared=prepared, parent_run_id=start.output, seed=config.train.seed,
                                            work_dir=work_dir, tracking_uri=tracking_uri), config, image, cache=local)
            gbdt.set_display_name("gbdt baseline")

        with dsl.ParallelFor(models, name="per-model") as model_name:
            # the parent run is looked up by run name: parameters, not task outputs, cross into the loop
            # (KFP 2.17's local runner replaces every task-output parameter entering a loop by the loop item)
            model_run = _light(ops.start_model_run(run_name=run_name, experiment=config.tracking.experiment,
                                                   model_name=model_name, work_dir=work_dir,
                                                   tracking_uri=tracking_uri), config, image, cache=local).after(start)
            search_args = dict(prepared=prepared, model_name=model_name, model_run_id=model_run.output,
                               search_json=search_json, n_trials=n_trials, n_epoch=search_epochs,
                               storage=optuna_storage, seed=config.train.seed,
                               device=config.train.device, work_dir=work_dir, tracking_uri=tracking_uri,
                               run_name=run_name)
            if n_workers > 1 and local:
                # KFP 2.17's local runner gives a nested loop's item to every parameter entering it that is a task
                # output or another loop's item (model_name, model_run_id): N sibling worker tasks instead, which it
                # runs one after the other, each in its own process (or container) on the one study
                workers = [_heavy(ops.search_model(**search_args), config, gpus, image, with_db=True)
                           .set_display_name("search worker") for _ in range(n_workers)]
                search = _heavy(ops.search_model(**search_args), config, gpus, image, with_db=True,
                                cache=local).after(*workers)
            elif n_workers > 1:  # N workers share one study (a database storage); then one task reads the result
                with dsl.ParallelFor(list(range(n_workers)), name="search-workers"):
                    # never cached: a worker's cache key would equal the final search task's (same inputs)
                    worker = _heavy(ops.search_model(**search_args), config, gpus, image, with_db=True)
                    worker.set_display_name("search worker")
                search = _heavy(ops.search_model(**search_args), config, gpus, image, with_db=True,
                                cache=local).after(worker)
            else:
                search = _heavy(ops.search_model(**search_args), config, gpus, image, with_db=True, cache=local)
            search.set_display_name("search")
            train = _heavy(ops.train_model(prepared=prepared, model_name=model_name, model_run_id=model_run.output,
                                           best_params=search.output, fixed_params_json=json.dumps(config.train.params),
                                           n_epoch=n_epoch, patience=config.train.patience, batch_size=batch_size,
                                           device=config.train.device, seed=config.train.seed, work_dir=work_dir,
                                           tracking_uri=tracking_uri, nproc_per_node=nproc_per_node, n_nodes=n_nodes,
                                           job_json=_job_json(config), job_image=image,
                                           single_task="single_task" in config.train.baselines), config, gpus, image,
                          with_db=False, cache=local)
            if config.train.shared_pvc:  # the PyTorchJob's pods read and write the training data through it
                kubernetes.mount_pvc(train, pvc_name=config.train.shared_pvc, mount_path=SHARED_MOUNT)
            train.set_display_name("train")
            report = _light(ops.report_model(trained=train.outputs["trained"], model_name=model_name),
                            config, image, cache=local)
            report.set_display_name("report")
            export = _light(ops.export_onnx(trained=train.outputs["trained"], prepared=prepared,
                                            model_run_id=model_run.output, work_dir=work_dir,
                                            tracking_uri=tracking_uri), config, image, cache=local)
            export.set_display_name("export ONNX")
            register = _light(ops.register_model(exported=export.outputs["exported"], model_run_id=model_run.output,
                                                 registered_model=registered_model, work_dir=work_dir,
                                                 tracking_uri=tracking_uri, run_name=run_name), config, image,
                              cache=local)
            register.set_display_name("register candidate")

        promote = _light(ops.promote_champion(versions=dsl.Collected(register.output),
                                              registered_model=registered_model, metric=config.promotion.metric,
                                              margin=config.promotion.margin, work_dir=work_dir,
                                              tracking_uri=tracking_uri, prepared=prepared,
                                              promotion_json=json.dumps(dataclasses.asdict(config.promotion))),
                          config, image, cache=local)
        promote.set_display_name("compare and promote")
        summary = _light(ops.summarize_run(parent_run_id=start.output, reports=dsl.Collected(report.outputs["Output"]),
                                           decision_json=promote.output, registered_model=registered_model,
                                           work_dir=work_dir, tracking_uri=tracking_uri,
                                           baselines_json=gbdt.output if gbdt is not None else "{}"),
                          config, image, cache=local)
        summary.set_display_name("summary")

    return mtl_pipeline
