"""Pipeline configuration: one YAML file names the inputs, the ordered stages
and each filter's parameters.

YAML is read with a ``yaml.SafeLoader`` that also refuses aliases (configs are
untrusted input; nested aliases expand a few hundred bytes into gigabytes).
Relative paths in the config are resolved against the config file's folder,
so a config runs the same from any working directory.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigProblem
from pipeline.params import ParamError, nearest, validate
from pipeline.shards import UnsafePathError, check_name
from pipeline.stage import Stage, build_stage, spec_key, stage_class


class ConfigError(ConfigProblem, ValueError):
    """A config file or value winnow cannot accept (exit code 3)."""


@dataclass
class PipelineConfig:
    path: Path | None
    run_dir: Path
    stages: list[dict[str, Any]]
    seed: int = 0
    workers: int = 1
    executor: str = "local"
    executor_options: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    #: Stage objects built when the config was loaded, by name: (spec key, stage).
    built: dict[str, tuple[str, Stage]] = field(default_factory=dict, repr=False, compare=False)

    def stage_object(self, spec: dict[str, Any]) -> Stage:
        """The stage for one of this config's specs, built once (rebuilt only if the spec was changed since)."""
        key = spec_key(spec)
        hit = self.built.get(spec["name"])
        if hit is None or hit[0] != key:
            hit = self.built[spec["name"]] = (key, build_stage(spec))
        return hit[1]

    def stage_names(self) -> list[str]:
        return [s["name"] for s in self.stages]

    def stage(self, name: str) -> dict[str, Any]:
        for s in self.stages:
            if s["name"] == name:
                return s
        raise self._no_stage(name)

    def upto(self, name: str | None) -> list[dict[str, Any]]:
        """Stages from the first up to and including ``name`` (all when None)."""
        if name is None:
            return list(self.stages)
        names = self.stage_names()
        if name not in names:
            raise self._no_stage(name)
        return self.stages[: names.index(name) + 1]

    def _no_stage(self, name: str) -> ConfigError:
        names = self.stage_names()
        return ConfigError(f"no stage named {name!r}{nearest(name, names)}; stages: {', '.join(names)}")


def _normalise_stage(entry: Any, index: int) -> dict[str, Any]:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict):
        raise ConfigError(f"stage #{index} must be a mapping or a name, got {type(entry).__name__}")
    entry = dict(entry)
    if "name" not in entry:
        raise ConfigError(f"stage #{index} has no `name`")
    try:  # the name becomes a folder under run_dir: no '/', '..' or absolute paths
        check_name(entry["name"])
    except UnsafePathError as e:
        raise ConfigError(f"stages[{index}].name: {e}") from None
    entry.setdefault("kind", entry["name"])
    return entry


#: Top-level config keys (values are defaults only for the nearest-name check).
TOP_LEVEL_KEYS = {"run_dir": None, "stages": None, "seed": 0, "workers": 1, "executor": "local",
                  "executor_options": None, "description": None, "experiment": None}


def _check_kinds(stages: list[dict]) -> None:
    """Every stage kind exists; only the first stage reads inputs."""
    for i, spec in enumerate(stages):
        try:
            cls = stage_class(spec["kind"])
        except KeyError as e:
            raise ConfigError(f"stage {spec['name']}: {e}") from None
        if cls.reads_inputs != (i == 0):
            raise ConfigError(f"stage {spec['name']}: " + (
                "the first stage must read the inputs (kind `ingest`, or another source stage)" if i == 0 else
                f"a source stage (kind `{spec['kind']}`) can only come first"))


def _build_stages(stages: list[dict]) -> dict[str, tuple[str, Stage]]:
    """Build every stage once (each checks its parameters); the runner uses these objects."""
    built = {}
    for spec in stages:
        try:
            built[spec["name"]] = (spec_key(spec), build_stage(spec))
        except (ValueError, TypeError, KeyError) as e:
            raise ConfigError(str(e) if str(e).startswith(("stage ", "filter ")) else f"stage {spec['name']}: {e}") from None
    return built


def _resolve_paths(stages: list[dict], base: Path) -> None:
    """Make input paths of the ingest stage absolute relative to the config file (``~`` is the home folder)."""
    for s in stages:
        inputs = s.get("inputs")
        for inp in inputs if isinstance(inputs, list) else []:
            if not isinstance(inp, dict):
                continue  # the stage's own check names the mistake
            for key in ("path", "data_dir", "data_files"):
                if key not in inp:
                    continue
                v = inp[key] = _home(inp[key])
                if isinstance(v, str) and not _looks_remote(v) and not Path(v).is_absolute():
                    inp[key] = str((base / v).resolve()) if (base / v).exists() or "*" in v else str(base / v)
        for key in ("model_path", "reference_path"):
            if key not in s:
                continue
            v = s[key] = _home(s[key])
            if isinstance(v, str) and not Path(v).is_absolute() and (base / v).exists():
                s[key] = str((base / v).resolve())
        filters = s.get("filters")
        for entry in filters if isinstance(filters, list) else []:
            if isinstance(entry, dict):
                for params in entry.values():
                    _resolve_filter_paths(params, base)


def _home(v: Any) -> Any:
    """A local path's leading ``~`` as the home folder (the one place config paths expand it); anything else as is."""
    return os.path.expanduser(v) if isinstance(v, str) and not _looks_remote(v) else v


