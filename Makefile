# Two entry points: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nmrlight demo

test: $(STAMP)
	$(PY) -m pytest -q -x -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check nmrlight tests

bench: $(STAMP)
	$(VENV)/bin/nmrlight bench

clean:
	rm -rf $(VENV) build *.egg-info
