# Two commands set everything up on a fresh machine with python3 and make:
#   make demo   -- a short run of every task, with a speed table
#   make test   -- the test suite
# Both create .venv on first use and refresh it when pyproject.toml or
# requirements.lock change.

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c requirements.lock -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python -m experiments.bench_envs --quick

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python -m experiments.bench_envs

clean:
	rm -rf $(VENV) .pytest_cache
