"""The slim serving image (deploy/Dockerfile, target ``serving``) beside the full project image, both already built:
no torch in it, at most 25 % of the full image's size, and the champion's pyfunc gives the same outputs in both on
the same raw rows (run as the images' non-root user, no network, read-only root filesystem).

Runs with ``MTLP_IMAGE_TEST=1`` and podman, on the images named by ``MTLP_SERVING_IMAGE`` (default
``localhost/mtl-serving:0.1.0``) and ``MTLP_IMAGE`` (default: the newest ``localhost/mtl-pipeline`` image);
build them first (``podman build -f deploy/Dockerfile [--target serving] ...``, deploy/README.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlflow")

from _mlflow_helpers import MODEL_NAME, embedded_pipeline, quiet_mlflow, raw_test_rows  # noqa: E402

quiet_mlflow()
PREDICT = ("import json, sys, mlflow, pandas as pd\n"
           "m = mlflow.pyfunc.load_model('/model')\n"
           "rows = pd.read_csv('/rows/rows.csv', keep_default_na=False)\n"
           "print(json.dumps(m.predict(rows).to_numpy().tolist()))\n")


def _podman(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    runtime = ["--runtime", "/usr/sbin/runc"] if Path("/usr/sbin/runc").exists() and args[0] == "run" else []
    return subprocess.run(["podman", args[0], *runtime, *args[1:]], capture_output=True, text=True, timeout=timeout)


def _images() -> tuple[str, str]:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (see ../shared/notes/containers.md)")
    if not os.environ.get("MTLP_IMAGE_TEST"):
        pytest.skip("set MTLP_IMAGE_TEST=1 to compare the serving image with the full image (both built first)")
    serving = os.environ.get("MTLP_SERVING_IMAGE", "localhost/mtl-serving:0.1.0")
    full = os.environ.get("MTLP_IMAGE")
    if not full:
        listed = _podman("images", "--format", "{{.Repository}}:{{.Tag}}", "localhost/mtl-pipeline").stdout.split()
        if not listed:
            pytest.skip("no localhost/mtl-pipeline image: build it (make image) or set MTLP_IMAGE")
        full = listed[0]
    for image in (serving, full):
        if _podman("image", "exists", image).returncode != 0:
            pytest.skip(f"image {image} is not built")
    return serving, full


def _size(image: str) -> int:
    return int(_podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


@pytest.mark.slow
def test_serving_image_is_slim_torch_free_and_scores_like_the_full_image(adult_dir, tmp_path_factory):
    serving, full = _images()
    small, big = _size(serving), _size(full)
    print(f"{serving}: {small / 1e6:.0f} MB; {full}: {big / 1e6:.0f} MB; ratio {small / big:.3f}")
    assert small <= 0.25 * big

    no_torch = _podman("run", "--rm", "--network", "none", serving, "python", "-c", "import torch")
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr

    import mlflow

    run = embedded_pipeline(adult_dir, tmp_path_factory.getbasetemp())
    shared = Path(tempfile.mkdtemp(prefix="mtlp-image-parity-"))  # readable by the images' uid 10001
    try:
        model = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}@champion", dst_path=str(shared)))
        (shared / "rows").mkdir()
        raw_test_rows(adult_dir, nrows=200).to_csv(shared / "rows" / "rows.csv", index=False)
        for path in [shared, *shared.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        outputs = {}
        for image in (serving, full):
            done = _podman("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", "-e", "HOME=/tmp",
                           "-v", f"{model}:/model:ro", "-v", f"{shared / 'rows'}:/rows:ro", image,
                           "python", "-c", PREDICT)
            assert done.returncode == 0, f"{image}: {done.stderr[-3000:]}"
            outputs[image] = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
        assert outputs[serving].shape == (200, 2)
        diff = float(np.abs(outputs[serving] - outputs[full]).max())
        print(f"max abs difference between the images' outputs on 200 raw rows: {diff:.1e}")
        assert diff <= 1e-6
    finally:
        shutil.rmtree(shared, ignore_errors=True)
