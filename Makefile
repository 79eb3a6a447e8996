# d-vecDB developer entry points. Every target installs what it needs itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev lint typecheck test test-unit test-integration test-e2e demo bench cluster-up cluster-down clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

dev: $(STAMP)

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy cannot see setuptools' editable import hook, so give it the import names as links.
typecheck: dev
	mkdir -p .typecheck
	ln -sfn ../node .typecheck/dvecdb_node
	ln -sfn ../operator .typecheck/dvecdb_operator
	ln -sfn ../localkube .typecheck/localkube
	cd .typecheck && ../$(BIN)/mypy --config-file ../pyproject.toml -p dvecdb_node -p dvecdb_operator -p localkube

test-unit: dev
	$(BIN)/pytest -m unit

test-integration: dev
	$(BIN)/pytest -m integration

test-e2e: dev
	$(BIN)/pytest -m e2e

# The README's test command: lint, types, then every tier.
test: lint typecheck
	$(BIN)/pytest

demo: dev
	$(BIN)/python -m demo

bench: dev
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .typecheck .mypy_cache .ruff_cache .pytest_cache
