# groundsynth: two commands on a fresh machine.
#   make demo   sets up .venv with every extra and runs the demo on the built-in sample world
#   make test   sets up .venv with every extra + dev tools and runs lint and the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
DEMO_OUT ?= demo_out

.PHONY: demo test lint bench mutate gpu-wheels clean

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
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

# Mutation testing (mutmut) of the modules whose numbers users quote; not in CI (slow).
# Some targets only: make mutate MUTATE="data/splits.py io.py"
mutate: $(VENV)/.installed-dev
	$(BIN)/python tools/mutate.py $(MUTATE)

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/bench_masks.py
	$(BIN)/python benchmarks/bench_build.py
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_captions.py --quick
	$(BIN)/python benchmarks/bench_report.py --repeats 1

# Wheels (CPython 3.12, manylinux x86-64) of what the GPU machine lacks, for
# benchmarks/gpu_check.sh; the versions are those this project is tested with.
GPU_WHEELS := rasterio==1.4.4 affine==3.0.1 cligj==0.7.2 click-plugins==1.1.1.2 fpng==0.1.0 \
	diffusers==0.42.1 importlib_metadata==10.2.0 segmentation_models_pytorch==0.6.0
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
