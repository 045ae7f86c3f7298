# cdseg: set-up, the main job, tests. `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.cdseg-installed
IABN_STAMP := $(VENV)/.iabn-installed

.PHONY: setup iabn demo test test-all lint typecheck compile clean services

setup: $(STAMP) $(IABN_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel setuptools_scm ninja
	$(PIP) install --quiet -e ".[dev]"
	touch $(STAMP)

# inplace-abn 1.1.0 is an sdist only: build it against the installed torch (CPU path works everywhere;
# the CUDA kernels are compiled when nvcc is present). A failed build is reported, and cdseg then
# falls back to its pure-PyTorch ABN with a warning.
$(IABN_STAMP): $(STAMP)
	@if $(PY) -c "import inplace_abn" 2>/dev/null; then echo "inplace-abn already installed"; else \
	  PIP="$(PIP)" TORCH_CUDA_ARCH_LIST=$${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=$${MAX_JOBS:-2} sh docker/install-iabn.sh \
	    || echo "WARNING: inplace-abn could not be built; cdseg will use its pure-PyTorch ABN" ; \
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
	$(VENV)/bin/lint-imports --config .importlinter

typecheck: setup
	$(VENV)/bin/mypy cdseg

compile: setup
	$(VENV)/bin/cdseg pipeline compile --all

clean:
	rm -rf $(VENV) outputs .pytest_cache
