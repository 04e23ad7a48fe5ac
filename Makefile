# Two commands on a fresh machine: `make demo` (convert + a short fine-tuning of the embedded model) and `make test`.
# Each creates the virtual environment in .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sdm-convert --out out/demo --analog-sites 'down_blocks.0.resnets.0.*' --finetune-steps 250

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check sdm convert calibration tests benchmarks examples

clean:
	rm -rf out .pytest_cache
