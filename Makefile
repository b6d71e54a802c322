# Two commands for a fresh machine (Python >= 3.10 with pip):
#   make demo   virtual environment + densekit + the demo job
#   make test   test dependencies + lint + import contracts + the test suite
# Both are safe to run again: pip only reinstalls what changed.
#   make ci     the CI command (.ci/run): make test, then make test-slow, then make test-readme
#   make mutate mutation testing of losses, slide/TTA, converter rules/resize/fit and metrics (docs/testing.md)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Keeps pip on the torch pair this machine's index holds locally; see constraints.txt.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --constraint constraints.txt

.PHONY: demo test test-slow test-readme ci mutate install install-test clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "densekit needs Python >= 3.10, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP_INSTALL) --editable .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP_INSTALL) --editable '.[test]'
	@touch $@

$(VENV)/.installed-mutate: $(VENV)/.installed-test
	$(PIP_INSTALL) --editable '.[test,mutate]'
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

# The README's own commands in a fresh clone (tools/check_readme.py), less the two that CI runs as lanes of their
# own (make test, make test-slow) and the peer benchmarks (minutes of timing, no pass/fail claim).
test-readme: install-test
	$(BIN)/python tools/check_readme.py --skip 'make test' --skip 'make test-slow' --skip '-m benchmarks' \
		--skip 'densekit benchmark' --skip 'twins_svt-s_uperhead_8x2_512x512_160k_ade20k.pth' --grace 30

# The CI command (.ci/run): the three lanes in order, each one's wall time printed after it.
ci:
	@for lane in test test-slow test-readme; do \
		start=$$(date +%s); $(MAKE) --no-print-directory $$lane || exit 1; \
		echo "== make $$lane: $$(( $$(date +%s) - start )) s"; \
	done

# Mutants of each module run only the tests that cover it (mutmut records which tests reach which function);
# [tool.mutmut] in pyproject.toml lists the modules and the tests. Not in CI: about 10 minutes on 2 cores.
# One torch thread: mutmut forks each mutant's test run from a process that has already run torch, and the fork
# inherits an OpenMP thread pool it cannot use (every mutant of SwinUnetDiceLoss.forward hung to its timeout).
mutate: $(VENV)/.installed-mutate
	OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
