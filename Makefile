# feedlog: every target creates or reuses .venv itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FUZZ_STAMP := $(VENV)/.fuzz-installed
FUZZ_SECONDS ?= 60
SOAK_TRIALS ?= 2000

.PHONY: demo test check lint typecheck bench vectors vectors-check clean fuzz soak

# The compiled core (setup.py, feedlog/native.py): editing one of its modules rebuilds it.
NATIVE_SRC := setup.py feedlog/native.py feedlog/core/validate.py feedlog/core/encoding.py \
	feedlog/core/wire.py feedlog/core/boxstream.py feedlog/core/bundle.py

$(STAMP): pyproject.toml $(NATIVE_SRC)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m feedlog.demo

# The whole suite on the compiled core, then the core's own tests on its Python source.
test: $(STAMP) vectors-check
	$(BIN)/python -m pytest
	FEEDLOG_PURE=1 $(BIN)/python -m pytest -p no:cacheprovider tests/core tests/test_native.py \
		tests/test_ingest.py tests/test_bundle.py

lint: $(STAMP)
	$(BIN)/ruff check feedlog cli tests spec fuzz setup.py

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# BENCH_ARGS: e.g. "--only rss --rss-big 1000000" for the 1M-message memory figure
bench: $(STAMP)
	$(BIN)/python -m feedlog.bench $(BENCH_ARGS)

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

$(FUZZ_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,fuzz]'
	touch $(FUZZ_STAMP)

# Every atheris harness for FUZZ_SECONDS each; corpus and findings are kept in .fuzz/.
# On the Python source of the compiled core: atheris instruments Python code only
# (tests/test_native.py checks that the compiled modules answer as their source does).
fuzz: $(FUZZ_STAMP)
	FEEDLOG_PURE=1 $(BIN)/python -m fuzz --seconds $(FUZZ_SECONDS)

# The crash tests with SOAK_TRIALS trials per scenario instead of the suite's bounded count.
soak: $(STAMP)
	FEEDLOG_CRASH_TRIALS=$(SOAK_TRIALS) $(BIN)/python -m pytest -s tests/e2e/test_crash.py \
		--timeout=0 -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .fuzz build
	find feedlog -name '*.so' -delete
	rm -f feedlog_native__mypyc*
