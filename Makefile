# One entry point per task; every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo ui test test-fast bench snapshot clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: install          ## the whole platform on a synthetic district, embedded DuckDB, no configuration
	$(BIN)/aptool demo

ui: install            ## the demo, then the Dagster UI on http://127.0.0.1:3000
	$(BIN)/aptool demo --ui

test: install          ## every test: needs PostgreSQL on 127.0.0.1:5432 and OpenSSH sshd (see .ci/run)
	$(BIN)/pytest

test-fast: install     ## the tests that need no PostgreSQL, sshd or Chromium
	$(BIN)/pytest -m "not postgres and not sftp and not slow and not browser"

bench: install         ## speed targets (not timed tests); each script exits non-zero when it misses its target
	$(BIN)/python benchmarks/bench_iready_parse.py
	$(BIN)/python benchmarks/bench_attendance_summary.py
	$(BIN)/python benchmarks/bench_aeries_pull.py
	$(BIN)/python benchmarks/bench_publish.py
	$(BIN)/python benchmarks/bench_webhooks.py
	$(BIN)/python benchmarks/bench_webhook_to_ranking.py

snapshot: install      ## accept a deliberate change of the asset graph
	APTOOL_UPDATE_SNAPSHOT=1 $(BIN)/pytest aptool_assets_tests/test_definitions.py

clean:
	rm -rf $(VENV) .aptool .pytest_cache
