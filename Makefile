# Two targets a new user needs: `make demo` (set up + run the main job on a bundled clip) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test

$(BIN)/m3cvc: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test,convert]'
	touch $(BIN)/m3cvc

setup: $(BIN)/m3cvc

demo: setup
	$(BIN)/m3cvc --version

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile
