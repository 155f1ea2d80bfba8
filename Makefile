.PHONY: setup run demo test bench
SHELL := /bin/bash

setup:
	@bash scripts/setup.sh

# The main job on the embedded default (../shared's ResNet18 and CIFAR-10, or $$QDEPLOY_SHARED).
run: setup
	.venv/bin/qdeploy run --variants default,seed-lab5,dynamic --out runs/r18

test: setup
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python bench/pipeline_table.py
