"""Training a config's quality models (``winnow train-quality CONFIG``).

Each filter that needs a model owns its training (``Filter.train``, with its defaults in
``train_defaults``, as dolma's taggers own theirs); this module finds those filters among the
config's stages, brings the stages their training data comes from up to date with the runner,
then asks each filter to train. It sits on the experiments floor because it runs the pipeline:
nothing in ``filters/`` ever does.
"""
from __future__ import annotations

from pathlib import Path

from filters.base import Filter, TrainContext
from filters.stage import FilterStage
from pipeline.config import ConfigError, PipelineConfig
from pipeline.rundir import RunFolder
from pipeline.runner import Runner


def trainable_filters(cfg: PipelineConfig) -> list[tuple[str, Filter]]:
    """``(stage name, filter)`` for every filter of the config that trains a model, in config order."""
    found = []
    for spec in cfg.stages:
        stage = cfg.stage_object(spec)
        if isinstance(stage, FilterStage):
            found += [(spec["name"], f) for f in stage.filters if f.trainable()]
    return found


def missing_models(cfg: PipelineConfig) -> list[str]:
    """Model files the config's trainable filters name that do not exist yet."""
    return [p for _, f in trainable_filters(cfg) for p in f.model_files() if not Path(p).exists()]


def train_quality(cfg: PipelineConfig, only: str | None = None, log=print) -> list[dict]:
    """Bring the stages the training data comes from up to date, then train every model (or only filter ``only``)."""
    found = trainable_filters(cfg)
    if only is not None:
        if only not in {f.name for _, f in found}:
            names = ", ".join(sorted({f.name for _, f in found})) or "none"
            raise ConfigError(f"--only {only}: no trainable filter of that name in {cfg.path or 'this config'} "
                              f"(trainable filters here: {names})")
        found = [(s, f) for s, f in found if f.name == only]
    if not found:
        raise ConfigError(f"{cfg.path or 'this config'}: no filter that trains a model (e.g. quality_classifier, "
                          f"ref_perplexity, quality_combined)")
    names = cfg.stage_names()
    needed = [names[0]]
    for stage, f in found:
        for src in f.training_stages():
            if src not in names:
                raise ConfigError(f"{f.name} in stage {stage}: its training reads stage {src!r}, which is not a "
                                  f"stage of this config ({', '.join(names)})")
            if names.index(src) >= names.index(stage):
                raise ConfigError(f"{f.name} in stage {stage}: its training data (stage {src}) must come from an "
                                  f"earlier stage")
            needed.append(src)
    Runner(cfg, progress=False).run(upto=max(needed, key=names.index))
    run = RunFolder(cfg.run_dir)
    return [f.train(TrainContext(run=run, raw_stage=names[0], stage=stage, log=log)) for stage, f in found]
