"""Compile the graph to KFP IR YAML and submit it to a Kubeflow Pipelines endpoint."""

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from .config import PipelineConfig
from .graph import build_pipeline

__all__ = ["compile_pipeline", "submit", "run_url", "DEFAULT_SERVICE_ACCOUNT"]

DEFAULT_SERVICE_ACCOUNT = "mtl-pipeline-runner"


def compile_pipeline(config: PipelineConfig, output: os.PathLike | str) -> Path:
    """Write the KFP IR YAML for ``config`` to ``output`` (complete or not at all)."""
    from kfp import compiler

    from mtl_models.atomic import atomic_path

    output = Path(output)
    with atomic_path(output, suffix=".yaml") as tmp:  # the compiler picks the format from the extension
        compiler.Compiler().compile(build_pipeline(config), str(tmp))
    return output


def run_url(host: str, run_id: str) -> str:
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def submit(config: PipelineConfig, host: str, experiment: Optional[str] = None, run_name: Optional[str] = None,
           arguments: Optional[Mapping[str, Any]] = None, client: Any = None, namespace: Optional[str] = None,
           service_account: Optional[str] = DEFAULT_SERVICE_ACCOUNT) -> str:
    """Create a run of the compiled pipeline on ``host`` (``kfp.Client``); returns the run's URL.

    ``service_account``: the pods' identity (deploy/k8s creates ``mtl-pipeline-runner`` with the least RBAC
    the steps need); None leaves KFP's default."""
    import kfp

    run_name = run_name or time.strftime(f"{config.name}-%Y%m%d-%H%M%S")
    client = client or kfp.Client(host=host, namespace=namespace)
    args = {"run_name": run_name, "work_dir": "/tmp/mtlp", **dict(arguments or {})}
    with tempfile.TemporaryDirectory(prefix="mtlp-submit-") as tmp:
        package = compile_pipeline(config, Path(tmp) / "pipeline.yaml")
        result = client.create_run_from_pipeline_package(str(package), arguments=args, run_name=run_name,
                                                         experiment_name=experiment or config.tracking.experiment,
                                                         service_account=service_account)
    return run_url(host, result.run_id)
