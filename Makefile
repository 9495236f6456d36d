# The commands of the README. All create .venv/ if missing and reuse it afterwards.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_FLAGS := --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test parity bench gpu-wheels clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --upgrade "pip>=24"

$(VENV)/.installed-all: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install $(PIP_FLAGS) -e ".[all]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-all
	$(BIN)/pip install $(PIP_FLAGS) -e ".[all,dev,sweep,triton]"
	touch $@

demo: $(VENV)/.installed-all
	$(BIN)/python -m tfmm.demo

# tests in TEST_WORKERS processes (pytest-xdist), each test file in one process (module fixtures run once)
TEST_WORKERS ?= 2
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile tests parity_tests

# the parity suite with the thorough hypothesis profile (>= 1000 examples per property) in PARITY_WORKERS
# processes, one property at a time each; prints each property's example count and wall time. The compiled-
# function cache holds a property's whole palette of static settings (parity_tests/strategies.py); parity_tests/conftest.py
# frees them after each property
PARITY_WORKERS ?= 2
parity: $(VENV)/.installed-dev
	HYPOTHESIS_PROFILE=thorough TFMM_COMPILED_CACHE_SIZE=256 $(BIN)/python -m pytest -n $(PARITY_WORKERS) \
		--dist load parity_tests --hypothesis-show-statistics --durations=0

# `tfmm bench --quick` (a few minutes; `make bench BENCH_ARGS=` runs the full grid, hours on 2 cores), then the
# focused scripts
BENCH_ARGS ?= --quick
bench: $(VENV)/.installed-all
	$(BIN)/tfmm bench $(BENCH_ARGS)
	$(BIN)/python bench/bench_fee_path.py
	$(BIN)/python bench/bench_backends.py
	$(BIN)/python bench/bench_jax.py
	$(BIN)/python bench/bench_reference.py

# the pure-Python wheels that bench/run_gpu.sh installs on a GPU machine without a package index, at the
# versions of constraints.txt (bench/gpu-wheels/ is git-ignored: copy it to that machine with the checkout)
gpu-wheels: | $(BIN)/python
	$(BIN)/pip download --disable-pip-version-check -q --no-deps --only-binary=:all: -c constraints.txt \
		-d bench/gpu-wheels array-api-compat tomli-w

clean-venv:
	rm -rf $(VENV)
