# The two commands of the README, plus helpers. Each target bootstraps .venv/ first.
PY := .venv/bin/python

.PHONY: setup demo test test-fast lint

setup:
	@bash tools/bootstrap.sh

demo: setup  ## the main job: synthetic scenario -> bag -> ROS 2 scenario -> summary
	.venv/bin/revqom demo --out out/demo

test: setup  ## the whole suite, slow multi-process and training tests included (as CI)
	$(PY) -m pytest

test-fast: setup  ## skip the tests marked slow
	$(PY) -m pytest -m "not slow"

lint: setup
	.venv/bin/ruff check revqom_nodes tests
