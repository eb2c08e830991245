# The two commands of the README: `make demo` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-slow test-ui lint lab data bench clean tensorboard help

$(STAMP): pyproject.toml
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)  # new, or half made
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install the project (and let git keep the notebooks without outputs)
	@$(BIN)/python fsl_core/notebook_files.py --install-git-filter

demo: setup  ## run the quickstart notebook on the embedded data set
	$(BIN)/python -m fsl_core.notebooks 00_quickstart

test: setup lint  ## the test suite, without the slow notebook executions and the browser tests
	$(BIN)/python -m pytest -q

test-slow: setup  ## every notebook executed end to end by papermill (marker slow)
	$(BIN)/python -m pytest -q -m slow

test-ui: setup  ## notebooks in JupyterLab in headless Chromium (Debian's chromium, installed when missing)
	test -n "$$CHROMIUM" || command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
	  || (apt-get update && apt-get install -y chromium) \
	  || { echo "make test-ui needs Chromium: install Debian's chromium package as root, or set CHROMIUM" >&2; exit 1; }
	$(BIN)/python -m pytest -q -m ui tests/ui

lint: setup  ## ruff: the style checks and the formatting, as make test runs them
	$(BIN)/ruff check fsl_core tests bench
	$(BIN)/ruff format --check fsl_core tests bench

lab: setup  ## JupyterLab on the repository, open at notebooks/ (saved without outputs: see fsl_core/notebook_files.py)
	$(BIN)/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks \
	  --ContentsManager.pre_save_hook=fsl_core.notebook_files.keep_outputs_aside \
	  $$(test "$$(id -u)" = 0 && echo --allow-root)

tensorboard: setup  ## TensorBoard on outputs/: the training curves of every run (the `tracking` extra)
	@test -x $(BIN)/tensorboard || { echo "TensorBoard is not installed in $(VENV): install the tracking extra with" \
	  "'$(BIN)/python -m pip install -e \".[tracking]\"', then run 'make tensorboard' again" >&2; exit 1; }
	$(BIN)/tensorboard --logdir outputs

data: setup  ## generate the embedded data set into data/birds
	$(BIN)/python -m fsl_core.data.birds data/birds

bench: setup  ## print the speed tables (bench/gpu_check.py, for a CUDA machine, and bench/amp_accuracy.py, which trains for tens of minutes, are run by hand)
	for b in bench/*_speed.py; do $(BIN)/python $$b || exit 1; done

clean:  ## remove the tools' caches; runs under outputs/ are yours, so they are never removed here
	rm -rf .pytest_cache .ruff_cache

help:  ## this list: each target and what it does
	@awk -F ':.*## ' '/^[a-z-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(firstword $(MAKEFILE_LIST))
