# Whole set-up on a fresh CPU machine: `make main` (train + evaluate) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
LOCK   := requirements/cpu-lock.txt
VERL_VERSION := 0.9.1

.PHONY: install main test test-all lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch==2.13.0 first: on CPU machines that pin resolves to the local CPU build; any looser
# request would pull a multi-GB CUDA build. verl is a test oracle only and its own pins
# conflict with ours, so it goes in without dependencies (its import chain is in [dev]).
$(STAMP): $(PY) pyproject.toml $(LOCK)
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -c $(LOCK) -e ".[dev]"
	$(PIP) install --quiet --no-deps verl==$(VERL_VERSION)
	touch $(STAMP)

install: $(STAMP)

# The [bench] extra (TRL, pinned by the lock): benchmarks/vs_trl.py, which the complete suite runs.
$(BENCH_STAMP): $(STAMP)
	$(PIP) install --quiet -c $(LOCK) -e ".[bench]"
	touch $(BENCH_STAMP)

main: $(STAMP)
	$(VENV)/bin/skpo main

# The quick tier (a few minutes) and the complete suite (what CI runs, with the [bench] extra so
# that every benchmark script runs), each on every core: tests that start processes of their own
# share an xdist group and run one at a time.
PYTEST_WORKERS ?= auto
PYTEST := $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup

test: $(STAMP)
	$(PYTEST)

test-all: $(BENCH_STAMP)
	$(PYTEST) -m "slow or not slow"

# The static checks, configured in pyproject.toml: mypy over src/ and ruff over the code (the
# quick tier runs both too: tests/test_static_checks.py).
lint: $(STAMP)
	$(PY) -m mypy
	$(PY) -m ruff check

# Speed tables of docs/performance.md (not tests; TRL comes with the [bench] extra).
bench: $(BENCH_STAMP)
	$(PY) benchmarks/roofline.py
	$(PY) benchmarks/skpo_vs_grpo.py
	$(PY) benchmarks/vs_trl.py --mode natural
	$(PY) benchmarks/vs_trl.py --mode fixed
	$(PY) benchmarks/shared_prefix.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
