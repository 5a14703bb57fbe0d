"""Build the project image with podman and run data prep + one short training run in it.

Runs deploy/podman-smoke.sh (also `make image-test`): the image is built from deploy/Dockerfile, then
`workflow.data.prepare` and a one-epoch training run execute in it as the non-root user, with the raw
Adult data mounted read-only, a read-only root filesystem and no network, writing to a mounted folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "podman-smoke.sh"
ADULT = Path(os.environ.get("ADULT_DIR", ROOT.parent / "shared" / "data" / "adult"))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_image_runs_prepare_and_training_as_non_root(tmp_path):
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed: the image is built and run with podman "
                    "(apt-get install -y podman runc; see ../shared/notes/containers.md)")
    if not os.environ.get("MTLP_IMAGE_TEST"):
        pytest.skip("set MTLP_IMAGE_TEST=1 to build and run the container image: the build takes "
                    "minutes, so CI runs it as its own job (`make image-test`), not on every test run")
    if not (ADULT / "adult.data").is_file():
        pytest.skip(f"the raw Adult data is not at {ADULT} (set ADULT_DIR)")
    out = tmp_path / "out"
    env = dict(os.environ, SMOKE_OUT=str(out), ADULT_DIR=str(ADULT))
    proc = subprocess.run([str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3500)
    assert proc.returncode == 0, f"podman-smoke.sh failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    assert "OK: prepare and train ran" in proc.stderr
    assert any((out / "prepared").rglob("*.parquet")), "data prep wrote no Parquet"
    assert any((out / "model").iterdir()), "training wrote nothing"
    for path in out.rglob("*"):
        assert path.stat().st_uid != 0, f"{path} is owned by root: the container ran as root"
