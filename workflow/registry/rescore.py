"""Registered versions scored on the same rows through their own logged models: the paired comparisons of
promotion (validation rows) and ``mtlp compare`` (validation or test rows).

The rows are the prepared split decoded back to raw rows (``workflow.data.raw_rows``); each version's pyfunc
encodes them with its own feature spec and scores them with its own ONNX file, exactly as serving would. A version
whose spec does not fit the rows (a column it needs is missing, a task it lacks) cannot be compared:
:class:`NotComparable`, with the loader's first line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from ..errors import first_line

__all__ = ["Rows", "NotComparable", "read_rows", "pyfunc_predictor"]


class NotComparable(RuntimeError):
    """A version that cannot be scored on the rows (its feature spec does not fit them)."""


@dataclass
class Rows:
    """Labels ``[N, n_task]`` (tasks in ``tasks`` order), the rows' users (None without a user column) and a
    ``predict(model_uri) -> [N, n_task]`` that scores a version on them (memoized: each version is scored once)."""

    tasks: list[str]
    labels: np.ndarray
    users: Optional[np.ndarray]
    predict_uri: Callable[[str], np.ndarray]
    split: str = "val"
    _cache: dict[str, np.ndarray] = field(default_factory=dict)

    def predict(self, model_uri: str) -> np.ndarray:
        if model_uri not in self._cache:
            self._cache[model_uri] = self.predict_uri(model_uri)
        return self._cache[model_uri]


def pyfunc_predictor(raw: Any, tasks: list[str]) -> Callable[[str], np.ndarray]:
    """``model_uri -> [N, n_task]``: the version's logged pyfunc on the raw rows, its columns in ``tasks`` order."""
    def predict(model_uri: str) -> np.ndarray:
        import mlflow

        try:
            model = mlflow.pyfunc.load_model(model_uri)
            out = model.predict(raw)
            missing = [t for t in tasks if t not in out.columns]
            if missing:
                raise NotComparable(f"it has no prediction for task(s) {missing}")
            return out[tasks].to_numpy(dtype=np.float64)
        except NotComparable:
            raise
        except Exception as e:  # the spec's encoders or the schema refuse the rows
            raise NotComparable(f"its feature spec does not fit the rows: {first_line(e)}") from e
    return predict


def read_rows(prepared_dir: str | os.PathLike, split: str = "val",
              predict: Optional[Callable[[Any, list[str]], Callable[[str], np.ndarray]]] = None) -> Rows:
    """The prepared ``split`` of ``prepared_dir`` as :class:`Rows` scored through each version's pyfunc."""
    from ..data.raw_rows import read_raw_split

    spec, raw, labels = read_raw_split(prepared_dir, split)
    regression = [t for t, k in zip(spec.label_names, spec.task_types) if k != "classification"]
    if regression:
        raise ValueError(f"the paired comparison covers classification tasks; {regression} are regression: "
                         "use promotion.rule margin")
    users = raw[spec.user_column].to_numpy() if spec.user_column else None
    return Rows(list(spec.label_names), labels, users, (predict or pyfunc_predictor)(raw, list(spec.label_names)),
                split)
