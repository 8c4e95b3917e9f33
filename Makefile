# The two set-up commands of a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the pinned packages itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast slurm-up slurm-down gpu-check docs

$(STAMP): requirements.lock pyproject.toml
	@# A C compiler builds camvis's CPU batch kernel on first use (camvis/job/native.py);
	@# without one camvis still works, with slower CPU batches.
	@command -v $${CC:-cc} >/dev/null || (apt-get update -qq && apt-get install -y -qq gcc >/dev/null) \
		|| echo "no C compiler: CPU batches will use torch ops (about 2x slower)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	@# requirements.lock pins the optional extras too (camvis[onnx]: the tests check the ONNX graph;
	@# camvis[camvis2]: OpenCV, the camvis2 preprocessing tests)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m camvis.cli.demo
	@# the README quotes this run's numbers: a difference is one line per row (exit 1)
	$(BIN)/python -m camvis.cli.demo --check-readme

# The full suite, SLURM integration tests included: the local cluster is
# installed and started first (slurm/cluster.sh, needs root and apt), with the
# 2 nodes the multi-node tests need (tests/integration/test_multinode.py).
test: $(STAMP)
	bash slurm/cluster.sh start --nodes 2
	CAMVIS_SLURM=1 $(BIN)/python -m pytest

# The fast suite: no cluster, SLURM tests skip with the reason.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slurm"

# Everything that needs CUDA in one run (< 8 minutes on one GPU): benchmarks/results/gpu_check.json.
# On a machine without CUDA every part reports "skipped: no CUDA".
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json

# The docs site into site/: the configuration reference regenerated from the config classes, then
# `mkdocs build --strict` (a broken link or anchor fails it). tests/test_docs.py checks both and the figures.
docs: $(STAMP)
	$(BIN)/python -m camvis.cli.config_reference --write
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

slurm-up:
	bash slurm/cluster.sh start --nodes 2

slurm-down:
	bash slurm/cluster.sh stop
