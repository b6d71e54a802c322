# Two commands for a fresh machine (Python >= 3.10 with pip):
#   make demo   virtual environment + densekit + the demo job
#   make test   test dependencies + lint + import contracts + the test suite
# Both are safe to run again: pip only reinstalls what changed.
#   make ci     the CI command (.ci/run): make test's lint, then its suite, make test-slow and make test-readme side by side
#   make mutate mutation testing of losses, slide/TTA, converter rules/resize/fit and metrics (docs/testing.md)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Keeps pip on the torch pair this machine's index holds locally; see constraints.txt.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --constraint constraints.txt

# The suites run on PYTEST_WORKERS pytest-xdist processes with one torch thread each; a file's tests (and its
# module fixtures) stay on one worker. On 2 cores: 781 s for the default suite, against 1024 s in one process with
# two threads (docs/testing.md). More cores: raise PYTEST_WORKERS (each worker holds its own torch, ~1-3 GB).
PYTEST_WORKERS ?= 2
PYTEST_NICE ?= 0
PYTEST := OMP_NUM_THREADS=1 nice -n $(PYTEST_NICE) $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

.PHONY: demo lint test test-suite test-slow test-readme ci mutate install install-test clean

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

lint: install-test
	$(BIN)/ruff check densekit tools tests benchmarks
	$(BIN)/lint-imports

test: lint
	$(PYTEST)

# The default suite alone: make ci's first lane, after make ci has run lint once.
test-suite: install-test
	$(PYTEST)

test-slow: install-test
	$(PYTEST) -m slow

# The README's own commands in a fresh clone (tools/check_readme.py), less the two that CI runs as lanes of their
# own (make test only installs what it would, for the blocks after it; make test-slow), the peer benchmarks
# (minutes of timing, no pass/fail claim), the conversion of mmseg's published Twins UPerNet, a download no
# stand-in can write (tests/convert/test_convert_twins.py runs that command on a file in mmseg's layout), and the
# RPN demo block, which the slow lane runs as written and checks for AR@100 >= 0.5 (tests/models/test_rpn.py).
# A stand-in training run stops 5 s after its training loop starts (model, data and optimizer built).
test-readme: install-test
	$(BIN)/python tools/check_readme.py --instead 'make test' 'make install-test' --skip 'make test-slow' \
		--skip '-m benchmarks' --skip 'densekit benchmark' \
		--skip 'twins_svt-s_uperhead_8x2_512x512_160k_ade20k.pth' --skip 'rpn_regnetx_002_fpn_demo.py' --grace 5

# The CI command (.ci/run): make test's lint first (it fails fast), then the three lanes side by side: the default
# suite, the slow lane and the README lane. The README lane is one long chain of commands (pip, one-process tools,
# the demo's training) that sets CI's pace, so every process runs one torch thread (a two-thread process beside
# others waits on its starved second thread: the demo then trained at a quarter of its speed) and the suites'
# workers run at nice 5, taking the core the chain leaves. Each lane's output is printed whole when it ends
# (--output-sync), then its wall time and exit status. Measured in docs/testing.md.
ci: lint
	@OMP_NUM_THREADS=1 $(MAKE) --no-print-directory --jobs 3 --output-sync=target PYTEST_NICE=5 \
		lane-test-suite lane-test-slow lane-test-readme

# make lane-X: make X, then its wall time.
lane-%:
	@start=$$(date +%s); $(MAKE) --no-print-directory $*; status=$$?; \
		echo "== make $*: $$(( $$(date +%s) - start )) s, exit $$status"; exit $$status

# Mutants of each module run only the tests that cover it (mutmut records which tests reach which function);
# [tool.mutmut] in pyproject.toml lists the modules and the tests. Not in CI: about 10 minutes on 2 cores.
# One torch thread: mutmut forks each mutant's test run from a process that has already run torch, and the fork
# inherits an OpenMP thread pool it cannot use (every mutant of SwinUnetDiceLoss.forward hung to its timeout).
mutate: $(VENV)/.installed-mutate
	OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
