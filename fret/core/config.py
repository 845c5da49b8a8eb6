"""Pipeline files: YAML (or TOML) validated by pydantic, with `--set dotted.key=value` overrides.

The model of a pipeline file is assembled from the stages its `pipeline:` kind lists: each
stage module owns the settings model of its own section. Every error is one line naming the
file and the dotted key (or the missing path), never a traceback.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Optional

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, create_model

from ..parts.llm.base import LLMSettings
from ..stages import PIPELINES, stage_class
from .errors import ConfigError
from .executor_settings import ExecutorSettings, check_stage_names
from .section import Section  # noqa: F401 (stages import it from here)


def _must_exist(path: Path) -> Path:
    if not Path(path).expanduser().exists():
        raise ValueError(f"path does not exist: {path}")
    return Path(path).expanduser()


ExistingPath = Annotated[Path, AfterValidator(_must_exist)]


class CacheSettings(Section):
    path: Optional[Path] = None  # default: RUN/_cache/llm.sqlite; share one across runs if you like
    enabled: bool = True


def parse_override(item: str) -> tuple[list[str], Any]:
    """'sample.size=16' -> (['sample', 'size'], 16). Values are read as YAML scalars/lists."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected dotted.key=value")
    key, _, raw = item.partition("=")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except (yaml.YAMLError, RecursionError):  # not YAML (or nested past the stack): the text as is
        value = raw
    return key.strip().split("."), value


def _step(node, key: str, item: str):
    """The child `key` of a mapping, or the element `int(key)` of a list (corpus.sources.0)."""
    if isinstance(node, list):
        if not key.isdigit() or int(key) >= len(node):
            raise ConfigError(f"--set {item!r}: {key!r} is not an index of a list of {len(node)}")
        return int(key)
    if not isinstance(node, dict):
        raise ConfigError(f"--set {item!r}: {key!r} is inside a value, not a section")
    return key


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            k = _step(node, k, item)
            if isinstance(node, dict) and node.get(k) is None:
                node[k] = {}
            node = node[k]
        node[_step(node, keys[-1], item)] = value
    return data


def read_file(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"pipeline file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: "
                          f"{str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def describe_error(source: str, exc: ValidationError) -> str:
    """One line per problem: 'fret.yaml: rerank.rrf_k: Input should be a valid integer (got 'x')'."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and not isinstance(err["input"], dict):
            msg += f" (got {err['input']!r})"
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def pipeline_model(kind: str, stage_names: list[str], settings_of) -> type[BaseModel]:
    fields: dict[str, Any] = {
        "pipeline": (str, kind),
        "seed": (int, 0),
        "llm": (LLMSettings, LLMSettings()),
        "cache": (CacheSettings, CacheSettings()),
        "executor": (ExecutorSettings, ExecutorSettings()),
    }
    for name in stage_names:
        model = settings_of(name)
        fields[name] = (model, model())
    return create_model(f"{kind.title()}Pipeline", __config__=ConfigDict(extra="forbid"), **fields)


def load_pipeline(path: Path, overrides: list[str] = ()) -> BaseModel:
    data = apply_overrides(read_file(path), list(overrides))
    kind = data.get("pipeline")
    if not isinstance(kind, str) or kind not in PIPELINES:
        raise ConfigError(f"{path}: pipeline: expected one of {sorted(PIPELINES)} (got {kind!r})")
    model = pipeline_model(kind, PIPELINES[kind], lambda name: stage_class(kind, name).Settings)
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_error(str(path), exc)) from None
    unknown = check_stage_names(config.executor, list(PIPELINES[kind]), str(path))
    if unknown:
        raise ConfigError("\n".join(unknown))
    return config


def config_from_dict(data: dict) -> BaseModel:
    """A resolved pipeline (`config.model_dump(mode="json")`) back into its model: how a Ray
    worker gets the driver's settings without the pipeline file."""
    kind = data["pipeline"]
    model = pipeline_model(kind, PIPELINES[kind], lambda name: stage_class(kind, name).Settings)
    return model.model_validate(data)
