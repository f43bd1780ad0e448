# phi_jax: `make run` runs the whole pipeline on the embedded default (configs/tiny.py,
# CPU); `make test` runs the test suite. Both create the virtualenv .venv when missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
ARGS ?=
PYTEST_ARGS ?=

.PHONY: venv run test test-slow test-all bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(RUN_STAMP): requirements.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(TEST_STAMP): requirements.txt requirements-test.txt | $(PY)
	$(PY) -m pip install -q -r requirements-test.txt
	touch $(RUN_STAMP) $@

venv: $(RUN_STAMP)

run: $(RUN_STAMP)
	$(PY) run.py $(ARGS)

# The CI suite: everything not marked slow.
test: $(TEST_STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(TEST_STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-all: $(TEST_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(TEST_STAMP)
	$(PY) bench/generate.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
