# dipbench: two commands do all the set-up on a fresh machine.
#   make reproduce   download the images, run the suites, write the reports
#   make test        lint and tests (what CI runs)
#
# torch: from PyTorch's CPU wheel index where no NVIDIA GPU is found (nvidia-smi) and that
# index resolves, else the default build (CUDA where PyPI serves it; this project's offline
# machines serve a local CPU wheel). TORCH_PIP_ARGS overrides either, e.g. a CUDA version:
#   make setup TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu128"
# (see the README).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
NVIDIA_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
# Where PyTorch's index cannot even be resolved (an offline machine with a local wheel
# mirror), naming it only costs pip's retries for every package (about 90 s): use the
# configured index alone.
TORCH_INDEX_RESOLVES := $(shell $(PYTHON) -c "import socket; socket.getaddrinfo('download.pytorch.org', 443)" >/dev/null 2>&1 && echo yes)
TORCH_CPU_INDEX := $(if $(TORCH_INDEX_RESOLVES),--index-url https://download.pytorch.org/whl/cpu)
TORCH_PIP_ARGS ?= $(if $(NVIDIA_GPU),,$(TORCH_CPU_INDEX))
STAMP := $(VENV)/.installed

# Offline machines: use the mirror beside the checkout when DIPBENCH_MIRROR is not set.
ifeq ($(origin DIPBENCH_MIRROR), undefined)
ifneq ($(wildcard ../shared/testimages/MANIFEST.csv),)
export DIPBENCH_MIRROR := $(abspath ../shared/testimages)
endif
endif

.PHONY: setup test test-fast lint reproduce quick publish full-cpu download update-expected bench gpu-check clean

# PROFILE=full forces the papers' protocol; by default `dipbench reproduce` picks full on a
# CUDA GPU and quick elsewhere.
PROFILE ?=

setup: $(STAMP)

# constraints.txt pins the libraries that move numbers at the versions the expected values
# were measured with.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH)"
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,slurm]'
	@touch $@

lint: $(STAMP)
	$(BIN)/ruff check benchmark tests scripts
	$(BIN)/ruff format --check benchmark tests scripts

# The tests include the PSNR regression check of the `ci` grid (tests/regression). They run
# in TEST_WORKERS processes (pytest-xdist), a test module per process at a time, so that a
# module's shared fixtures (a run of the ci grid) are computed once; no test's numbers depend
# on it (every cell fixes its torch threads).
TEST_WORKERS ?= 2
test: lint
	$(BIN)/python -m pytest --benchmark-skip -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

# The inner loop (under a minute): layout and import rules, the run folder's files, metrics,
# forward models and degradations. `make test` runs everything.
FAST_TESTS := tests/test_layout.py tests/test_runfolder.py tests/test_metrics.py \
	tests/test_forward.py tests/test_degradations.py
test-fast: $(STAMP)
	$(BIN)/ruff check benchmark tests scripts
	$(BIN)/python -m pytest --benchmark-skip -q $(FAST_TESTS)

# Re-measure the regression grid and its spread (the reference, 8 more method seeds, 2 kernel
# settings and 2 threads: 12 runs of the ci grid, about 20 minutes on 2 cores) and rewrite the
# expected values with tolerances derived from that spread (commit the result).
update-expected: download
	$(BIN)/dipbench expect --profile ci --expected tests/regression/expected_ci.csv \
		--work .ci-results -q

# The papers' protocol where a CPU can (benchmark/data/full_cpu.toml): the slices that fit in
# HOURS, each published into reports/full/ as it finishes; run it again to go on.
HOURS ?= 1
full-cpu: download
	$(BIN)/python scripts/full_cpu.py --hours $(HOURS)

# Speed benchmarks (not part of `make test`); JSON saved under .benchmarks/ for --benchmark-compare.
bench: setup
	$(BIN)/python -m pytest tests/benchmarks --benchmark-only --benchmark-autosave \
		--benchmark-columns=min,mean,stddev,rounds

# On a CUDA GPU (needs a CUDA build of torch, see the README): the GPU tests, then the speed
# report at 128, 256 and 512 (one cell against a plain eager loop, and 8 cells batched), with
# the measured estimate of every suite's full profile at the end. About 8 minutes.
gpu-check: setup
	$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu-check needs a CUDA GPU and a CUDA build of torch')"
	$(BIN)/python -m pytest -m cuda -q --benchmark-skip
	$(BIN)/dipbench speed --device cuda --size 128 --batch 8 --batch-size 128 --no-estimate
	$(BIN)/dipbench speed --device cuda --size 256 --batch 8 --batch-size 256 --no-estimate
	$(BIN)/dipbench speed --device cuda --size 512 --batch 8 --batch-size 512

download: $(STAMP)
	$(BIN)/dipbench download --all --skip-unavailable

reproduce: download
	$(BIN)/dipbench reproduce $(if $(PROFILE),--profile $(PROFILE))

quick: download
	$(BIN)/dipbench reproduce --profile quick

# Runs go to runs/<profile>/<suite>; the committed reports/ change only here, from complete
# runs (dipbench publish refuses a run with a missing, failed or stale cell).
publish: setup
	$(BIN)/dipbench publish $(patsubst %/suite.json,%,$(wildcard runs/$(or $(PROFILE),quick)/*/suite.json))

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
