# The two set-up commands of the README: `make compare` and `make test`.
# Both create .venv on first use: torch 2.13.0 (CPU build) first, so that pip never
# resolves `torch>=2.4` to a multi-GB CUDA build, then the project with its test extras.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: compare test install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

compare: $(BIN)/.installed
	$(BIN)/descend compare

test: $(BIN)/.installed
	$(BIN)/python -m pytest -n 2 -q

clean:
	rm -rf $(VENV) runs
