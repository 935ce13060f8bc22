# hydravit-edge: `make demo` runs the main job end to end, `make test` runs the tests.
# Both create .venv on first use and install everything they need into it.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: all test test-slow demo install clean

# Kotlin policy module of the Android demo (kotlinc + JUnit 5, installed when missing).
include mk/kotlin.mk

all: test

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP) kotlin-deps
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadgroup --durations=15 $(PYTEST_ARGS)

# Full-size checks (DeiT-B scale); minutes on 2 cores.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/hydravit-edge demo --all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .kotlin-build
