"""Checks made before the first stage runs or the first model loads: the settings, paths, models,
templates and LLM backend a command is about to use. Every problem is found at once and reported
one line each, naming the key and where its value came from (a line of the file, or a `--set`).

What pydantic cannot see from one value alone is checked here: counts that must be at least 1,
prompt templates that must exist and compile, embedder and LLM model paths, the backend's name
and the package it needs. Pipeline-agnostic: it walks the settings of the stages to run.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel

from .config import Origin, load_pipeline_with_origin
from .errors import FretError

# Settings whose value counts something that must exist (0 or less would make an empty stage).
COUNTS = {"size", "top_n", "limit", "total", "max_attempts", "max_tokens", "passage_words",
          "requests_per_group", "tasks_per_request", "examples_per_task", "max_tasks_per_group",
          "concurrency", "mcls_window", "batch_tokens"}
COUNT_SUFFIXES = ("_size", "_per_shard", "_rows")
BACKEND_PACKAGES = {"openai": "openai", "vllm": "vllm"}  # backend -> the package it imports


def _leaves(node: Any, loc: tuple) -> Iterator[tuple[tuple, Any]]:
    """Every (dotted location, value) of a settings tree, containers included."""
    yield loc, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*loc, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, (*loc, str(i)))


def _is_count(key: str) -> bool:
    return key in COUNTS or key.endswith(COUNT_SUFFIXES)


def _template_problem(name: str) -> str | None:
    from ..parts.prompts import PromptError, _compile, find_template
    import jinja2
    try:
        path = find_template(name)
        _compile(path.read_text(encoding="utf-8"))
    except PromptError as exc:
        return str(exc)
    except jinja2.TemplateSyntaxError as exc:
        return f"template {name!r} does not compile: line {exc.lineno}: {exc.message}"
    except (OSError, UnicodeDecodeError) as exc:
        return f"template {name!r} cannot be read: {exc}"
    return None


def _model_problem(name: str, key: str) -> str | None:
    from ..parts.bundled import resolve_embedder
    try:
        resolve_embedder(name, key)
    except FretError as exc:
        return str(exc).removeprefix(f"{key} {name}: ")
    return None


def check_section(origin: Origin, name: str, section: BaseModel) -> list[str]:
    """Problems in one stage's settings section: counts, templates, embedder models."""
    problems = []
    for loc, value in _leaves(section.model_dump(mode="python"), (name,)):
        key = loc[-1]
        if _is_count(key) and isinstance(value, int) and not isinstance(value, bool) and value < 1:
            problems.append(origin.line(loc, f"must be at least 1 (got {value})"))
        elif isinstance(value, str) and (key == "template" or key.endswith("_template")
                                         or len(loc) > 2 and loc[-2] == "templates"):
            found = _template_problem(value)
            if found:
                problems.append(origin.line(loc, found))
        elif key == "model" and isinstance(value, str) and len(loc) == 2:
            found = _model_problem(value, ".".join(loc))
            if found:
                problems.append(origin.line(loc, f"{value}: {found}"))
    return problems


def check_llm(origin: Origin, settings) -> list[str]:
    """The backend's name, the package it needs, a local model path, the counts of `llm:`."""
    from ..parts.llm.base import BACKENDS
    problems = check_section(origin, "llm", settings)
    if settings.backend not in BACKENDS:
        problems.append(origin.line(("llm", "backend"), f"unknown backend {settings.backend!r}; "
                                    f"known: {', '.join(sorted(BACKENDS))}"))
        return problems
    package = BACKEND_PACKAGES.get(settings.backend)
    if package and importlib.util.find_spec(package) is None:
        problems.append(origin.line(("llm", "backend"), f"{settings.backend} needs the {package} "
                                    f"package: pip install {package}"))
    if settings.backend == "openai" and not settings.base_url:
        problems.append(origin.line(("llm", "base_url"), "the openai backend needs the server's "
                                    "address, e.g. http://localhost:8000/v1"))
    if settings.backend != "openai" and settings.model not in ("default", "", None):
        from ..parts.bundled import check_model_path
        try:
            check_model_path(settings.model, "llm.model",
                             needs=(settings.gguf_file or "config.json",))
        except FretError as exc:
            problems.append(origin.line(("llm", "model"), str(exc).removeprefix("llm.model ")))
    return problems


def check_pipeline(config: BaseModel, origin: Origin, stages: list[str], _depth: int = 0) -> list[str]:
    """Every problem in the settings of `stages` (and the LLM, if one of them asks it), and in the
    pipeline files of a recipe's sub-runs with their `overrides`."""
    from ..stages import stage_class
    problems: list[str] = []
    uses_llm = False
    for name in stages:
        cls = stage_class(config.pipeline, name)
        uses_llm |= cls.uses_llm
        section = getattr(config, name)
        problems += check_section(origin, name, section)
        sub = getattr(cls, "pipeline_file", None)
        if sub is not None and _depth < 3:
            problems += _check_subrun(name, sub(section), section.overrides, _depth)
    if uses_llm:
        problems += check_llm(origin, config.llm)
    return problems


def _check_subrun(name: str, path: Path, overrides: list[str], depth: int) -> list[str]:
    """A recipe's sub-run: its file with its overrides, checked as `fret run` would."""
    from ..stages import PIPELINES
    try:
        config, origin = load_pipeline_with_origin(path, overrides)
    except FretError as exc:
        return [f"{name} (sub-run {path}): {line}" for line in str(exc).splitlines()]
    return [f"{name} (sub-run {path}): {line}"
            for line in check_pipeline(config, origin, list(PIPELINES[config.pipeline]), depth + 1)]
