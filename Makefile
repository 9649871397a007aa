# One command per chore. `make test` and `make demo` create .venv and install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CORPUS ?= examples

.PHONY: install lock system-deps test test-fast chaos demo lint docs format bench bench-million clean alerts-check

UV_VERSION ?= 0.13.8

# uv (from PyPI, into the venv) installs the same requirements as pip would, several times
# faster. It reads none of pip's configuration, so ops/uv_args.py hands it pip's wheel
# folders, extra indexes and constraints (the CPU torch wheel on a dev/CI disk is found
# there; without them uv would fetch the CUDA build). INSTALLER=pip uses pip alone.
# Versions come from requirements.lock (constraints: every package pinned; one the lock
# does not name, on another platform, is resolved from pyproject.toml's ranges).
# Bytecode is compiled at install (uv does not by default, and with PYTHONDONTWRITEBYTECODE
# set nothing ever writes it): without it every process compiles torch, transformers and
# Celery from source again, about 5 s before a worker's first unit.
INSTALLER ?= uv
EXTRAS ?= all,dev,docs
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
ifeq ($(INSTALLER),uv)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) \
		$$($(PY) ops/uv_args.py $(VENV)/bin/pip) -c requirements.lock -e '.[$(EXTRAS)]'
else
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -c requirements.lock \
		-e '.[$(EXTRAS)]'
endif
	$(PY) -m compileall -q -j 0 docbatch
	touch $@

# requirements.lock: every package of .[all,dev,docs] at one version, for Linux x86_64 and
# Python 3.11, resolved from the ranges in pyproject.toml under ops/lock-constraints.txt
# (torch 2.13.0). The CPU build's local tag (+cpu) is dropped, so the lock also installs
# where only PyPI's build is offered. Run after changing a dependency; commit the result.
lock: $(VENV)/bin/uv
	$(VENV)/bin/uv pip compile --quiet $$($(PY) ops/uv_args.py $(VENV)/bin/pip) \
		-c ops/lock-constraints.txt --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --extra all --extra dev --extra docs --extra otel \
		--custom-compile-command "make lock" pyproject.toml -o requirements.lock
	sed -i -E 's/^(torch==[0-9.]+)\+cpu$$/\1/' requirements.lock

$(VENV)/bin/uv:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

install: $(VENV)/.installed

# Non-Python packages the tests use (headless Chromium); idempotent, see the script.
system-deps:
	bash ops/system-deps.sh

# Needs PostgreSQL and Redis (DOCBATCH_TEST_DATABASE_URL / DOCBATCH_TEST_REDIS_URL,
# default: the local servers); see tests/conftest.py. PgBouncer (tests/test_pgbouncer.py)
# is unpacked from Debian's package into the venv (no service is installed or started).
test: install system-deps $(VENV)/bin/pgbouncer
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

# The tests that need no server (marked `fast`: chunking, batching plans, validation, text
# checks, detection, templates, handler reductions, encoders), in under a minute with no
# Postgres or Redis reachable; tests/conftest.py sets the servers up only for the others.
test-fast: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m fast $(PYTEST_ARGS)

# The fault run (tests/test_chaos.py) with CHAOS_RUNS fresh seeds, one line per seed (also
# in test-artifacts/chaos.log); `make test` runs one seed. Replay one:
# DOCBATCH_CHAOS_SEED=N make chaos.
CHAOS_RUNS ?= 5
chaos: install
	@mkdir -p test-artifacts && rm -f test-artifacts/chaos.log
	@HF_HUB_OFFLINE=1 DOCBATCH_CHAOS_RUNS=$(CHAOS_RUNS) $(PY) -m pytest -q -p no:cacheprovider \
		tests/test_chaos.py; status=$$?; echo; cat test-artifacts/chaos.log; exit $$status

# The whole system in one process group on the embedded default (SQLite + filesystem
# broker): no servers needed.
demo: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/docbatch run $(CORPUS)/stdlib-docs.jsonl \
		--task tags --task summarize -o demo-results.jsonl
	@head -n 3 demo-results.jsonl | $(PY) -c 'import json,sys; \
	[print(json.dumps({"custom_id": d["custom_id"], \
	"tags": [t["label"] for t in d["results"]["tags"]["output"]["tags"]], \
	"summary": d["results"]["summarize"]["output"]["summary"][:300]}, indent=2)) \
	for d in map(json.loads, sys.stdin)]'

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy -p docbatch

# The documentation site into site/ (mkdocs.yml). --strict: a broken link or anchor, or a
# page missing from the nav, fails the build. The CLI, REST, settings and metrics pages
# are generated from the code at build time (docs/gen/hooks.py).
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# Every throughput figure, as ratios measured side by side in one run (bench/run.py):
# starts and stops its own api and workers on a fresh database and Redis db index.
# `make bench BENCH_ARGS="--device cuda"` on a GPU machine; see BENCHMARKS.md.
bench: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m bench.run $(BENCH_ARGS)

# One job of a million documents beside a 100,000-document one (about half an hour).
bench-million: install
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m bench.million $(BENCH_ARGS)

# The fleet list ops/deployments.yaml -> Compose's worker services (docker-compose.yml,
# docker-compose.cpu.yml, the Prometheus targets) and Kubernetes' worker Deployments, KEDA
# ScaledObjects and the docbatch-deployments ConfigMap; then every overlay is rendered
# (kubectl kustomize) and each object validated offline against the Kubernetes and KEDA
# schemas. manifests-check (CI) changes nothing: it fails when a file is stale or invalid.
manifests: install
	$(PY) ops/compose_workers.py
	$(PY) ops/k8s/generate.py
	$(PY) ops/k8s/validate.py

manifests-check: install
	$(PY) ops/compose_workers.py --check
	$(PY) ops/k8s/validate.py

# The alerts (ops/k8s/monitoring/prometheusrule.yaml) through Prometheus' own promtool:
# every rule parses, and the unit tests of ops/prometheus/alerts_test.yml fire each alert
# on its series (ops/prometheus/check_alerts.py). promtool is unpacked from Debian's
# prometheus package into the venv (no server is installed or started).
alerts-check: install $(VENV)/bin/promtool
	$(PY) ops/prometheus/check_alerts.py

$(VENV)/bin/promtool:
	bash ops/prometheus/install-promtool.sh $@

$(VENV)/bin/pgbouncer: | install
	bash ops/pgbouncer/install-pgbouncer.sh $@

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) test-artifacts .pytest_cache demo-results.jsonl .docbatch site
