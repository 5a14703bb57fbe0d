"""Every model exports to ONNX with one dynamic batch axis, and onnxruntime reproduces PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mtl_models import export_onnx, zoo
from mtl_models.onnx_export import OUTPUT_NAME, example_inputs

from test_models import build


@pytest.fixture(scope="module", params=zoo.names())
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    model = build(request.param).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx")
    return model, path


def test_onnx_inputs_and_output_are_named(exported) -> None:
    model, path = exported
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == [f.name for f in model.features]
    assert [o.name for o in graph.output] == [OUTPUT_NAME]
    batch_dims = {i.type.tensor_type.shape.dim[0].dim_param for i in graph.input}
    assert len(batch_dims) == 1 and batch_dims != {""}, "one symbolic batch axis shared by every input"


@pytest.mark.parametrize("batch_size", [1, 257])
def test_onnxruntime_matches_pytorch(exported, batch_size: int) -> None:
    model, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = example_inputs(model, batch_size=batch_size, seed=batch_size)
    (onnx_out,) = session.run(None, {k: v.numpy() for k, v in x.items()})
    with torch.no_grad():
        torch_out = model(x).numpy()
    assert onnx_out.shape == (batch_size, model.n_task)
    assert np.abs(onnx_out - torch_out).max() <= 1e-5


def test_export_leaves_no_partial_file_on_failure(tmp_path, monkeypatch) -> None:
    model = build("mmoe")

    def boom(*args, **kwargs):
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(torch.onnx, "export", boom)
    with pytest.raises(RuntimeError, match="exporter failed"):
        export_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
