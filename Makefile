# Top-level tasks. Each target is owned by whoever added it; add yours surgically.

PYTHON ?= .venv/bin/python
PIP ?= .venv/bin/pip

.PHONY: bench bench-quick bench-deps

# Benchmarks side by side with oidc-provider (issue 5): installs wrk (Debian), the peer
# (npm ci in bench/peer) and the harness's Python packages, then runs everything and writes
# bench/results/latest.{md,json,png}. Needs PostgreSQL on 127.0.0.1:5432 and Redis on :6379.
bench: bench-deps
	$(PYTHON) bench/run.py $(BENCH_ARGS)

# A short run (a few seconds per measurement) that proves the harness works.
bench-quick: bench-deps
	$(PYTHON) bench/run.py --quick --out bench/results/quick $(BENCH_ARGS)

bench-deps:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	@command -v taskset >/dev/null || apt-get install -y -qq util-linux
	cd bench/peer && npm ci --no-audit --no-fund
	$(PIP) install -q -r bench/requirements.txt
