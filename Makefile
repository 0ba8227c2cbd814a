# Every target that runs code installs first when needed; `make install` is a no-op when
# pyproject.toml and requirements.lock have not changed since the last install.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
SCALE ?= 10000
INCREMENTAL ?=
ENGINE ?=
TRAIN ?=

.PHONY: install browser spark demo lint test ui bench accuracy clean

install: $(STAMP)

# PYTHONWARNINGS: setuptools says "Editable installation" about every editable install (a notice
# about editable installs in general, not about this project).
$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.lock
	PYTHONWARNINGS="ignore:Editable installation" $(VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The browser tests (cdm_pipeline_tests/browser.py) drive Debian's chromium through Playwright:
# `playwright install` would download a browser build of its own, which these machines cannot
# fetch. A machine without chromium (CI's clean Debian) gets it here. Where it cannot be
# installed (not root and no password-less sudo, no apt-get, no network) the build goes on and
# those tests skip, saying why. --no-install-recommends: a headless browser needs none of the
# desktop extras chromium recommends (avahi, cups and udev helpers, upower, ...): 25 packages
# instead of 117, about 8 s instead of 13 on a new machine; text still renders, as chromium's
# fontconfig dependency brings fonts-dejavu-core.
# The lock timeout waits out another apt run instead of failing at once.
browser:
	@command -v chromium >/dev/null 2>&1 && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=; \
	elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "make browser: chromium is missing and cannot be installed (not root, no password-less sudo); browser tests will be skipped"; exit 0; fi; \
	command -v apt-get >/dev/null 2>&1 || { echo "make browser: chromium is missing and there is no apt-get to install it; browser tests will be skipped"; exit 0; }; \
	echo "make browser: installing Debian's chromium with apt-get"; \
	log=$$(mktemp); \
	{ $$sudo apt-get -o DPkg::Lock::Timeout=120 update -qq; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends chromium; } >$$log 2>&1; \
	if command -v chromium >/dev/null 2>&1; then echo "make browser: $$(chromium --version 2>/dev/null) installed"; \
	else why=$$(grep '^E:' $$log | tail -n 1); \
	  echo "make browser: apt-get install chromium failed ($${why:-$$(tail -n 1 $$log)}); browser tests will be skipped"; fi; \
	rm -f $$log

# engine: spark (README, "Engines"): pyspark in the venv (requirements-spark.lock) and, where `java`
# is missing, Debian's openjdk-17-jre-headless for a local Spark (17: the newest Debian 12 has;
# Spark 4 runs on 17 and 21). As with `make browser`, a machine where Java cannot be installed
# goes on and the Spark tests skip, saying why. `make demo` needs neither.
SPARK_STAMP := $(VENV)/.spark-installed
spark: $(SPARK_STAMP)
	@command -v java >/dev/null 2>&1 && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=; \
	elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "make spark: java is missing and cannot be installed (not root, no password-less sudo); Spark tests will be skipped"; exit 0; fi; \
	command -v apt-get >/dev/null 2>&1 || { echo "make spark: java is missing and there is no apt-get to install it; Spark tests will be skipped"; exit 0; }; \
	echo "make spark: installing Debian's openjdk-17-jre-headless with apt-get"; \
	log=$$(mktemp); \
	{ $$sudo apt-get -o DPkg::Lock::Timeout=120 update -qq; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends openjdk-17-jre-headless; } >$$log 2>&1; \
	if command -v java >/dev/null 2>&1; then echo "make spark: $$(java -version 2>&1 | head -n 1) installed"; \
	else why=$$(grep '^E:' $$log | tail -n 1); \
	  echo "make spark: apt-get install openjdk-17-jre-headless failed ($${why:-$$(tail -n 1 $$log)}); Spark tests will be skipped"; fi; \
	rm -f $$log

$(SPARK_STAMP): $(STAMP) requirements-spark.lock
	$(VENV)/bin/python -m pip install --quiet -r requirements-spark.lock
	touch $(SPARK_STAMP)

demo: install
	$(VENV)/bin/cdm demo

# ruff's rules are in pyproject.toml; a lint error fails the build before any test runs.
lint: install
	$(VENV)/bin/ruff check .

test: install browser spark lint
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

ui: install
	$(VENV)/bin/cdm ui

# The whole pipeline on SCALE demo people beside bare Splink and a plain DuckDB scan;
# appends to benchmarks/results.json and rewrites benchmarks/RESULTS.md.
# INCREMENTAL=1: instead, an incremental identity night beside a full re-link of the same warehouse
# (benchmarks/incremental.py); appends to benchmarks/incremental.json, rewrites its RESULTS.md section.
# ENGINE=spark: instead, the identity stage on DuckDB beside the same stage on a local Spark
# (benchmarks/engines.py; TRAIN=0 skips timing training); appends to benchmarks/engines.json,
# rewrites its RESULTS.md section. Needs `make spark`.
bench: install $(if $(filter spark,$(ENGINE)),spark)
	$(VENV)/bin/python benchmarks/bench.py --people $(SCALE)$(if $(filter-out 0,$(INCREMENTAL)), --incremental)$(if $(filter-out duckdb,$(ENGINE)), --engine $(ENGINE))$(if $(filter 0,$(TRAIN)), --no-train)

# Identity accuracy on labelled data shaped unlike the demo (FEBRL dataset1/2 and six seeded
# variants): the pipeline beside bare Splink; rewrites benchmarks/ACCURACY.md, appends to
# benchmarks/accuracy.json. Work files go to benchmarks/scratch/accuracy/.
accuracy: install
	$(VENV)/bin/python benchmarks/accuracy.py

clean:
	rm -rf data/landing data/warehouse data/reports data/exports data/analyst data/spark .dagster_home .pytest_cache
