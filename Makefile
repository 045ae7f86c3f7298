# cdseg: set-up from the lock, the main job, the gate, tests. `make demo`, `make test` and `make check`
# work on a fresh machine (Linux x86_64, Python 3.11; see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
LOCKS := requirements
STAMP := $(VENV)/.cdseg-installed
IABN_STAMP := $(VENV)/.iabn-installed
# where `make lock` keeps pip-tools (apart from the project's venv, so the lock never lists it)
LOCK_VENV ?= .venv-lock

.PHONY: setup iabn demo test test-all lint typecheck contracts check compile lock clean

setup: $(STAMP) $(IABN_STAMP)

# Everything from the hashed lock, nothing else: --no-deps because the lock is complete, and `pip check`
# proves it. cdseg itself is installed editable, built with the locked setuptools.
$(STAMP): $(LOCKS)/dev.lock $(LOCKS)/build.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check --require-hashes --no-deps -r $(LOCKS)/dev.lock
	$(PIP) install --quiet --disable-pip-version-check --require-hashes --no-deps -r $(LOCKS)/build.lock
	$(PIP) install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PIP) check
	touch $(STAMP)

# inplace-abn is an sdist only: built against the locked torch (docker/install-iabn.sh, its hash in
# requirements/iabn.lock). CUDA kernels when nvcc is present, for this machine's default arch list below;
# the CPU path works everywhere. A failed build is reported, and cdseg then falls back to its
# pure-PyTorch ABN with a warning.
$(IABN_STAMP): $(STAMP) $(LOCKS)/iabn.lock
	@if PIP="$(PIP)" PATH="$(abspath $(VENV))/bin:$$PATH" TORCH_CUDA_ARCH_LIST="$${TORCH_CUDA_ARCH_LIST:-9.0}" \
	    MAX_JOBS=$${MAX_JOBS:-2} sh docker/install-iabn.sh; then :; else \
	  echo "WARNING: inplace-abn could not be built; cdseg will use its pure-PyTorch ABN" ; \
	fi
	touch $(IABN_STAMP)

iabn: $(IABN_STAMP)

demo: setup
	$(VENV)/bin/cdseg demo

test: setup
	$(VENV)/bin/pytest

test-all: setup
	$(VENV)/bin/pytest -m "not gpu and not kind"

lint: setup
	$(VENV)/bin/ruff check cdseg components pipelines tests

typecheck: setup
	$(VENV)/bin/mypy cdseg

contracts: setup
	$(VENV)/bin/lint-imports --config .importlinter

# The gate CI runs (.ci/run), in the same order: set-up from the lock, lint, types, import contracts, tests.
check: setup lint typecheck contracts test

compile: setup
	$(VENV)/bin/cdseg pipeline compile --all

# Regenerate the locks from pyproject's ranges (and requirements/pins.txt) with pip-compile, newest
# versions first; then `make setup` and `make check`. See requirements/README.md.
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || ( $(PYTHON) -m venv $(LOCK_VENV) && \
	  $(LOCK_VENV)/bin/pip install --quiet --disable-pip-version-check "pip-tools>=7.5,<8" )
	LOCK_COMPILER=$(LOCK_VENV)/bin/pip-compile LOCK_PIP="$(PIP)" PYTHON="$(PYTHON)" bash requirements/lock.sh

clean:
	rm -rf $(VENV) $(LOCK_VENV) outputs .pytest_cache
