.PHONY: setup demo run serve test test-fast bench load
SHELL := /bin/bash
SHARED ?= $(or $(QDEPLOY_SHARED),../shared)

setup:
	@bash scripts/setup.sh

# Main job on the embedded default: the whole pipeline on ../shared's ResNet18 and CIFAR-10
# (export, calibrate, quantize, evaluate on 10,000 images, bench, report -> runs/r18), then the web
# app on its output. Without ../shared, the app opens on the model bundled inside the package.
demo: setup
	@if [ -f "$(SHARED)/checkpoints/resnet18_cifar10.pth" ]; then \
	  .venv/bin/qdeploy run --out runs/r18 && .venv/bin/qdeploy serve runs/r18; \
	else \
	  echo "no $(SHARED): serving the bundled ResNet-20"; .venv/bin/qdeploy serve; \
	fi

run: setup
	.venv/bin/qdeploy run --out runs/r18

serve: setup
	.venv/bin/qdeploy serve

# Test workers (pytest-xdist): a test file runs whole on one worker, tests/distributed on one (tests/conftest.py).
JOBS ?= 2

# The whole suite (what .ci/run calls); the 15 slowest tests are listed at the end.
test: setup
	.venv/bin/python -m pytest -q -n $(JOBS) --durations=15

# The edit loop: every test that starts no server, browser, Ray cluster or venv, trains nothing and runs no
# whole pipeline (markers in pyproject.toml; docs/testing.md).
test-fast: setup
	.venv/bin/python -m pytest -q -n $(JOBS) -m "not slow" --durations=10

bench: setup
	.venv/bin/python bench/pipeline_table.py

load: setup
	.venv/bin/python bench/load_app.py
