# Set-up and main jobs. Needs only Python 3.11 and pip.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= out
DATA   := $(OUT)/national_2019.parquet
FIT    := fits/demo.nc
DEMO_ARGS ?=

.PHONY: venv acro demo demo-real test test-slow test-long test-sbc lint docs bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

# The real acro package, for the tests that compare our checking folder with it (tests/reporting/
# test_checking.py reads $$HIERARCHY_ACRO_PYTHON): a throwaway venv of its own, as acro pins an older pandas.
ACRO_VENV ?= /tmp/acro-venv
ACRO_VERSION ?= 1.0.2
acro: $(ACRO_VENV)/.installed

$(ACRO_VENV)/.installed:
	$(PYTHON) -m venv $(ACRO_VENV)
	$(ACRO_VENV)/bin/pip install -q acro==$(ACRO_VERSION)
	$(ACRO_VENV)/bin/python -c "import acro.record"
	touch $@

# Main job: national simulated data -> validate -> fit -> report.
demo: venv
	$(BIN)/hierarchy demo --out $(OUT) --fit $(FIT) $(DEMO_ARGS)

# Second main job, on real data: the DfE LA panel 2013-2025 -> panel models -> $(OUT)/panel_report/.
# Needs only the reference folder (../shared/data/england, $$HIERARCHY_REFERENCE_DIR or REFERENCE_DIR=...).
demo-real: venv
	$(BIN)/hierarchy demo --real --out $(OUT) $(if $(REFERENCE_DIR),--reference-dir $(REFERENCE_DIR)) $(DEMO_ARGS)

# --max-worker-restart=0: a crashed worker fails the run at once; with the default restarts, a crash
# inside an xdist group left the session waiting for the group's lost tests until CI's time limit.
# --no-loadscope-reorder: the workers take the tests in collection order, which tests/conftest.py sorts
# longest first (LONGEST_FIRST), not xdist's order by the number of tests in a group
XDIST := -n 2 --dist loadgroup --max-worker-restart=0 --no-loadscope-reorder

test: venv
	$(BIN)/python -m pytest $(XDIST) --durations=25

# the slow statistical checks and the simulation-based calibration in one run, so that the two workers
# stay busy: the long SBC tests start first and the shorter slow tests fill in beside them
test-slow: venv
	$(BIN)/python -m pytest -m "slow and not long" $(XDIST) --durations=25

test-long: venv
	$(BIN)/python -m pytest -m "long" $(XDIST)

# the SBC tests alone (they are in test-slow too)
test-sbc: venv
	$(BIN)/python -m pytest -m sbc $(XDIST) --durations=10

lint: venv
	$(BIN)/ruff check src tests bench notebooks

# API reference from the docstrings (pdoc; no network needed): build/api/index.html
docs: venv
	$(BIN)/pdoc --docformat numpy --no-show-source -o build/api hierarchy

bench: venv
	$(BIN)/python bench/bench_national.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
