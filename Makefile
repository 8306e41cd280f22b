# Two entry points, as README promises: `make run` (install + web app) and `make test` (install + tests).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test test-fast lint bench browser-deps

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch 2.13.0 first: on this platform it resolves to a local CPU build; a bare "torch" would pull CUDA.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	touch $@

run: install
	$(VENV)/bin/dogbreed serve --host $(HOST) --port $(PORT)

# Debian's chromium drives the browser test; installed only when missing and we are root (CI is).
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	  else echo "chromium missing: run 'sudo apt-get install -y chromium' for the browser test"; fi; fi

lint: install
	$(VENV)/bin/ruff check src tests bench scripts

test: install browser-deps lint
	$(VENV)/bin/pytest

# The developer's lane (under a minute): no training, serving, benchmarks, real photos or browser.
# One module's tests: $(VENV)/bin/pytest tests/test_<module>.py (files are named after the modules they test).
test-fast: install
	$(VENV)/bin/pytest -m "not slow and not real and not browser" -q

bench: install
	$(PY) bench/speed.py
	$(PY) bench/accuracy.py
	$(PY) bench/dog_or_not.py