def _resolve_filter_paths(params: Any, base: Path) -> None:
    """In filter parameters (and nested mappings and lists of mappings, e.g. a model's `train:` file
    lists), `path` and `*_path` values are relative to the config file, whether or not the file exists
    yet (a model `winnow train-quality` will write)."""
    if isinstance(params, list):
        for item in params:
            _resolve_filter_paths(item, base)
        return
    if not isinstance(params, dict):
        return
    for key, v in params.items():
        if isinstance(v, (dict, list)):
            _resolve_filter_paths(v, base)
        elif (key == "path" or key.endswith("_path")) and isinstance(v, str) and not _looks_remote(v):
            v = _home(v)
            params[key] = v if Path(v).is_absolute() else str((base / v).resolve())


def _whole_number(raw: dict, key: str, default: int, minimum: int) -> int:
    """An integer setting, as written: ``2.7``, ``true`` or ``"2"`` are refused, not rounded or coerced."""
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{key}: expected a whole number, got {v!r}")
    if v < minimum:
        raise ConfigError(f"{key}: expected a whole number >= {minimum}, got {v!r}")
    return v


def _looks_remote(v: str) -> bool:
    return "://" in v


#: Largest config file read, in bytes. A pipeline config is a few KB; PyYAML parses about 0.3 MB/s, so
#: this bounds the parse to about a second (a 10 MB YAML string took 33 s). Env: WINNOW_MAX_CONFIG_BYTES.
MAX_CONFIG_BYTES = int(os.environ.get("WINNOW_MAX_CONFIG_BYTES", 256 * 1024))
#: Deepest nesting of mappings and lists accepted (a real config nests about 6 levels; 20,000 overflowed
#: Python's stack).
MAX_CONFIG_DEPTH = 64


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases, duplicate keys and deep nesting.

    - Aliases (``*name``) let a few hundred bytes of nested references expand into gigabytes (a
      "billion laughs" document passes ``safe_load``); a config never needs them.
    - A key given twice in one mapping would silently keep the last value; it is an error naming
      the key and both lines.
    - Nesting deeper than :data:`MAX_CONFIG_DEPTH` is refused before the recursive composer
      overflows the stack.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"found alias *{event.anchor}: YAML aliases are not allowed in a config "
                f"(write the value out)", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_CONFIG_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_CONFIG_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: SafeLoader says so itself below
                    continue
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first on line {first.start_mark.line + 1}); "
                        f"a key may appear once in a mapping", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def safe_yaml_load(stream: Any) -> Any:
    """``yaml.safe_load`` without aliases, duplicate keys or deep nesting: the loader for every config."""
    return yaml.load(stream, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config: {e.strerror or e}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES:,} bytes; a pipeline config is a few KB "
                          f"(set WINNOW_MAX_CONFIG_BYTES to read a larger one)")
    try:
        raw = safe_yaml_load(data)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    return config_from_dict(raw, base=path.parent, path=path, overrides=overrides)


def config_from_dict(
    raw: Any, base: Path | None = None, path: Path | None = None, overrides: dict[str, Any] | None = None
) -> PipelineConfig:
    if not isinstance(raw, dict):
        raise ConfigError("config must be a YAML mapping")
    raw = copy.deepcopy(raw)
    for k, v in (overrides or {}).items():
        raw[k] = v
    base = Path(base or ".").resolve()
    try:
        validate("config", raw, TOP_LEVEL_KEYS, noun="top-level key")
    except ParamError as e:
        raise ConfigError(str(e)) from None
    if "stages" not in raw or not raw["stages"]:
        raise ConfigError("config needs a non-empty `stages` list")
    if not isinstance(raw["stages"], list):  # `stages: ingest` would be read letter by letter
        raise ConfigError(f"stages: expected a list of stages, got {type(raw['stages']).__name__} {raw['stages']!r}")
    stages = [_normalise_stage(e, i) for i, e in enumerate(raw["stages"])]
    names = [s["name"] for s in stages]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"stage names must be unique: {', '.join(sorted(dup))}")
    _check_kinds(stages)
    _resolve_paths(stages, base)
    built = _build_stages(stages)
    if not isinstance(raw.get("run_dir", ""), (str, Path)):
        raise ConfigError(f"run_dir: expected a folder path, got {type(raw['run_dir']).__name__}")
    if "run_dir" in raw and not str(raw["run_dir"]).strip():
        raise ConfigError("run_dir: empty; name a folder for this run")
    run_dir = Path(raw.get("run_dir", "runs/default")).expanduser()  # `~/runs/x`, not a folder named `~` here
    if not run_dir.is_absolute():
        run_dir = (base / run_dir).resolve()
    if run_dir == Path(run_dir.anchor) or run_dir == Path.home().resolve():
        raise ConfigError(f"run_dir: {run_dir} is a file-system root or your home folder; name a folder for this run")
    workers = _whole_number(raw, "workers", 1, minimum=1)
    seed = _whole_number(raw, "seed", 0, minimum=0)
    if not isinstance(raw.get("executor_options") or {}, dict):
        raise ConfigError(f"executor_options: expected a mapping (e.g. {{address: auto}}), got "
                          f"{type(raw['executor_options']).__name__}")
    executor = raw.get("executor", "local")
    if executor not in ("local", "ray"):
        raise ConfigError(f"executor must be `local` or `ray`, got {executor!r}")
    return PipelineConfig(
        path=path,
        run_dir=run_dir,
        stages=stages,
        seed=seed,
        workers=workers,
        executor=executor,
        executor_options=dict(raw.get("executor_options") or {}),
        raw=raw,
        built=built,
    )
