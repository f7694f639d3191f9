# The two commands of the README. Both set up what is missing first (scripts/setup.sh) and are
# fast the second time.
.PHONY: run test setup lint

VENV := .venv/bin

setup:
	@scripts/setup.sh

## Main job: bring the bundled system up natively, verify the edge answers, stop everything.
run: setup
	$(VENV)/preflight up --check

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy

## Whole test suite, lint and types included.
test: lint
	$(VENV)/pytest
