# Set up a fresh machine and run llc: `make demo` or `make test` (each creates .venv first);
# `make lint` runs ruff and mypy, `make docs` builds the documentation site into site/.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_NUM_THREADS ?= 1

.PHONY: install demo test lint bench package docs clean

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

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install
	$(PY) -m bench

# The packaged artifact: builds the wheel and the sdist into dist/, installs the wheel with the
# torch extra into a clean venv (the verified pins as constraints) and runs `llc demo` from
# outside the checkout, then installs the sdist over it and imports it.
PKG_VENV ?= /tmp/llc-package-venv
package: install
	rm -rf dist $(PKG_VENV)
	$(PY) -m build --no-isolation --outdir dist .
	sed 's/\[[^]]*\]//' requirements.txt > dist/constraints.txt
	$(PYTHON) -m venv $(PKG_VENV)
	$(PKG_VENV)/bin/pip install --quiet -c dist/constraints.txt "$$(ls dist/*.whl)[torch]"
	cd /tmp && $(PKG_VENV)/bin/llc --version && $(PKG_VENV)/bin/llc demo --backend torch --no-progress
	$(PKG_VENV)/bin/pip install --quiet --no-deps --force-reinstall dist/*.tar.gz
	cd /tmp && $(PKG_VENV)/bin/llc --version && $(PKG_VENV)/bin/python -c \
		"import llc.backends.torch, llc.problems; print('sdist: llc', llc.__version__, 'imports')"

# Documentation site: installs the docs-only pins into the same venv, builds into site/.
$(VENV)/.docs-installed: $(VENV)/.installed requirements-docs.txt
	$(PY) -m pip install --quiet -r requirements-docs.txt
	touch $@

docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) out build dist site *.egg-info
