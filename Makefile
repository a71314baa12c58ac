# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

# Idempotent: re-runs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/driftax demo

test: install
	$(PY) -m pytest -q -n 2 --durations=15

# Peers for the benchmarks (OTT-JAX, regot) are optional extras.
bench: install
	-$(PY) -m pip install -q -e ".[bench]"
	$(VENV)/bin/driftax bench

clean:
	rm -rf $(VENV) driftax-demo .pytest_cache
