# o4o-pulse developer commands. `make demo` and `make test` are the two commands of the README.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# The bench peers (Quix Streams, Bytewax) need pydantic < 2.14: they get a venv of their own.
# pipeline/tools/bench/peer_rows.py expects it at .venv-peers.
PEERS_VENV := .venv-peers
PEERS_BIN := $(PEERS_VENV)/bin

.PHONY: install demo test test-fast lint unit rules bench peers clean fuzz

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/pulse up --demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/vulture

# The unit tests on both cores first (they share nothing), then the broker and process tests one at a time.
test: lint
	$(BIN)/pytest -n 2 tests/unit
	$(BIN)/pytest tests/integration tests/e2e

# The unit tests only (no broker, no processes), on both cores (pytest-xdist): under a minute.
test-fast: install
	$(BIN)/pytest -q -n 2 tests/unit

unit: test-fast

$(PEERS_BIN)/.installed: bench-peers-constraints.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_BIN)/pip install --quiet --upgrade pip
	$(PEERS_BIN)/pip install --quiet -c bench-peers-constraints.txt quixstreams 'bytewax[kafka]' orjson
	touch $@

peers: $(PEERS_BIN)/.installed

bench: install peers
	$(BIN)/pulse bench

clean:
	rm -rf $(VENV) $(PEERS_VENV) .pulse-data .pytest_cache .mypy_cache .ruff_cache test-artifacts

# The Node.js client (clients/node): install what its lock file pins, build, run its unit tests.
# `make test` runs them too (tests/e2e/test_node_client.py), and with them the client's node:test
# end-to-end suite (`npm run test:e2e`: its own embedded broker and one real pulse worker).
.PHONY: node
node:
	cd clients/node && npm ci --no-audit --no-fund --prefer-offline && npm run build && npm test

# Fuzz stage 1's event path (pipeline/tools/fuzz.py, coverage-guided with atheris): FUZZ_INPUTS inputs
# or FUZZ_SECONDS seconds, whichever comes first; the JSON report goes to FUZZ_REPORT. `make test` runs a
# short profile of it (tests/unit/test_fuzz_event_path.py).
FUZZ_INPUTS ?= 1000000
FUZZ_SECONDS ?= 0
FUZZ_SEED ?= 1
FUZZ_REPORT ?= test-artifacts/fuzz-report.json
fuzz: install
	mkdir -p $(dir $(FUZZ_REPORT))
	PYTHONHASHSEED=0 $(BIN)/python -m pipeline.tools.fuzz --inputs $(FUZZ_INPUTS) --seconds $(FUZZ_SECONDS) \
		--seed $(FUZZ_SEED) --report $(FUZZ_REPORT)
