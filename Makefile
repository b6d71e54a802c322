# Two commands for a fresh machine (Python >= 3.10 with pip):
#   make demo   virtual environment + densekit + the demo job
#   make test   test dependencies + lint + import contracts + the test suite
# Both are safe to run again: pip only reinstalls what changed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Keeps pip on the torch pair this machine's index holds locally; see constraints.txt.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --constraint constraints.txt

.PHONY: demo test test-slow install install-test clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "densekit needs Python >= 3.10, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP_INSTALL) --editable .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP_INSTALL) --editable '.[test]'
	@touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/python tools/demo.py

test: install-test
	$(BIN)/ruff check densekit tools tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

test-slow: install-test
	$(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
