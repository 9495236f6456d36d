# The commands of the README. All create .venv/ if missing and reuse it afterwards.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_FLAGS := --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test parity bench clean-venv

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

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest tests parity_tests

# the parity suite with the thorough hypothesis profile (>= 1000 examples per property); prints each
# property's example count
parity: $(VENV)/.installed-dev
	HYPOTHESIS_PROFILE=thorough $(BIN)/python -m pytest parity_tests --hypothesis-show-statistics

bench: $(VENV)/.installed-all
	$(BIN)/python bench/bench_fee_path.py
	$(BIN)/python bench/bench_backends.py
	$(BIN)/python bench/bench_jax.py
	$(BIN)/python bench/bench_reference.py

clean-venv:
	rm -rf $(VENV)
