# Two entry points; both set up the machine first (idempotent, quick when done).
#   make train   short TGRPO run on LIBERO-Object with the CPU stand-in policy
#   make test    the whole test suite (ROS tests run in a private network namespace)
#   make test-loaded  the same while two busy processes load both cores (docs/testing.md)
#   make test-fast    the inner loop: the suite without the slow tests and the linters
SHELL := /bin/bash
ENV := . scripts/env.sh &&
PYTEST_ARGS ?=
# pytest-xdist workers (0: one process). Each worker has its own ROS domain inside the
# session's private network namespace (test/conftest.py, docs/testing.md).
PYTEST_WORKERS ?= 2
XDIST := -n $(PYTEST_WORKERS) --dist worksteal
# default | paper (the MuJoCo LIBERO's datasets were rendered with; docs/sim.md)
SIM_PROFILE ?= default
export SIM_PROFILE

.PHONY: setup train test test-loaded test-fast lint bench clean-runs

setup:
	@bash scripts/setup.sh

train: setup
	@$(ENV) tgrpo_launch --config config/train_sim.yaml --runs-root runs $(TRAIN_ARGS)

test: setup
	@$(ENV) python -m pytest $(XDIST) $(PYTEST_ARGS)

test-loaded: setup
	@bash scripts/test_loaded.sh $(XDIST) $(PYTEST_ARGS)

test-fast: setup
	@$(ENV) python -m pytest -m 'not slow and not linter' $(XDIST) $(PYTEST_ARGS)

lint: setup
	@$(ENV) python -m pytest -m linter $(PYTEST_ARGS)

bench: setup
	@$(ENV) for b in bench/*.py; do echo "== $$b"; python "$$b" || exit 1; done
