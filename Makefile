# segtutor: the two commands are `make book` and `make test`; both set up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.segtutor-installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help setup book chapter test unit notebooks lab serve bench visdom-assets browser clean

help:
	@echo "make book        build the book into _build/html, every chapter executed"
	@echo "make test        run the unit tests and execute every chapter in quick mode"
	@echo "make unit        only the unit tests (no chapters)"
	@echo "make notebooks   write .ipynb copies of the chapters to notebooks/"
	@echo "make lab         JupyterLab on $(HOST) with the .md chapters opening as notebooks"
	@echo "make serve       serve _build/html on http://$(HOST):$(PORT)"
	@echo "make bench       run the benchmarks (ratios measured side by side)"

setup: $(STAMP)

# One install, remembered by a stamp; it is redone when requirements.txt or pyproject.toml change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# visdom 0.2.4 is an sdist whose setup.py imports pkg_resources (gone from setuptools>=81):
	# build it without isolation against an older setuptools, in a step of its own.
	$(BIN)/python -m pip install "setuptools<81" wheel
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-build-isolation "visdom==0.2.4" "tornado>=6.3,<6.6"
	$(BIN)/python -m pip install --no-build-isolation --no-deps -e .
	$(BIN)/python -c "import torch, torchvision, visdom, segtutor; print('segtutor', segtutor.__version__, '| torch', torch.__version__, '| torchvision', torchvision.__version__, '| visdom ok')"
	$(MAKE) --no-print-directory visdom-assets || echo "warning: visdom's web assets could not be fetched (is npm installed?); live visdom is off, its offline log still works"
	touch $(STAMP)

# visdom's server fetches its JavaScript/MathJax from CDNs on first start and exits offline;
# take the same versions from the npm registry instead (idempotent: checks the files first)
visdom-assets:
	$(BIN)/python -m segtutor.monitor.assets

# Debian chromium for the headless-browser tests; never fails the build (they skip without it)
browser:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
	    || echo "note: chromium could not be installed; the headless-browser tests will be skipped"; \
	else echo "note: no chromium and no usable apt-get; the headless-browser tests will be skipped"; fi

# scripts/build_book.py runs `jupyter-book build . -W -n --keep-going`, drops the execution cache
# when segtutor/ changed, and prints each chapter's execution time.
book: setup
	$(BIN)/python scripts/build_book.py
	@echo "The book is in _build/html/index.html"

# one chapter alone, quick mode, into /tmp: make chapter CH=book/intro.md
chapter: setup
	$(BIN)/python scripts/build_book.py --quick --chapter $(CH)

test: setup browser
	$(BIN)/python -m pytest

unit: setup
	$(BIN)/python -m pytest -m "not book"

notebooks: setup
	mkdir -p notebooks
	for f in $$(find book -name '*.md' -not -path '*/.ipynb_checkpoints/*'); do \
	  out=notebooks/$${f#book/}; out=$${out%.md}.ipynb; mkdir -p $$(dirname $$out); \
	  $(BIN)/jupytext --to ipynb --output $$out $$f || exit 1; \
	done
	@echo "Notebooks are in notebooks/ (open them in Jupyter or upload to Colab)"

# .jupyter/labconfig makes "Jupytext Notebook" the default viewer of Markdown, so a double click
# opens a chapter as a notebook (JupyterLab alone opens .md files as text).
lab: setup
	$(BIN)/python -m pip install -q "jupyterlab>=4.1,<5"
	JUPYTER_CONFIG_PATH=$(CURDIR)/.jupyter $(BIN)/jupyter lab --ip=$(HOST) --notebook-dir=. \
	  --ServerApp.default_url=/lab/tree/book/intro.md $$([ "$$(id -u)" = 0 ] && echo --allow-root)

serve:
	@test -f _build/html/index.html || { echo "no _build/html yet: run 'make book' first"; exit 2; }
	$(PYTHON) -m http.server $(PORT) --bind $(HOST) --directory _build/html

bench: setup
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf _build _build_quick notebooks runs .pytest_cache
