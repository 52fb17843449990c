# Set up a fresh machine and run llc: `make demo` or `make test` (each creates .venv first);
# `make docs` builds the documentation site into site/.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 1

.PHONY: install demo test bench docs clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/llc demo --out out/demo

test: install
	$(PY) -m pytest -q -n 2

bench: install
	$(PY) -m bench

# Documentation site: installs the docs-only pins into the same venv, builds into site/.
$(VENV)/.docs-installed: $(VENV)/.installed requirements-docs.txt
	$(PY) -m pip install --quiet -r requirements-docs.txt
	touch $@

docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) out build site *.egg-info
