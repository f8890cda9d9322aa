# vae_lab: `make install` then `make test`.
PYTHON ?= python
# torch: a CUDA build where `nvidia-smi` sees a GPU, otherwise the CPU build 2.13.0 (>= 2.6:
# its torch.load is weights-only by default, so Lightning's loads on resume run no code).
# Elsewhere without a GPU, `make install TORCH_INDEX=https://download.pytorch.org/whl/cpu`
# avoids PyPI's multi-GB CUDA wheel.
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_SPEC ?= $(if $(HAS_GPU),torch>=2.6,torch==2.13.0)
TORCH_INDEX ?=
PIP := $(PYTHON) -m pip

.PHONY: help install test test-full lint bench

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

install:  ## install torch (CPU or CUDA), vae_lab and its dev tools
	$(PYTHON) -c "import torch" 2>/dev/null || \
		$(PIP) install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -e ".[dev]"

test:  ## the fast test suite (a few minutes), one worker per core (tests/conftest.py)
	$(PYTHON) -m pytest -q -n auto

test-full:  ## every test, the slow ones too (about 13 minutes on 2 cores)
	$(PYTHON) -m pytest -q -n auto -m ""

lint:  ## ruff
	$(PYTHON) -m ruff check vae_lab tests benchmarks
	$(PYTHON) -m ruff format --check vae_lab tests benchmarks

bench:  ## speed benchmarks, writes bench.json
	$(PYTHON) -m benchmarks.run
