# groundsynth: two commands on a fresh machine.
#   make demo   sets up .venv with every extra and runs the demo on the built-in sample world
#   make test   sets up .venv with every extra + dev tools and runs lint and the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
DEMO_OUT ?= demo_out

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Reinstall when the project's requirements change.
$(VENV)/.installed-all: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[all]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e '.[all,dev]'
	touch $@ $(VENV)/.installed-all

demo: $(VENV)/.installed-all
	$(BIN)/groundsynth demo --out $(DEMO_OUT)

test: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_masks.py
	$(BIN)/python benchmarks/bench_build.py
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_captions.py --quick

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
