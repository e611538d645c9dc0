# actormux: two entry points on a fresh machine.
#   make demo  - set up .venv, simulate 250 actors on 8 workers, then (as root on Linux)
#                run the same on real gVisor sandboxes and print both side by side
#   make test  - set up .venv with test tools, run lint, type checks and the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: demo test lint typecheck pytest test-ray bench clean venv lock kind-up kind-down kind-bench gke-up gke-down gke-bench

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "actormux needs Python 3.11, found " + sys.version.split()[0] + " (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)

# Stamps re-run the install when pyproject.toml or the lock changes. Every install takes
# its versions from requirements.lock (constraints: the same numbers on every machine).
LOCK := requirements.lock
RAY_LOCK := requirements-ray.lock

$(VENV)/.runtime: pyproject.toml $(LOCK) | $(BIN)/python
	$(PIP) install -q -c $(LOCK) -e .
	@touch $@

$(VENV)/.dev: pyproject.toml $(LOCK) | $(BIN)/python
	$(PIP) install -q -c $(LOCK) -e '.[dev]'
	@touch $@ $(VENV)/.runtime

# Sweeps on Ray (hydra/launcher=ray) get a venv and a lock of their own: the launcher
# pins cloudpickle 2.2.1, which the joblib of the main lock refuses.
RAY_VENV := .venv-ray
$(RAY_VENV)/.ray: pyproject.toml $(RAY_LOCK)
	$(PYTHON) -m venv $(RAY_VENV)
	$(RAY_VENV)/bin/python -m pip install -q -c $(RAY_LOCK) -e '.[ray]'
	@touch $@

$(VENV)/.bench: pyproject.toml $(LOCK) | $(VENV)/.dev
	$(PIP) install -q -c $(LOCK) -e '.[dev,bench]'
	@touch $@

# Regenerate the lock from pyproject.toml (pip-tools in a throwaway venv).
lock:
	rm -rf /tmp/actormux-lock && $(PYTHON) -m venv /tmp/actormux-lock
	/tmp/actormux-lock/bin/python -m pip install -q pip-tools
	head -5 $(LOCK) > /tmp/actormux-lock/header
	tail -n +6 $(LOCK) > /tmp/actormux-lock/requirements.lock  # keep today's pins
	/tmp/actormux-lock/bin/pip-compile -q --extra dev --extra gcs --extra notebooks \
		--extra bench \
		--strip-extras --no-emit-index-url --no-emit-find-links --unsafe-package actormux \
		-o /tmp/actormux-lock/requirements.lock pyproject.toml
	cat /tmp/actormux-lock/header /tmp/actormux-lock/requirements.lock \
		| sed 's|/tmp/actormux-lock/requirements.lock|requirements.lock|' > $(LOCK)
	rm -f /tmp/actormux-lock/ray.lock
	if [ -f $(RAY_LOCK) ]; then tail -n +6 $(RAY_LOCK) > /tmp/actormux-lock/ray.lock; fi
	/tmp/actormux-lock/bin/pip-compile -q --extra ray \
		--strip-extras --no-emit-index-url --no-emit-find-links --unsafe-package actormux \
		-o /tmp/actormux-lock/ray.lock pyproject.toml
	cat /tmp/actormux-lock/header /tmp/actormux-lock/ray.lock \
		| sed 's|/tmp/actormux-lock/ray.lock|requirements-ray.lock|' > $(RAY_LOCK)

venv: $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(BIN)/actormux experiment=oversub_250_on_8
	$(BIN)/python -m experiments.real.demo

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy

# The tests that need no real sandbox, server or Locust run on both cores; then the real
# ones in two lanes at once: gVisor sandboxes one at a time (their timing and their
# backend instance need the machine; with them the `serial` tests, racy under load),
# and beside them the real servers, Locust and processes that use little CPU (their
# output follows).
# The Ray sweep test runs in that lane too, in its own venv (installed meanwhile).
LANE2_LOG = .pytest-servers.log
pytest: $(VENV)/.dev
	$(BIN)/pytest -m "not real" -n 2 --durations=10
	{ $(BIN)/pytest -m "real and not gvisor and not serial and not ray" -p no:cacheprovider \
	    --durations=5 && $(MAKE) --no-print-directory test-ray; } \
	  > $(LANE2_LOG) 2>&1 & \
	  servers=$$!; \
	  $(BIN)/pytest -m "real and (gvisor or serial)" --durations=25; sandboxes=$$?; \
	  wait $$servers; second=$$?; \
	  echo "---- real servers, Locust and processes (ran beside the gVisor tests) ----"; \
	  cat $(LANE2_LOG); rm -f $(LANE2_LOG); \
	  test $$sandboxes -eq 0 && test $$second -eq 0

test: lint typecheck pytest

# Hydra's Ray launcher against a Ray cluster the test starts in a network namespace.
test-ray: $(RAY_VENV)/.ray
	$(RAY_VENV)/bin/pytest tests/test_ray_sweeps.py -m ray -p no:cacheprovider --durations=5

bench: $(VENV)/.bench
	$(BIN)/python benchmarks/sim_speed.py
	$(BIN)/python benchmarks/simfaas_compare.py
	$(BIN)/python benchmarks/activation.py
	$(BIN)/python benchmarks/agent_activation.py
	$(BIN)/python benchmarks/agent_activation.py --s3

# Clusters (need docker, kind or gcloud, and kubectl; see README "Clusters").
kind-up:
	backends/kind/up.sh

kind-down:
	backends/kind/down.sh

# After kind-up: `actormux bench real backend=kind` as a Job in the cluster, results
# and plots in reports/bench/kind (BENCH_OVERRIDES="backend.duration_s=60" to change).
kind-bench: $(VENV)/.runtime
	backends/kube/bench.sh reports/bench/kind $(BENCH_OVERRIDES)
	$(BIN)/actormux bench-report reports/bench/kind/real-kind.jsonl --out-dir reports/bench/kind


gke-up:
	backends/gke/up.sh

gke-down:
	backends/gke/down.sh

gke-bench: $(VENV)/.runtime
	backends/kube/bench.sh reports/bench/gke $(BENCH_OVERRIDES)
	$(BIN)/actormux bench-report reports/bench/gke/real-gke.jsonl --out-dir reports/bench/gke

clean:
	rm -rf $(VENV) $(RAY_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
