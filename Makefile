# The two commands a newcomer needs: `make demo` and `make test`. Both build .venv first if missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo

.PHONY: venv demo test test-slow lint bench browser clean

venv: $(VENV)/.installed

# torch==2.13.0 goes in first and alone: it is the CPU build on this disk; letting the
# project's dependencies pick torch would pull a several-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: venv
	rm -rf $(DEMO_DIR)
	$(BIN)/evo run math/circle_packing_26 --run-dir $(DEMO_DIR) --budget 600 --workers 2
	$(BIN)/evo show $(DEMO_DIR)

lint: venv
	$(BIN)/ruff check .

# The slow end-to-end runs (training through `evo run`, re-timing records) wait for `make test-slow`:
# `make test` stays within CI's budget on 2 cores.
test: venv lint
	$(BIN)/python -m pytest -q -x --timeout 600 -m "not slow" tests

test-slow: venv
	$(BIN)/python -m pytest -q -x --timeout 900 -m slow tests

# Debian's chromium for the browser tests (tests/test_report.py, tests/test_ui.py), which skip without it.
browser:
	@command -v chromium >/dev/null || { test "$$(id -u)" = 0 || { echo "make browser: run as root (apt-get install chromium)" >&2; exit 1; }; \
		apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }
	@chromium --version 2>/dev/null

bench: venv
	$(BIN)/python benchmarks/engine_overhead.py

clean:
	rm -rf $(VENV) runs build *.egg-info
