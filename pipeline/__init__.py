"""winnow's pipeline core: documents, the stage contract, configs, the run folder and the runner.

The public API::

    from pipeline import load_config, Runner, RunFolder, StageFolder, Stage, StageContext, Decision, Document
"""
from pipeline.config import ConfigError, PipelineConfig, config_from_dict, load_config
from pipeline.document import Document
from pipeline.rundir import RunFolder, RunFolderError, RunInUse, StageFolder, StageNotRun
from pipeline.runner import Runner, StaleScoresError
from pipeline.stage import Decision, Stage, StageContext, register_stage

__all__ = ["ConfigError", "Decision", "Document", "PipelineConfig", "RunFolder", "RunFolderError", "RunInUse",
           "Runner", "Stage", "StageContext", "StageFolder", "StageNotRun", "StaleScoresError", "config_from_dict",
           "load_config", "register_stage"]
