# Two commands for a newcomer (see README): `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: setup demo test test-fast bench clean

$(STAMP): pyproject.toml package.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	npm install --no-audit --no-fund --loglevel=error
	touch $(STAMP)

setup: $(STAMP)  ## install aoai-monitor and its test tools into .venv (+ Azurite from npm)

demo: $(STAMP)  ## generate a realistic week of Azure OpenAI traffic into a fresh store and open the UI
	$(BIN)/aoai-monitor demo

$(CHROMIUM):
	@echo "Installing Chromium for the browser tests (Debian package)…"
	-apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	  || echo "Could not install Chromium (needs root and Debian's packages): the browser tests will be skipped."

test: $(STAMP) $(CHROMIUM)  ## run the whole test suite
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## the core tests only (no browser, no Azure stand-ins)
	$(BIN)/python -m pytest -q tests/test_normalize.py tests/test_fastpath.py tests/test_store.py tests/test_cli_core.py

bench: $(STAMP)  ## ingest throughput against its baselines (see bench/)
	$(BIN)/python bench/bench_ingest.py

clean:
	rm -rf $(VENV) node_modules aoai-monitor.duckdb aoai-monitor-demo.duckdb
