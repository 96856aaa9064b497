# Two commands set everything up on a fresh Debian/Ubuntu machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test test-fast bench lint catalogue dashboards venv venv-dev clean

# `make run` installs what a node runs (the runtime extras); `make test` adds the test tools beside them.
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || { \
	  echo "aifactory-agent needs Python >= 3.11; '$(PYTHON)' is $$($(PYTHON) --version 2>&1 || echo missing)." >&2; \
	  echo "Install python3 (Debian 12 / Ubuntu 24.04 ship 3.11+) or run: make PYTHON=/path/to/python3.11 ..." >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "Cannot create a virtual environment: install python3-venv (apt-get install -y python3-venv)." >&2; exit 1; }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[gpu,snmp,ipmi,modbus,prometheus]'
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e '.[gpu,snmp,ipmi,modbus,prometheus,dev]'
	@touch $@

venv: $(VENV)/.installed
venv-dev: $(VENV)/.installed-dev

## Start the agent on the embedded default (local SQLite store); Ctrl-C stops it cleanly.
run: venv
	$(BIN)/aifactory run $(ARGS)

## Install test dependencies, start the real services the tests use, run the whole suite.
test: venv-dev
	@tests/install-deps test
	$(BIN)/python -m pytest $(ARGS)

## The quick loop: no external service, no minutes-long run (tests marked `services` are left out).
test-fast: venv-dev
	$(BIN)/python -m pytest -q -m "not services" -n auto $(ARGS)

## Benchmarks with their peer tools, side by side (see bench/README.md).
bench: venv-dev
	@tests/install-deps bench
	$(BIN)/python bench/collect_overhead $(ARGS)
	$(BIN)/python bench/delivery
	$(BIN)/python bench/gpu_collect
	$(BIN)/python bench/snmp_sweep --devices 200 --sweeps 10 --pysnmp
	$(BIN)/python bench/inference_scrape
	$(BIN)/python bench/bmc_sweep
	$(BIN)/python bench/fleet_scale

lint: venv-dev
	$(BIN)/ruff check agent collectors tests bench/collect_overhead bench/delivery bench/gpu_collect bench/gpu-smoke bench/snmp_sweep bench/inference_scrape bench/soak bench/bmc_sweep bench/fleet_scale tests/fixtures/redfish/derive dashboards/render-examples docs/generate docs/datadog-eval

## Regenerate the tables generated from the declarations: metric catalogue and configuration reference
## (README.md), SNMP profiles (docs/snmp.md).
catalogue: venv-dev
	$(BIN)/python docs/generate

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis *.egg-info

## Rebuild the dashboards' JSON and their pictures (docs/img) from a throwaway InfluxDB.
dashboards: venv-dev
	$(BIN)/aifactory dashboards build
	$(BIN)/python dashboards/render-examples
