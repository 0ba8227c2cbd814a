# Every target that runs code installs first when needed; `make install` is a no-op when
# pyproject.toml and requirements.lock have not changed since the last install.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
SCALE ?= 10000

.PHONY: install demo test ui bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.lock
	$(VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: install
	$(VENV)/bin/cdm demo

test: install
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

ui: install
	$(VENV)/bin/cdm ui

# The whole pipeline on SCALE demo people beside bare Splink and a plain DuckDB scan;
# appends to benchmarks/results.json and rewrites benchmarks/RESULTS.md.
bench: install
	$(VENV)/bin/python benchmarks/bench.py --people $(SCALE)

clean:
	rm -rf data/landing data/warehouse data/reports data/exports .dagster_home .pytest_cache
