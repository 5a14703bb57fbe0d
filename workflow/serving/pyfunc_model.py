"""MLflow models-from-code file for a candidate: raw rows in, one prediction column per task out.

MLflow copies this file into the logged model and executes it on load; it is not imported by the project.
It needs numpy, pandas, onnxruntime and mlflow only: the feature encoders come from ``mtlp_featurespec``, a
verbatim copy of ``workflow/data/feature_spec.py`` (+ ``encoders.py``, ``errors.py``) shipped in the model's
``code/`` folder, so serving encodes raw rows exactly as the prepare step did, and no torch is needed.
"""

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

BATCH_ROWS = 65536


class RawRowsMultiTaskModel(PythonModel):
    """Artifacts: ``feature_spec`` (feature_spec.json) and ``onnx_model`` (model.onnx)."""

    def load_context(self, context):
        import onnxruntime as ort
        from mtlp_featurespec import FeatureSpec

        self.spec = FeatureSpec.load(context.artifacts["feature_spec"])
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(context.artifacts["onnx_model"], sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        missing = set(self.input_names) - set(self.spec.feature_names)
        if missing:
            raise ValueError(f"ONNX model inputs {sorted(missing)} are not features of the feature spec")
        self.columns = list(self.spec.label_names)

    def predict(self, context, model_input: pd.DataFrame, params=None):  # a hint MLflow infers no schema from: it says nothing at load
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        if len(model_input) == 0:
            return pd.DataFrame({c: np.zeros(0, dtype=np.float32) for c in self.columns})
        _refuse_non_scalar_cells(model_input)
        try:
            encoded = self.spec.encode(model_input.reset_index(drop=True))
        except ValueError as e:  # mtlp_featurespec's DataError (a ValueError): the client's rows, not a crash
            raise _bad_input(str(e)) from None
        feeds = {name: np.ascontiguousarray(encoded[name]) for name in self.input_names}
        n = len(model_input)
        parts = []
        for start in range(0, n, BATCH_ROWS):
            chunk = {k: v[start:start + BATCH_ROWS] for k, v in feeds.items()}
            (out,) = self.session.run(None, chunk)
            parts.append(out)
        pred = np.concatenate(parts, axis=0)
        return pd.DataFrame(pred[:, :len(self.columns)], columns=self.columns, index=model_input.index)


def _bad_input(message):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)  # HTTP 400 from the scoring server


def _refuse_non_scalar_cells(frame):
    """A JSON object or list in a cell would otherwise be spelled as a string and scored as an unseen category."""
    for column in frame.columns:
        values = frame[column]
        if values.dtype != object:
            continue
        bad = values.map(lambda v: isinstance(v, (dict, list, tuple, set, np.ndarray)))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            kind = type(values.iloc[row]).__name__
            raise _bad_input(f"column {column!r} holds a {kind} in row {row}: raw rows take one number or string "
                             "per cell")


mlflow.models.set_model(RawRowsMultiTaskModel())
