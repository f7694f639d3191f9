# The two commands of the README. Both set up what is missing first (scripts/setup.sh) and are
# fast the second time.
.PHONY: run test setup lint

VENV := .venv/bin

setup:
	@scripts/setup.sh

## Main job: the release gate. Bring the bundled system up, decide every checklist item, write
## reports/<run-id>/ (report.html, junit.xml, record.json); exit 0 ready, 1 not ready, 2 error.
run: setup
	$(VENV)/preflight run

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy

## Whole test suite, lint and types included.
test: lint
	$(VENV)/pytest
