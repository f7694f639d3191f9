# The two commands of the README. Both set up what is missing first (scripts/setup.sh) and are
# fast the second time.
.PHONY: run test setup lint lock

VENV := .venv/bin

setup:
	@scripts/setup.sh

## Main job: the release gate. Bring the bundled system up, decide every checklist item, write
## reports/<run-id>/ (report.html, junit.xml, record.json); exit 0 ready, 1 not ready, 2 error.
## RUN_ARGS passes options on, e.g. make run RUN_ARGS="--ci-junit test-results.xml".
run: setup
	$(VENV)/preflight run $(RUN_ARGS)

## Refresh uv.lock after a change to pyproject.toml; commit both. UPGRADE=1 moves every package
## to its newest release within pyproject's ranges (then run `make test` before committing).
lock:
	@scripts/uv.sh lock $(if $(UPGRADE),--upgrade)
	@scripts/image-requirements.sh

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy

## Whole test suite, lint and types included. The test files are spread over processes
## (pytest-xdist; a file's tests stay together, and each process has its own temp dir): most
## tests wait on servers they start, so this more than halves the wall time on 2 cores. The
## slowest 25 tests are listed at the end, to see where the time goes.
PYTEST_PROCESSES ?= 3
test: lint
	$(VENV)/pytest -n $(PYTEST_PROCESSES) --dist loadfile --durations=25
