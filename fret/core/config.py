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


def _parse(path: Path, text: str):
    """The settings tree of a file's text; a syntax error names the line and column."""
    try:
        return tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:  # 'fret.yaml:12:5: not valid YAML: ...'
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError(f"{where}: not valid YAML: {' '.join(problem.split())}") from None
    except tomllib.TOMLDecodeError as exc:  # its message ends '(at line 2, column 1)'
        raise ConfigError(f"{path}: not valid TOML: {str(exc).splitlines()[0]}") from None
    except (yaml.YAMLError, RecursionError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "YAML"
        why = str(exc).splitlines()[0] if str(exc) else "nested too deeply"
        raise ConfigError(f"{path}: not valid {kind}: {why}") from None


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line (1-based) of each dotted key of a YAML text: {('sample', 'size'): 24, ...}.

    key_lines('a:\n  b: 1\n') -> {('a',): 1, ('a', 'b'): 2}; {} for text that is not YAML."""
    try:
        root = yaml.compose(text)
    except (yaml.YAMLError, RecursionError):
        return {}
    lines: dict[tuple[str, ...], int] = {}
    todo = [((), root)]
    while todo:
        prefix, node = todo.pop()
        if isinstance(node, yaml.MappingNode):
            items = [(k.value, k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]
        elif isinstance(node, yaml.SequenceNode):
            items = [(str(i), v, v) for i, v in enumerate(node.value)]
        else:
            continue
        for key, at, value in items:
            lines[(*prefix, key)] = at.start_mark.line + 1
            todo.append(((*prefix, key), value))
    return lines


def read_file(path: Path) -> dict:
    return _read(path)[0]


def _read(path: Path) -> tuple[dict, dict]:
    """(settings tree, line of each dotted key) of a pipeline file."""
    if not path.is_file():
        raise ConfigError(f"pipeline file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    data = _parse(path, text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data, ({} if path.suffix == ".toml" else key_lines(text))


class Origin:
    """Where a setting's value came from: a `--set` item, a line of the pipeline file, or the
    default. Origin(path, {}, ['sample.size=0']).of(('sample', 'size')) -> '--set sample.size=0'"""

    def __init__(self, path: Path, lines: dict, overrides: list[str]):
        self.path, self.lines = path, lines
        self.sets = [(tuple(k.strip() for k in item.partition("=")[0].split(".")), item)
                     for item in overrides]

    def of(self, loc: tuple) -> str:
        loc = tuple(str(k) for k in loc)
        for keys, item in reversed(self.sets):  # the last --set of a key wins
            n = min(len(keys), len(loc))
            if keys[:n] == loc[:n]:
                return f"--set {item}"
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.lines:
                return f"{self.path}, line {self.lines[loc[:end]]}"
        return f"{self.path}, by default"

    def line(self, loc: tuple, message: str) -> str:
        """'sample.size: must be >= 1 (got 0) (from --set sample.size=0)'"""
        key = ".".join(str(k) for k in loc) or "(top level)"
        return f"{key}: {message} (from {self.of(loc)})"


def describe_error(origin: "Origin", exc: ValidationError) -> str:
    """One line per problem: 'rerank.rrf_k: Input should be a valid number (got 'x') (from --set rerank.rrf_k=x)'."""
    lines = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and not isinstance(err["input"], dict):
            msg += f" (got {err['input']!r})"
        lines.append(origin.line(err["loc"], msg))
    return "\n".join(dict.fromkeys(lines))


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
    return load_pipeline_with_origin(path, overrides)[0]


def load_pipeline_with_origin(path: Path, overrides: list[str] = ()) -> tuple[BaseModel, Origin]:
    """The validated settings of a pipeline file with `--set` items, and where each came from.
    Every problem is reported at once, one line each, naming the key and its origin."""
    path = Path(path)
    data, lines = _read(path)
    origin = Origin(path, lines, list(overrides))
    data = apply_overrides(data, list(overrides))
    kind = data.get("pipeline")
    if not isinstance(kind, str) or kind not in PIPELINES:
        raise ConfigError(origin.line(("pipeline",), f"expected one of {sorted(PIPELINES)} (got {kind!r})"))
    model = pipeline_model(kind, PIPELINES[kind], lambda name: stage_class(kind, name).Settings)
    try:
        config = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_error(origin, exc)) from None
    unknown = check_stage_names(config.executor, list(PIPELINES[kind]), str(path))
    if unknown:
        raise ConfigError("\n".join(unknown))
    return config, origin


def config_from_dict(data: dict) -> BaseModel:
    """A resolved pipeline (`config.model_dump(mode="json")`) back into its model: how a Ray
    worker gets the driver's settings without the pipeline file."""
    kind = data["pipeline"]
    model = pipeline_model(kind, PIPELINES[kind], lambda name: stage_class(kind, name).Settings)
    return model.model_validate(data)
