# The README's two commands: `make demo` (the main job) and `make test` (lint, types, tests).
# Both create .venv if it is absent and install into it; torch is pinned to the CPU wheel.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DEV_INSTALLED := $(VENV)/.installed-dev
DEMO_RUN ?= runs/demo

.PHONY: demo test lint install browser clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e .
	touch $@

$(DEV_INSTALLED): $(INSTALLED)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(INSTALLED)

# Train a small VQ-VAE on the built-in photo crops (3-minute budget), evaluate it, picture it.
demo: $(INSTALLED)
	rm -rf $(DEMO_RUN)
	$(VENV)/bin/vqkit train --config recipes/demo.json -o $(DEMO_RUN)
	$(VENV)/bin/vqkit eval $(DEMO_RUN) --data builtin --json $(DEMO_RUN)/eval_builtin.json
	$(VENV)/bin/vqkit reconstruct $(DEMO_RUN) builtin -o $(DEMO_RUN)/reconstruction.png
	@echo "demo run: $(DEMO_RUN) (reconstruction picture: $(DEMO_RUN)/reconstruction.png)"

lint: $(DEV_INSTALLED)
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

# The report test renders HTML in headless Chromium (Debian's package). As root with apt we install it;
# otherwise that test is skipped and says how to install it.
browser:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the report test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	fi

test: lint browser
	$(VENV)/bin/pytest -m "not slow" -q

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
