# Two commands set up a fresh machine: `make run` (the whole pipeline locally) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel by default. For CUDA: make setup TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu128"
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=

.PHONY: setup test test-fast run bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "torch==$(TORCH_VERSION)" $(TORCH_PIP_ARGS)
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $@

# Two pytest worker processes, each taking whole test files (their module fixtures are built once): many tests wait
# on a subprocess or a server, and a second process uses the core they leave idle. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=15

test-fast: setup
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile -m "not slow"

run: setup
	$(VENV)/bin/mtlp run

clean:
	rm -rf $(VENV) mtlp-runs .pytest_cache

# ---- container image (deploy/) ------------------------------------------------------------------
# The image is tagged <registry>/mtl-pipeline:<version>-<git sha> (python3 pipeline/image.py), the
# pipeline's default image. Registry: MTLP_IMAGE_REGISTRY (default localhost); CUDA build:
# make image TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 TORCH_WHEELS_DIR=
.PHONY: image image-test image-push rehearsal

image:
	deploy/podman-smoke.sh --build-only

# Build, then run data prep and a one-epoch training run in the image as its non-root user.
image-test:
	deploy/podman-smoke.sh

# The cluster path on this machine: every task of the graph in the image (built first if missing) under podman,
# against `mlflow server` and the study on a loopback PostgreSQL (pipeline/rehearsal.py, deploy/README.md).
rehearsal: setup
	podman image exists "$$(python3 pipeline/image.py)" || deploy/podman-smoke.sh --build-only
	CONTAINERS_CONF="$${CONTAINERS_CONF:-$$(f=$$(mktemp /tmp/mtlp-containers.XXXXXX.conf); printf '[containers]\ndefault_ulimits = []\n' > $$f; echo $$f)}" \
		$(VENV)/bin/python -m pipeline.rehearsal

image-push: image
	podman push "$$(python3 pipeline/image.py)"

# ---- benchmarks (bench/, docs/benchmarks.md) ----------------------------------------------------
# The whole suite (about an hour on 2 busy CPU cores) or its quick mode (small sizes, 1 seed); both end
# by rendering docs/benchmarks.md, its plots and docs/benchmarks/results.json. Needs torch-rechub:
# $(VENV)/bin/pip install --no-deps torch-rechub==0.9.0
.PHONY: bench-quick bench-report

bench: setup
	$(PY) -m bench.run

bench-quick: setup
	$(PY) -m bench.run --quick --out bench/results/quick --docs bench/results/quick/docs

bench-report: setup
	$(PY) -m bench.run --report-only --out docs/benchmarks

# ---- GPU check (bench/gpu_check/, docs/gpu.md) ------------------------------------------------------
# Trains the five models on the best device against CPU, times them beside Torch-RecHub, runs ONNX Runtime's
# provider and 2-process DDP where present; writes bench/results/gpu_check/gpu_check.{json,md}, exits 1 on a
# mismatch. GPU_CHECK_ARGS="--device cpu --steps 64" etc. (python -m bench.gpu_check --help).
.PHONY: gpu-check
GPU_CHECK_ARGS ?=

gpu-check: setup
	$(PY) -m bench.gpu_check $(GPU_CHECK_ARGS)
