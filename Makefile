# phi_jax: `make run` runs the whole pipeline on the embedded default (configs/tiny.py,
# CPU); `make test` runs the test suite. Both create the virtualenv .venv when missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
ARGS ?=
PYTEST_ARGS ?=

.PHONY: venv sandbox-deps test-deps run serve test test-slow test-all bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# The same pins `pip install ".[data]"` installs (pyproject.toml reads these files); the
# checkout runs from its root (run.py), so nothing is installed as a package here.
$(RUN_STAMP): requirements.txt requirements-data.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt -r requirements-data.txt
	touch $@

# Tests also compile for GPUs and TPUs without them: triton, XLA's CUDA compiler and
# libtpu go into their own directories, off the venv's path (see those requirements files).
$(TEST_STAMP): requirements.txt requirements-data.txt requirements-test.txt requirements-triton.txt \
               requirements-cuda-compile-only.txt requirements-tpu-compile-only.txt | $(PY)
	$(PY) -m pip install -q -r requirements-test.txt
	$(PY) -m pip install -q --no-deps --upgrade --target $(VENV)/triton -r requirements-triton.txt
	$(PY) -m pip install -q --no-deps --upgrade --target $(VENV)/cuda-compile-only \
	  -r requirements-cuda-compile-only.txt
	$(PY) -m pip install -q --no-deps --upgrade --target $(VENV)/tpu-compile-only \
	  -r requirements-tpu-compile-only.txt
	touch $(RUN_STAMP) $@

venv: $(RUN_STAMP)

# The evaluation sandbox uses bubblewrap when it is installed (Debian/Ubuntu package
# `bubblewrap`); as root with apt it is installed here, otherwise the sandbox falls back
# to unshare + rlimits and says so in every report.
sandbox-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing bubblewrap (evaluation sandbox)"; \
	    apt-get update -qq >/dev/null && apt-get install -y -qq bubblewrap >/dev/null; \
	  else \
	    echo "note: bubblewrap (bwrap) is not installed: the evaluation sandbox falls back to unshare/rlimits"; \
	  fi; }

# What the tests need beyond Python, as Debian packages, installed as root with apt
# (elsewhere the tests that need one fail naming it): the toolchains of MultiPL-E's
# languages (eval/languages.py; docs/benchmarks.md) and Chromium for the report's
# browser test (docs/report.md).
test-deps:
	@missing=""; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v g++ >/dev/null 2>&1 || missing="$$missing g++"; \
	{ command -v javac >/dev/null 2>&1 && command -v java >/dev/null 2>&1; } || missing="$$missing default-jdk-headless"; \
	test -f /usr/share/java/javatuples.jar || missing="$$missing libjavatuples-java"; \
	command -v go >/dev/null 2>&1 || missing="$$missing golang-go"; \
	test -x /usr/bin/rustc -o -x /usr/local/bin/rustc || missing="$$missing rustc"; \
	command -v bash >/dev/null 2>&1 || missing="$$missing bash"; \
	{ command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; } || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing what the tests need:$$missing"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "note: missing Debian packages the tests need:$$missing; their tests fail"; \
	  fi; fi

run: $(RUN_STAMP) sandbox-deps
	$(PY) run.py $(ARGS)

# The OpenAI-compatible server: make serve ARGS="--checkpoint=workdir/tiny/init/checkpoints"
serve: $(RUN_STAMP)
	$(PY) -m phi_jax.serve $(ARGS)

# The CI suite: everything not marked slow.
test: $(TEST_STAMP) sandbox-deps test-deps
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(TEST_STAMP) sandbox-deps test-deps
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

test-all: $(TEST_STAMP) sandbox-deps test-deps
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(TEST_STAMP) sandbox-deps
	$(PY) bench/generate.py $(ARGS)
	$(PY) bench/eval.py
	$(PY) bench/train.py
	$(PY) bench/data.py
	$(PY) bench/serve.py  # continuous vs static batching at 16 clients (alternated)
	$(PY) bench/pacing.py  # the LLM client's pacing to rate limits, in real time (about a minute)
	$(PY) bench/attention.py  # times the accelerator kernels; on CPU it says what it skips
	$(PY) bench/triton_resources.py  # registers/spills/shared memory of the GPU kernels (no GPU needed)

clean-venv:
	rm -rf $(VENV)
