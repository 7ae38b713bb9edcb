# Set-up and the two README commands. Everything runs in a local virtual environment (.venv); headless
# rendering for the camera tasks (Mesa's EGL / OSMesa, Debian packages) is installed by scripts/setup_render.sh.
#   make demo   - install, then run the main job on the shipped default
#   make test   - install, then lint (ruff) and run the test suite
# TORCH selects the PyTorch requirement installed before the package (default: torch==2.13.0, the
# CPU wheel on the project's build machines); e.g. `make test TORCH="torch>=2.2"` elsewhere.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin

.PHONY: install demo test test-all lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,manipulation,multiagent,deploy]"
	$(BIN)/pip install -q --no-deps "robosuite==1.5.2"
	bash scripts/setup_render.sh
	touch $@

demo: install
	bash scripts/demo.sh

test: install lint
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks scripts

test-all: install
	$(BIN)/python -m pytest -q -m ""

clean:
	rm -rf $(VENV) runs build src/*.egg-info
