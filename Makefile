# o4o-pulse developer commands. `make demo` and `make test` are the two commands of the README.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint unit rules bench clean

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

test: lint
	$(BIN)/pytest

unit: install
	$(BIN)/pytest tests/unit

bench: install
	$(BIN)/pulse bench

clean:
	rm -rf $(VENV) .pulse-data .pytest_cache .mypy_cache .ruff_cache test-artifacts
