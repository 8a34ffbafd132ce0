# Broker Integration Service: install, run, lint, test and benchmark.
#
# Needs only Python 3.11+ on the machine: everything else goes into $(VENV), created on first
# use. Installs are remembered in stamp files (inside $(VENV)) that depend on pyproject.toml, so
# pip runs again only when the dependencies change.
#
#   make run                   the daemon on its embedded default, state in ./.state
#   make test                  lint, then every test (PYTEST_ARGS="tests/daemon -x" to narrow)
#   make lint | bench | install | clean | distclean

PYTHON ?= python3
VENV ?= .venv
STATE_DIR ?= $(or $(BIS_STATE_DIR),.state)
CONFIG ?=
RUN_ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=

BIN := $(VENV)/bin
VENV_PYTHON := $(BIN)/python
PIP := $(VENV_PYTHON) -m pip --disable-pip-version-check
INSTALL_STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

# With a config file, the state directory is the config's unless STATE_DIR is given explicitly.
ifdef CONFIG
RUN_FLAGS := --config $(CONFIG)$(if $(filter-out file default undefined,$(origin STATE_DIR)), --state-dir $(STATE_DIR))
else
RUN_FLAGS := --state-dir $(STATE_DIR)
endif

# $(call require_python,INTERPRETER,WHAT TO DO): fail clearly unless it runs and is Python 3.11+.
define require_python
@version=$$($(1) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || { \
  echo "error: '$(1)' does not run. $(2)" >&2; exit 1; }; \
$(1) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
  echo "error: '$(1)' is Python $$version; this project needs 3.11 or newer. $(2)" >&2; exit 1; }
endef
NEED_PYTHON := Install Python 3.11+, or name one: make $(MAKECMDGOALS) PYTHON=/path/to/python3.11
NEED_NEW_VENV := Remove the old virtualenv (make distclean) and try again, with PYTHON=python3.11 if needed.

.DEFAULT_GOAL := help
.PHONY: help install run test lint browser promtool bench clean distclean

help:
	@echo "make run        start the daemon (embedded NATS, PostgreSQL, simulated brokers; state in $(STATE_DIR))"
	@echo "                CONFIG=path.toml to use a config file, RUN_ARGS='...' for more flags"
	@echo "make test       lint, then pytest (PYTEST_ARGS='...' passed through)"
	@echo "make lint       ruff check and mypy --strict over the packages"
	@echo "make browser    install chromium for the console's browser test (root, apt-get) if missing"
	@echo "make promtool   install promtool to check docs/alerts.yml (root, apt-get prometheus) if missing"
	@echo "make bench      run every bench/*.py but ab.py (BENCH_ARGS='...' passed through)"
	@echo "make install    create $(VENV) and install the project (editable)"
	@echo "make clean      remove caches and build artefacts (keeps $(VENV) and .state)"
	@echo "make distclean  clean, and remove $(VENV) too"

$(VENV_PYTHON):
	$(call require_python,$(PYTHON),$(NEED_PYTHON))
	@echo "creating $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV) || { \
	  echo "error: '$(PYTHON) -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2; \
	  rm -rf $(VENV); exit 1; }

$(INSTALL_STAMP): pyproject.toml | $(VENV_PYTHON)
	$(call require_python,$(VENV_PYTHON),$(NEED_NEW_VENV))
	@echo "installing the project into $(VENV)"
	$(PIP) install -q -e .
	@touch $@

# The test extra includes everything `install` does: one pip run serves both stamps.
$(TEST_STAMP): pyproject.toml | $(VENV_PYTHON)
	$(call require_python,$(VENV_PYTHON),$(NEED_NEW_VENV))
	@echo "installing the project and its test tools into $(VENV)"
	$(PIP) install -q -e '.[test]'
	@touch $@ $(INSTALL_STAMP)

install: $(INSTALL_STAMP)

run: $(INSTALL_STAMP)
	exec $(BIN)/broker-integration run $(RUN_FLAGS) $(RUN_ARGS)

# Both linters run even when the first fails, so one pass shows every problem.
lint: $(TEST_STAMP)
	@status=0; \
	echo "ruff check ."; $(BIN)/ruff check . || status=1; \
	echo "mypy (packages from pyproject.toml [tool.mypy])"; $(BIN)/mypy || status=1; \
	exit $$status

# The console's browser test drives Debian's `chromium` through playwright (a browser download by
# playwright itself cannot work here). Installed when missing if we are root with apt-get; else the
# test is skipped with its reason, and fails under CI=true.
CHROMIUM_FOUND = command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || [ -n "$$BIS_CHROMIUM" ]
browser:
	@if $(CHROMIUM_FOUND); then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium (apt-get) for the console's browser test"; \
	  { timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq chromium >/dev/null; } || \
	  echo "WARNING: chromium could not be installed: the console's browser test will be SKIPPED (a failure under CI=true)" >&2; \
	else \
	  echo "WARNING: no chromium and not root: the console's browser test will be SKIPPED (a failure under CI=true); apt-get install chromium, or set BIS_CHROMIUM" >&2; \
	fi

# `promtool check rules` validates docs/alerts.yml (tests/test_docs_alerts.py); Debian's
# `prometheus` package ships it. Installed when missing if we are root with apt-get; else the
# test is skipped with its reason, and fails under CI=true.
promtool:
	@if command -v promtool >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing promtool (apt-get prometheus) to check docs/alerts.yml"; \
	  { timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } || \
	  echo "WARNING: promtool could not be installed: the alert rules' promtool test will be SKIPPED (a failure under CI=true)" >&2; \
	else \
	  echo "WARNING: no promtool and not root: the alert rules' promtool test will be SKIPPED (a failure under CI=true); apt-get install prometheus" >&2; \
	fi

test: lint browser promtool
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(INSTALL_STAMP)
	@found=0; \
	for script in bench/*.py; do \
	  [ -e "$$script" ] || continue; \
	  case "$${script##*/}" in _*|__init__.py|ab.py) continue;; esac; \
	  found=1; echo "== $$script"; \
	  PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" $(VENV_PYTHON) "$$script" $(BENCH_ARGS) || exit 1; \
	done; \
	[ $$found = 1 ] || echo "no benchmarks in bench/"

clean:
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
