"""The KFP components: one thin wrapper per function of ``workflow.steps``, bound to the project image.

KFP ships each function's source to the container, so imports live inside the functions; the real
work is in the importable ``workflow`` package that the image (or the local venv) has installed.
"""


from typing import List, NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output
from kfp.dsl.python_component import PythonComponent


def start_run(config_json: str, work_dir: str, run_name: str, tracking_uri: str) -> str:
    import json

    from workflow.steps import start_pipeline_run
    return start_pipeline_run(json.loads(config_json), work_dir, run_name, tracking_uri or None)


def prepare_data(dataset: str, data_dir: str, seed: int, val_fraction: float, options: dict,
                 parent_run_id: str, work_dir: str, tracking_uri: str, prepared: Output[Dataset],
                 user_column: str = ""):
    from workflow.steps import prepare_step
    # KFP passes dict parameters through protobuf Struct, where every number is a double: 4000 -> 4000.0
    options = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in options.items()}
    spec = prepare_step(dataset, prepared.path, data_dir or None, seed, val_fraction, options,
                        parent_run_id, work_dir, tracking_uri or None, user_column=user_column or None)
    prepared.metadata.update({"dataset": spec.dataset, "rows": spec.rows})


def start_model_run(run_name: str, experiment: str, model_name: str, work_dir: str, tracking_uri: str) -> str:
    from workflow.steps import start_model_run as start
    return start(run_name, experiment, model_name, work_dir, tracking_uri or None)


def search_model(prepared: Input[Dataset], model_name: str, model_run_id: str, search_json: str, n_trials: int,
                 n_epoch: int, storage: str, seed: int, device: str, work_dir: str, tracking_uri: str,
                 run_name: str) -> str:
    import json

    from workflow.steps import search_step
    search = {**json.loads(search_json), "n_trials": n_trials, "n_epoch": n_epoch, "storage": storage or None}
    best = search_step(prepared.path, model_name, work_dir, model_run_id, search, seed=seed, device=device,
                       tracking_uri=tracking_uri or None, run_name=run_name)
    return json.dumps(best)


def train_model(prepared: Input[Dataset], model_name: str, model_run_id: str, best_params: str,
                fixed_params_json: str, n_epoch: int, patience: int, batch_size: int, device: str, seed: int,
                work_dir: str, tracking_uri: str, trained: Output[Model], nproc_per_node: int = 1, n_nodes: int = 1,
                job_json: str = "{}", job_image: str = "", single_task: bool = False) -> float:
    import json

    from workflow.steps import train_step
    fixed = {"batch_size": batch_size, **json.loads(fixed_params_json).get(model_name, {})}
    result = train_step(prepared.path, model_name, trained.path, model_run_id, work_dir,
                        best_params=json.loads(best_params), fixed_params=fixed, n_epoch=n_epoch, patience=patience,
                        device=device, seed=seed, tracking_uri=tracking_uri or None, nproc_per_node=nproc_per_node,
                        n_nodes=n_nodes, job={**json.loads(job_json), "image": job_image}, single_task=single_task)
    trained.metadata.update({"model_name": model_name, "best_epoch": result.best_epoch})
    return result.test_score


def report_model(trained: Input[Model], model_name: str, metrics: Output[Metrics], report: Output[HTML],
                 report_md: Output[Markdown]) -> str:
    import json

    from workflow.steps import report_step
    flat = report_step(trained.path, report.path, report_md.path)
    for key, value in flat.items():
        metrics.log_metric(key.replace("/", "_"), value)
    return json.dumps({"model": model_name, "metrics": flat})


def export_onnx(trained: Input[Model], prepared: Input[Dataset], model_run_id: str, work_dir: str,
                tracking_uri: str, exported: Output[Model]) -> float:
    import shutil

    from workflow.steps import export_step
    shutil.copytree(trained.path, exported.path)  # the servable folder: weights, spec and model.onnx
    diff = export_step(exported.path, prepared.path, model_run_id, work_dir, tracking_uri or None)
    # the model's name travels on: the register task's console line and log file name it
    exported.metadata.update({"onnx_parity_max_abs_diff": diff, "model_name": trained.metadata.get("model_name")})
    return diff


def register_model(exported: Input[Model], model_run_id: str, registered_model: str, work_dir: str,
                   tracking_uri: str, run_name: str) -> str:
    from workflow.steps import register_step
    return register_step(exported.path, model_run_id, registered_model, work_dir, run_name, tracking_uri or None)


def promote_champion(versions: List[str], registered_model: str, metric: str, margin: float, work_dir: str,
                     tracking_uri: str, prepared: Input[Dataset], promotion_json: str = "{}") -> str:
    import json

    from workflow.steps import promote_step
    return json.dumps(promote_step(versions, registered_model, work_dir, metric, margin, tracking_uri or None,
                                   prepared.path, json.loads(promotion_json)))


def baseline_gbdt(prepared: Input[Dataset], parent_run_id: str, seed: int, work_dir: str, tracking_uri: str) -> str:
    import json

    from workflow.steps import gbdt_step
    return json.dumps({"gbdt": gbdt_step(prepared.path, parent_run_id, work_dir, seed, tracking_uri or None)})


def summarize_run(parent_run_id: str, reports: List[str], decision_json: str, registered_model: str,
                  work_dir: str, tracking_uri: str, summary: Output[Markdown], baselines_json: str = "{}") -> str:
    import json

    from workflow.steps import summary_step
    results = {e["model"]: e["metrics"] for e in map(json.loads, reports)}
    return summary_step(parent_run_id, results, json.loads(decision_json), registered_model, work_dir, summary.path,
                        tracking_uri or None, baselines=json.loads(baselines_json))


class Components(NamedTuple):
    start_run: PythonComponent
    prepare_data: PythonComponent
    start_model_run: PythonComponent
    search_model: PythonComponent
    train_model: PythonComponent
    report_model: PythonComponent
    export_onnx: PythonComponent
    register_model: PythonComponent
    promote_champion: PythonComponent
    summarize_run: PythonComponent
    baseline_gbdt: PythonComponent


def make_components(image: str) -> Components:
    """Every step as a KFP component running in ``image`` (which already holds the project and kfp)."""
    wrap = dsl.component(base_image=image, install_kfp_package=False)
    return Components(*(wrap(fn) for fn in (start_run, prepare_data, start_model_run, search_model, train_model, report_model, export_onnx, register_model,
                                            promote_champion, summarize_run, baseline_gbdt)))
