# feedlog: every target creates or reuses .venv itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check lint typecheck bench vectors vectors-check clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m feedlog.demo

test: $(STAMP) vectors-check
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check feedlog cli tests spec

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python -m feedlog.bench

vectors: $(STAMP)
	$(BIN)/python spec/make_vectors.py
	$(BIN)/python spec/make_view_vectors.py
	$(BIN)/python spec/make_discovery_vectors.py
	$(BIN)/python spec/make_bundle_vectors.py
	$(BIN)/python spec/make_replication_vectors.py

vectors-check: $(STAMP)
	$(BIN)/python spec/make_vectors.py --check
	$(BIN)/python spec/make_view_vectors.py --check
	$(BIN)/python spec/make_discovery_vectors.py --check
	$(BIN)/python spec/make_bundle_vectors.py --check
	$(BIN)/python spec/make_replication_vectors.py --check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
