"""Logging a candidate as an MLflow pyfunc that takes raw rows and is served by onnxruntime (no torch).

The model is "models from code" (``workflow/serving/pyfunc_model.py``, nothing pickled) with two artifacts, the
feature spec JSON and the ONNX file, and one code folder: ``mtlp_featurespec``, a package made of verbatim
copies of ``workflow/data/feature_spec.py``, ``encoders.py`` and ``errors.py``. Loading therefore needs neither
this repository on ``sys.path`` nor a second implementation of the encoders.

Signature: one input column per raw source column, typed as the raw data spells it: the feature spec's
``raw_types``, recorded by the prepare step as ``pd.read_csv`` would type each column (Adult's numbers are ``long``,
its categories ``string``; numeric category ids such as AliExpress's are ``long``, so rows read with pandas score
as they are and the encoders spell them as categories). Specs without ``raw_types`` fall back on the input
example's dtypes, then on the train statistics. One ``float`` output column per task.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Optional

import pandas as pd

__all__ = ["SPEC_PACKAGE", "PYFUNC_FILE", "build_spec_package", "raw_signature", "example_rows",
           "pip_requirements", "log_candidate_model"]

SPEC_PACKAGE = "mtlp_featurespec"
SPEC_MODULES = ("feature_spec.py", "encoders.py", "tree_bins.py", "errors.py")
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")


def build_spec_package(dest_dir: str | os.PathLike) -> Path:
    """``dest_dir/mtlp_featurespec/``: the feature-spec modules copied byte for byte, plus an ``__init__``."""
    src = Path(__file__).resolve().parents[1] / "data"
    pkg = Path(dest_dir) / SPEC_PACKAGE
    pkg.mkdir(parents=True, exist_ok=True)
    for name in SPEC_MODULES:
        shutil.copyfile(src / name, pkg / name)
    (pkg / "__init__.py").write_text(
        '"""Verbatim copy of workflow.data.feature_spec (+ encoders, errors) shipped with an MLflow model."""\n'
        "from .feature_spec import FeatureSpec\n\n__all__ = [\"FeatureSpec\"]\n")
    return pkg


def _raw_type(spec: Any, source: str, example: Optional[pd.DataFrame]) -> str:
    """The spec's record of the raw column's type; specs written before it was recorded fall back on the example
    rows' dtypes, then on the encoder's statistics."""
    from ..data.datasets.base import mlflow_type_of
    from ..data.encoders import DenseEncoder, SparseEncoder

    recorded = getattr(spec, "raw_types", {}).get(source)
    if recorded:
        return recorded
    encoder = next(f for f in spec.features if f.source == source)
    if example is not None and source in example.columns:
        typed = mlflow_type_of(example[source].dtype)
        if typed:
            return typed
        return "double" if isinstance(encoder, DenseEncoder) else "string"
    if isinstance(encoder, DenseEncoder):
        return "long" if _integral(encoder) else "double"
    assert isinstance(encoder, SparseEncoder)
    return "long" if encoder.id_range is not None else "string"


def _integral(encoder: Any) -> bool:
    """Specs without ``raw_types``: a numeric column whose train min, max and median are whole numbers is taken as
    integer (MLflow refuses to widen int64 to double, so a JSON client sending 39 needs a ``long`` column)."""
    values = (encoder.min, encoder.max, encoder.median)
    return all(math.isfinite(v) and float(v).is_integer() for v in values) and encoder.max > encoder.min


def raw_signature(spec: Any, example: Optional[pd.DataFrame] = None):
    """Inputs: the spec's source columns with their raw types; outputs: one float column per task."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec(_raw_type(spec, s, example), s) for s in dict.fromkeys(spec.source_columns)])
    outputs = Schema([ColSpec("float", name) for name in spec.label_names])
    return ModelSignature(inputs=inputs, outputs=outputs)


def example_rows(spec: Any, n: int = 2) -> pd.DataFrame:
    """Plausible raw rows from the spec alone (most frequent categories, median numbers) when none are given,
    each column in its raw type (a category spelled ``"101"`` is the number 101 when the raw data had numbers)."""
    from ..data.encoders import DenseEncoder

    data: dict[str, list] = {}
    for f in spec.features:
        if isinstance(f, DenseEncoder):
            values: list = [f.median] * n
        elif f.vocabulary is not None:
            vocab = f.vocabulary or [""]
            values = [vocab[i % len(vocab)] for i in range(n)]
        elif f.hash_buckets is not None:  # any spelling has an id: the row's position
            values = [str(i) for i in range(n)]
        else:
            values = [i % max(int(f.id_range), 1) for i in range(n)]
        data[f.source] = [_as_raw(v, _raw_type(spec, f.source, None)) for v in values]
    return pd.DataFrame(data)


def _as_raw(value: Any, kind: str) -> Any:
    """``value`` spelled as a raw ``kind`` (long, double, boolean, string) column holds it."""
    if kind == "long":
        return int(float(value))
    if kind == "double":
        return float(value)
    if kind == "boolean":
        return str(value).strip().lower() in ("1", "true")
    return str(value)


def pip_requirements() -> list[str]:
    """Pinned to the versions in this environment: what the model was validated with."""
    reqs = []
    for dist in ("mlflow", "numpy", "pandas", "onnxruntime"):
        try:
            reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def log_candidate_model(client: Any, run_id: str, onnx_path: str | os.PathLike, spec_path: str | os.PathLike,
                        input_example: Optional[pd.DataFrame] = None, name: str = "model",
                        tags: Optional[dict[str, Any]] = None) -> Any:
    """Log the raw-rows pyfunc on ``run_id`` (a child run) and return MLflow's ``ModelInfo``.

    ``input_example``: a few raw rows as the raw data spells them (strings and numbers); it also fixes the
    raw types of categorical columns in the signature. ``model_info.model_uri`` is what
    :func:`workflow.registry.register_candidate` registers.
    """
    import mlflow
    from mlflow.models import Model

    from ..data.feature_spec import FeatureSpec

    spec = FeatureSpec.load(spec_path)
    if input_example is not None:
        input_example = input_example[list(dict.fromkeys(spec.source_columns))].head(5).reset_index(drop=True)
    else:
        input_example = example_rows(spec)
    signature = raw_signature(spec, input_example)
    uri = client.tracking_uri
    if mlflow.get_tracking_uri() != uri:
        from ..tracking import use_globally
        use_globally(uri)
    run = client.get_run(run_id)
    mlflow.set_experiment(experiment_id=run.info.experiment_id)
    with tempfile.TemporaryDirectory(prefix="mtlp-pyfunc-") as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
        pkg = build_spec_package(tmp)
        return Model.log(artifact_path=None, name=name, flavor=mlflow.pyfunc, run_id=run_id,
                         python_model=str(PYFUNC_FILE), code_paths=[str(pkg)],
                         artifacts={"feature_spec": str(spec_path), "onnx_model": str(onnx_path)},
                         signature=signature, input_example=input_example,
                         pip_requirements=pip_requirements(), tags=tags)
