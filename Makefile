# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv (if missing) and installs the project into it first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lintel-installed

.PHONY: demo test lint bench clean check-extras

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lintel-demo

# Worker processes for the suite (pytest-xdist); TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# Fresh venvs of .[server], .[registry] and .[edge], each running its role's commands
# without the other stack (tests/install/check_extras.py; 76-157 s measured on 2 shared
# cores; needs PyPI for insightface and the model wheels).
check-extras: $(STAMP)
	$(PY) -m tests.install.check_extras

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
