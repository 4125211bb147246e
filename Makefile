# vaejax: `make install` sets up .venv; `make test` runs the suite (installing
# first when .venv is missing or older than pyproject.toml).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable '.[dev]'
	touch $(STAMP)

# float32 suite, then the float64 numerics in their own process.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m pytest --x64 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
