# make run  : set up .venv and run the service on its embedded defaults
# make test : set up .venv and run lint + the whole test suite (then again the unit tier and
#             the webhook path's tests with the hot path compiled: make test-compiled)
# make unit : set up .venv and run the unit / in-process tier only (tests/unit, about a minute)
# make cluster : set up .venv and run the cluster tier only (tests/cluster: replicas on a
#                3-node nats-server cluster, about a minute; make test runs it too)
# make openapi : regenerate docs/admin-openapi.yaml from the admin API code
# make sbom : write sbom.cdx.json (CycloneDX) of the runtime dependencies
# make reliability : re-measure docs/reliability.md's figures (faults, fuzz, spool, soak; ~25 min)
# make console-screenshots : the console's pages as PNGs in docs/console/ (headless Chromium)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= $(if $(wildcard config.yaml),config.yaml,config.example.yaml)

.PHONY: run test lint format unit cluster compiled test-compiled bench reliability openapi sbom clean chromium console-screenshots

# make run's admin token (the console at http://localhost:8080/console and `ensemble-tap
# admin`): for local use only; set TAP_ADMIN_TOKEN to choose another.
DEV_ADMIN_TOKEN := dev-admin-token-change-me

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	TAP_ADMIN_TOKEN="$${TAP_ADMIN_TOKEN:-$(DEV_ADMIN_TOKEN)}" $(BIN)/ensemble-tap serve --config $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench setup.py
	$(BIN)/ruff format --check src tests bench setup.py
	$(BIN)/mypy
	$(BIN)/bandit -q -c pyproject.toml -r src
	$(BIN)/lint-imports

# The coverage floor only goes up (docs/status.md has the figure of the last run). It counts
# the test process only: code that runs in processes the tests start (ensemble-tap serve,
# workers, SIGHUP reloads) is exercised but not counted.
COVERAGE_FLOOR := 91

# The console's browser tests (tests/console) drive Debian's chromium: installed here when it
# is missing and make runs as root; elsewhere those tests skip and say why.
chromium:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi

# The suite runs in three processes (pytest-xdist, each test file whole in one, as module
# fixtures expect): most tests wait on servers, subprocesses and deadlines rather than compute,
# so three overlap well on two cores. The cluster tier then runs alone (three nats-servers
# and three replicas of its own, on fixed ports), adding to the same coverage figure.
PYTEST_PARALLEL := -n 3 --dist loadfile

test: lint chromium
	$(BIN)/pytest -q $(PYTEST_PARALLEL) --ignore=tests/cluster --cov=ensemble_tap --cov-report=
	$(BIN)/pytest -q tests/cluster --cov=ensemble_tap --cov-append --cov-report=term:skip-covered --cov-fail-under=$(COVERAGE_FLOOR)
	@cc="$${CC:-cc}"; if command -v "$${cc%% *}" >/dev/null 2>&1; then $(MAKE) --no-print-directory test-compiled; \
	else echo "no C compiler (cc): the compiled pass (make test-compiled) is skipped"; fi

# The webhook hot path compiled with mypyc (setup.py, #17): a wheel built where mypy is
# installed (no build isolation), unpacked under build/compiled; .venv's editable install
# stays pure Python. test-compiled runs the unit tier and the webhook path's integration
# tests against it (tests/unit/test_compiled.py fails when a module was left uncompiled).
COMPILED := build/compiled
WEBHOOK_PATH_TESTS := tests/integration/test_generic_webhook.py \
	tests/integration/test_provider_deliveries.py tests/integration/test_bus.py \
	tests/integration/test_bus_client.py tests/integration/test_spool_ingress.py \
	tests/integration/test_garbage_never_5xx.py tests/integration/test_hubspot_event_ids.py

compiled: $(STAMP)
	rm -rf build/compiled-dist $(COMPILED) build/mypyc build/lib.* build/temp.* build/bdist.*
	TAP_MYPYC=required $(BIN)/pip wheel -q --no-deps --no-build-isolation --wheel-dir build/compiled-dist .
	$(BIN)/pip install -q --no-deps --target $(COMPILED) build/compiled-dist/*.whl

test-compiled: compiled
	TAP_EXPECT_COMPILED=1 PYTHONPATH=$(CURDIR)/$(COMPILED) $(BIN)/pytest -q $(PYTEST_PARALLEL) \
		-p no:cacheprovider tests/unit $(WEBHOOK_PATH_TESTS)

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

cluster: $(STAMP)
	$(BIN)/pytest -q tests/cluster

format: $(STAMP)
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

bench: $(STAMP)
	$(BIN)/python bench/ingress.py

# Every figure of docs/reliability.md, one after the other (needs wrk: apt-get install wrk).
reliability: $(STAMP)
	$(BIN)/python bench/faults.py
	$(BIN)/python bench/fuzz.py
	$(BIN)/python bench/spool.py --max-rate 40000
	$(BIN)/python bench/soak.py

# The screenshots of docs/operations.md ("Console") and the README, from the browser tests.
console-screenshots: $(STAMP) chromium
	TAP_CONSOLE_SCREENSHOTS=$(CURDIR)/docs/console $(BIN)/pytest -q -p no:cacheprovider tests/console/test_console_browser.py

# Regenerate the committed admin API document (a unit test fails when it is out of date).
openapi: $(STAMP)
	$(BIN)/python -m ensemble_tap.admin.openapi > docs/admin-openapi.yaml

# A CycloneDX SBOM of what the service runs with: the wheel installed in a fresh virtualenv
# without dev extras (as in the container image), described by cyclonedx-py.
sbom: $(STAMP)
	rm -rf build/sbom && $(BIN)/pip wheel -q --no-deps --wheel-dir build/sbom/dist .
	$(PYTHON) -m venv build/sbom/venv
	build/sbom/venv/bin/pip install -q --disable-pip-version-check build/sbom/dist/*.whl
	$(BIN)/cyclonedx-py environment --pyproject pyproject.toml --of JSON -o sbom.cdx.json build/sbom/venv
	@echo "wrote sbom.cdx.json"

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
