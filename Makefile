# o4o-pulse developer commands. `make demo` and `make test` are the two commands of the README.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# The bench peers (Quix Streams, Bytewax) need pydantic < 2.14: they get a venv of their own.
# pipeline/tools/bench/peer_rows.py expects it at .venv-peers.
PEERS_VENV := .venv-peers
PEERS_BIN := $(PEERS_VENV)/bin

.PHONY: install demo test test-fast lint unit rules bench peers clean

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

test: lint
	$(BIN)/pytest

# The unit tests only (no broker, no processes): under a minute.
test-fast: install
	$(BIN)/pytest -q tests/unit

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
# `make test` runs them too, with its end-to-end tests (tests/e2e/test_node_client.py).
.PHONY: node
node:
	cd clients/node && npm ci --no-audit --no-fund --prefer-offline && npm run build && npm test
