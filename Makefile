# `make test` and `make reproduce` each build .venv on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# raw datasets: a local offline copy when there is one, else data/ (filled by the pipeline)
export SPARSELM_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(abspath data))
SCALE ?= tiny
# rule shell commands call `python`: the one in .venv
export PATH := $(abspath $(VENV))/bin:$(PATH)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: venv test lint reproduce publish-reports bench clean

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# The main job: the SPDF study at the default scale (tables, figures, results/reports/spdf.md).
reproduce: $(STAMP)
	$(VENV)/bin/snakemake --cores all --profile pipelines/profiles/local reproduce_spdf \
		--config scale=$(SCALE) data_dir=$(SPARSELM_DATA_DIR)

# Copy the generated tiny reports over the committed reference ones in reports/.
publish-reports: $(STAMP)
	$(PY) -m analysis.publish_reports

lint: $(STAMP)
	$(PY) -m ruff check src analysis tests benchmarks tools
	$(PY) -m ruff format --check src analysis tests benchmarks tools

bench: $(STAMP)
	$(PY) benchmarks/cpu_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
