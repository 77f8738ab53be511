# Two entry points: `make demo` (set up, then run the main job on the embedded default)
# and `make test` (set up, then run the test suite). Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU build of torch that lies on this kind of machine's disk; an unpinned torch would pull
# a multi-GB CUDA build. On a GPU machine, install the torch build you want first (README).
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint bench system-deps

$(BIN)/sanas: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(BIN)/sanas

setup: $(BIN)/sanas system-deps

# espeak-ng renders the synthetic keywords of the embedded default (Debian package).
system-deps:
	@command -v espeak-ng >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq espeak-ng >/dev/null; }

demo: setup
	$(BIN)/sanas demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
