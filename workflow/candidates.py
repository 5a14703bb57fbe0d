"""One candidate, tracked end to end: child run -> train (per-epoch metrics) -> ONNX -> results, plots, pyfunc
model -> registry version; and the end of a pipeline run: comparison plot on the parent, guarded promotion.

This is the glue the pipeline steps call; each function works from its own process (it needs only the
tracking URI, the experiment and the parent run's id).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import pandas as pd

from . import registry, tracking
from .data.feature_spec import FeatureSpec

__all__ = ["Candidate", "test_data_fingerprint", "train_candidate", "finish_pipeline_run"]


@dataclass
class Candidate:
    model_name: str
    run_id: str
    result: Any                 # workflow.training.train.TrainResult
    onnx_path: Path
    model_uri: str              # models:/m-... (the logged pyfunc)
    version: Optional[str]      # registered version, None when not registered
    logging_failures: int = 0   # metric batches the callback could not log


def test_data_fingerprint(spec: FeatureSpec) -> str:
    """Identifies the test rows and labels: dataset, raw files' sha256, split rule, options, seed, test size.

    Two candidates with the same fingerprint were scored on the same test data, so their recorded
    test metrics can be compared directly.
    """
    key = {"dataset": spec.dataset, "raw_sha256": spec.raw_sha256, "split": spec.split, "options": spec.options,
           "seed": spec.seed, "test_rows": spec.rows.get("test"), "labels": [lb.to_dict() for lb in spec.labels]}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_candidate(trk: tracking.Tracking, parent_run_id: str, prepared_dir: str | os.PathLike, model_name: str,
                    out_dir: str | os.PathLike, *, params: Optional[Mapping[str, Any]] = None, n_epoch: int = 10,
                    patience: int = 3, device: str = "auto", seed: int = 42,
                    registered_model: Optional[str] = None, raw_example: Optional[pd.DataFrame] = None,
                    config: Optional[Mapping[str, Any]] = None, role: str = "train", run_name: Optional[str] = None,
                    callbacks: Iterable[Any] = (), progress: bool = False, plots: bool = True) -> Candidate:
    """Train ``model_name`` in a child run of ``parent_run_id``, log everything, register it when asked."""
    from .training.export import export
    from .training.train import train

    client = trk.client
    parent_tags = tracking.retry_call(client.get_run, parent_run_id).data.tags
    pipeline_run_id = parent_tags.get(tracking.TAGS["pipeline_run_id"])
    with tracking.child_run(client, parent_run_id, run_name or model_name, role=role,
                            tags={tracking.TAGS["model_name"]: model_name}) as run_id:
        callback = tracking.MlflowCallback(run_id, client)
        result = train(prepared_dir, model_name, out_dir, params=params, n_epoch=n_epoch, patience=patience,
                       device=device, seed=seed, callbacks=[callback, *callbacks], progress=progress,
                       plots=plots)
        exported = export(out_dir, prepared_dir)
        tracking.log_train_result(client, run_id, result, onnx_path=exported.onnx_path, config=config, plots=plots)
        tracking.retry_call(client.log_metric, run_id, "onnx/parity_max_abs_diff", exported.parity_max_abs_diff)
        spec_path = Path(out_dir) / "feature_spec.json"
        from .serving import log_candidate_model

        info = log_candidate_model(client, run_id, exported.onnx_path, spec_path, input_example=raw_example)
        version = None
        if registered_model:
            spec = FeatureSpec.load(spec_path)
            mv = registry.register_candidate(client, registered_model, info.model_uri, run_id=run_id,
                                             architecture=model_name, test_metrics=result.test_metrics,
                                             test_score=result.test_score, pipeline_run_id=pipeline_run_id,
                                             test_data_id=test_data_fingerprint(spec))
            version = str(mv.version)
            client.set_tag(run_id, "mtlp.registered_version", f"{registered_model}/{version}")
    return Candidate(model_name=model_name, run_id=run_id, result=result, onnx_path=exported.onnx_path,
                     model_uri=info.model_uri, version=version, logging_failures=callback.failed_batches)


def finish_pipeline_run(trk: tracking.Tracking, parent_run_id: str, candidates: Sequence[Candidate],
                        out_dir: str | os.PathLike, *, registered_model: Optional[str] = None,
                        metric: str = "test_score", margin: float = 0.0,
                        evaluate: Optional[Callable[[str], float]] = None,
                        reason: str = "pipeline promotion") -> Optional[registry.PromotionDecision]:
    """Comparison plot + table on the parent run; then the best registered candidate goes through promotion."""
    client = trk.client
    if candidates:
        labels: list[str] = []
        for c in candidates:  # unique bar labels when one architecture appears more than once (search trials)
            label = c.model_name if c.model_name not in labels else f"{c.model_name}#{len(labels)}"
            labels.append(label)
        tracking.log_comparison(client, parent_run_id, [c.result for c in candidates], out_dir, labels=labels)
    versions = [c.version for c in candidates if c.version]
    if not registered_model or not versions:
        return None
    decision = registry.promote_best(client, registered_model, versions, metric=metric, margin=margin,
                                     evaluate=evaluate, reason=reason)
    client.set_tag(parent_run_id, "mtlp.promotion", json.dumps(decision.to_dict(), default=str)[:8000])
    return decision
