# The two commands of the README: `make dev` and `make test`. Everything they need is installed
# here, into .venv and ~/.cache/aiops, so a fresh clone on a fresh machine works.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: dev test test-unit bench toolchain images crds lint clean down

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first and pinned: the CPU wheel on disk, never the multi-GB CUDA build.
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[worker,devenv,dev]"
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

# Real control-plane and node binaries (built once from Debian's source, ~5-10 min cold), kubectl,
# helm, and Debian's containerd, runc, CNI plugins, buildah and debootstrap for the real node.
toolchain: $(STAMP)
	$(PY) -m aiops dev toolchain

# The container images, built offline from this checkout (as root; cached by their inputs).
images: toolchain
	$(PY) -m aiops dev images

dev: toolchain
	$(PY) -m aiops dev up --foreground --apply examples

down: $(STAMP)
	$(PY) -m aiops dev down

# Everything, then the images run as pods run them and the end-to-end tier on the real node (one
# real node per machine: a run of its own; both need root, as CI has).
test: toolchain
	$(PY) -m pytest --durations=25 --ignore=tests/e2e --ignore=tests/images
	AIOPS_IMAGE_TESTS=1 $(PY) -m pytest --durations=25 tests/images tests/e2e

test-unit: $(STAMP)
	$(PY) -m pytest -m "not cluster" --ignore=tests/e2e --ignore=tests/images

bench: toolchain
	$(PY) bench/run_all.py

crds: $(STAMP)
	$(PY) -m aiops crds --out crds

lint: $(STAMP)
	$(VENV)/bin/ruff check operator tests bench

clean:
	rm -rf $(VENV) .pytest_cache
